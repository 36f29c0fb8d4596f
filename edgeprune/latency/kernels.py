"""The kernels a model runs, as a function of a candidate's widths, and one kernel as a stand-alone ONNX graph.

A *kernel* is one convolution or linear layer with its shapes (the unit nn-Meter predicts latency for):
``Kernel(op, cin, cout, k, stride, pad, dilation, groups, h, w)``, ``h × w`` the input's spatial size (for a
linear layer ``h`` is the number of rows it is applied to, ``w`` 1). Pruning changes only channel counts,
and each conv's input and output channels are affine in the group widths: ``KernelMap`` finds those
coefficients once, by pruning each group alone to its smallest width and reading the layers' shapes, so
the kernels of any candidate are known without pruning the model (0.14 s per MobileNetV2 candidate saved,
and what a training-time pruner needs per channel).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

DW, CONV, GEMM = "dwconv", "conv", "gemm"


@dataclass(frozen=True)
class Kernel:
    """One conv (``conv``, or ``dwconv`` when every channel is its own group) or linear layer (``gemm``).
    Channel counts are the layer's; ``h``, ``w``: the input's spatial size (rows, 1 for a linear layer)."""

    op: str
    cin: int
    cout: int
    k: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    h: int = 1
    w: int = 1

    @property
    def key(self) -> str:
        """A stable text key (the kernel table's)."""
        return (f"{self.op}:{self.cin}x{self.cout}:k{self.k[0]}x{self.k[1]}:s{self.stride[0]}x{self.stride[1]}"
                f":p{self.pad[0]}x{self.pad[1]}:d{self.dilation[0]}x{self.dilation[1]}:g{self.groups}"
                f":{self.h}x{self.w}")

    def with_channels(self, cin: int, cout: int) -> "Kernel":
        """This kernel at other channel counts (a depthwise conv keeps one group per channel)."""
        if self.op == DW:
            return replace(self, cin=cin, cout=cin, groups=cin)
        return replace(self, cin=cin, cout=cout)

    @property
    def macs(self) -> int:
        return self.h * self.w * self.cin * self.cout * self.k[0] * self.k[1] // (self.groups * self.stride[0]
                                                                               * self.stride[1])


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def kernels_of(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Kernel]:
    """Every Conv2d and Linear that runs in ``model`` on one input of ``input_shape`` (C×H×W), by module
    name. A layer that does not run (a dropped block's) is absent."""
    found: dict[str, Kernel] = {}
    hooks = []

    def hook(name):
        def fn(m, args, _out):
            x = args[0]
            if isinstance(m, nn.Conv2d):
                if isinstance(m.padding, str):
                    raise ValueError(f"{name}: padding={m.padding!r} is not supported by the latency predictor")
                dw = m.groups > 1 and m.groups == m.in_channels == m.out_channels
                found[name] = Kernel(DW if dw else CONV, m.in_channels, m.out_channels, _pair(m.kernel_size),
                                     _pair(m.stride), _pair(m.padding), _pair(m.dilation), m.groups,
                                     int(x.shape[-2]), int(x.shape[-1]))
            else:
                found[name] = Kernel(GEMM, m.in_features, m.out_features, h=int(x.numel() // x.shape[-1]))
        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return found


@dataclass(frozen=True)
class Slot:
    """One layer of the model: its unpruned kernel, its input and output channels as affine functions of the
    group widths (``cin = cin_full - Σ mult · (full_g - width_g)`` over ``cin_terms`` of (group, mult)), and
    the removable block it sits in (index into the analysis' blocks; None: it always runs)."""

    name: str
    full: Kernel
    cin_terms: tuple[tuple[int, float], ...]
    cout_terms: tuple[tuple[int, float], ...]
    block: int | None = None

    def channels(self, cut: np.ndarray) -> tuple[int, int]:
        """(cin, cout) given ``cut[g] = full_g - width_g`` per group."""
        cin = self.full.cin - sum(m * cut[g] for g, m in self.cin_terms)
        cout = self.full.cout - sum(m * cut[g] for g, m in self.cout_terms)
        return int(round(cin)), int(round(cout))


@dataclass(frozen=True)
class KernelMap:
    """The slots of one model (see ``Slot``); ``full[g]`` the groups' unpruned widths, ``smallest[g]``
    their smallest allowed widths, ``blocks`` the removable blocks' names (depth pruning)."""

    slots: tuple[Slot, ...]
    full: tuple[int, ...]
    smallest: tuple[int, ...]
    blocks: tuple[str, ...] = ()

    def layers(self, widths) -> list[tuple[Slot, int, int]]:
        """(slot, cin, cout) of every layer that runs in the candidate with these widths (one per group,
        then 0/1 per block: a dropped block's layers do not run)."""
        n = len(self.full)
        drop = [int(v) == 0 for v in widths[n:]]
        cut = np.asarray(self.full, dtype=float) - np.asarray(widths[:n], dtype=float)
        return [(s, *s.channels(cut)) for s in self.slots
                if not (s.block is not None and s.block < len(drop) and drop[s.block])]

    def kernels(self, widths) -> list[Kernel]:
        """The kernels of the candidate with these widths (see ``layers``)."""
        return [s.full.with_channels(cin, cout) for s, cin, cout in self.layers(widths)]

    def channel_range(self, slot: Slot) -> tuple[tuple[int, int], tuple[int, int]]:
        """((cin min, cin max), (cout min, cout max)) over the space: every group at its smallest or full."""
        cut = np.asarray(self.full, dtype=float) - np.asarray(self.smallest, dtype=float)
        lo = slot.channels(cut)
        return (lo[0], slot.full.cin), (lo[1], slot.full.cout)

    def signature(self) -> str:
        """A short hash of the slots (identifies the model's kernel structure in stored fits)."""
        blob = json.dumps([asdict(s) for s in self.slots] + [list(self.full), list(self.smallest),
                                                             list(self.blocks)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def build(cls, model: nn.Module, input_shape: tuple[int, ...], analysis) -> "KernelMap":
        """Probe ``model``: prune each group alone to its smallest width and see which layers' channels move,
        and by how much per channel removed (1 for a plain chain; more where a concat or fused q/k/v
        repeats a group)."""
        from edgeprune.model.prune import prune

        base = kernels_of(model, input_shape)
        full = tuple(g.full for g in analysis.groups)
        smallest = tuple(g.choices[0] for g in analysis.groups)
        cin_terms: dict[str, list] = {n: [] for n in base}
        cout_terms: dict[str, list] = {n: [] for n in base}
        for i, g in enumerate(analysis.groups):
            if smallest[i] == full[i]:
                continue
            widths = list(full) + [1] * len(analysis.blocks)
            widths[i] = smallest[i]
            pruned, _ = prune(model, input_shape, analysis, widths)
            now = kernels_of(pruned, input_shape)
            removed = full[i] - smallest[i]
            for name, k in base.items():
                if name not in now:
                    continue
                if (d := k.cin - now[name].cin) != 0:
                    cin_terms[name].append((i, d / removed))
                if (d := k.cout - now[name].cout) != 0:
                    cout_terms[name].append((i, d / removed))
        slots = []
        for name, k in base.items():
            block = next((j for j, b in enumerate(analysis.blocks) if name.startswith(b + ".")), None)
            slots.append(Slot(name, k, tuple(cin_terms[name]), tuple(cout_terms[name]), block))
        return cls(tuple(slots), full, smallest, tuple(analysis.blocks))


def kernel_onnx(k: Kernel, seed: int = 0) -> tuple[bytes, np.ndarray]:
    """``k`` as a stand-alone ONNX model (the layer, with bias, then ReLU: what ONNX Runtime fuses a
    conv-BN-ReLU into) and one input for it (1×cin×h×w, or h×cin for a linear layer)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    if k.op == GEMM:
        x = rng.standard_normal((k.h, k.cin), dtype=np.float32)
        w = (rng.standard_normal((k.cout, k.cin)) * 0.05).astype(np.float32)
        layer = helper.make_node("Gemm", ["x", "w", "b"], ["y0"], transB=1)
        out_shape = [k.h, k.cout]
    else:
        x = rng.standard_normal((1, k.cin, k.h, k.w), dtype=np.float32)
        w = (rng.standard_normal((k.cout, k.cin // k.groups, *k.k)) * 0.05).astype(np.float32)
        layer = helper.make_node("Conv", ["x", "w", "b"], ["y0"], kernel_shape=list(k.k), strides=list(k.stride),
                                 pads=[k.pad[0], k.pad[1], k.pad[0], k.pad[1]], dilations=list(k.dilation),
                                 group=k.groups)
        oh = (k.h + 2 * k.pad[0] - k.dilation[0] * (k.k[0] - 1) - 1) // k.stride[0] + 1
        ow = (k.w + 2 * k.pad[1] - k.dilation[1] * (k.k[1] - 1) - 1) // k.stride[1] + 1
        out_shape = [1, k.cout, oh, ow]
    b = np.zeros(k.cout, dtype=np.float32)
    graph = helper.make_graph(
        [layer, helper.make_node("Relu", ["y0"], ["y"])], "kernel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), x


def empty_onnx() -> tuple[bytes, np.ndarray]:
    """The smallest model (a ReLU of one number): its time is a run's fixed cost, subtracted from kernels'."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "empty",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), np.zeros((1, 1), dtype=np.float32)
