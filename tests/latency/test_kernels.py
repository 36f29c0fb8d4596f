"""The kernel map: each layer's channels as a function of the candidate's widths, without pruning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune.latency.backends.onnxruntime import ort_outputs
from edgeprune.latency.kernels import CONV, DW, GEMM, Kernel, KernelMap, kernel_onnx, kernels_of
from edgeprune.model.depth import removable_blocks
from edgeprune.model.prune import analyse, prune
from edgeprune.model.zoo import mobilenet_v2
from tests.conftest import tiny_resnet

SHAPE = (3, 32, 32)


@pytest.mark.parametrize("build", [tiny_resnet, lambda: mobilenet_v2(width_mult=0.5)], ids=["resnet8", "mobilenetv2"])
def test_the_map_gives_the_pruned_models_layers_for_any_candidate(build):
    model = build().eval()
    analysis = analyse(model, SHAPE, round_to=8)
    kmap = KernelMap.build(model, SHAPE, analysis)
    assert {s.full.op for s in kmap.slots} >= {CONV, GEMM}
    rng = np.random.default_rng(0)
    for _ in range(4):
        widths = [g.width(rng.uniform(0, 1)) for g in analysis.groups]
        pruned, _ = prune(model, SHAPE, analysis, widths)
        assert [k.key for k in kmap.kernels(widths)] == [k.key for k in kernels_of(pruned, SHAPE).values()]


def test_depthwise_layers_keep_one_group_per_channel():
    model = mobilenet_v2(width_mult=0.5).eval()
    analysis = analyse(model, SHAPE, round_to=8)
    kmap = KernelMap.build(model, SHAPE, analysis)
    dws = [k for k in kmap.kernels(kmap.smallest) if k.op == DW]
    assert dws and all(k.cin == k.cout == k.groups for k in dws)


def test_a_dropped_block_drops_its_layers():
    model = tiny_resnet()
    from dataclasses import replace

    analysis = replace(analyse(model, SHAPE, round_to=8), blocks=removable_blocks(model, SHAPE))
    assert analysis.blocks
    kmap = KernelMap.build(model, SHAPE, analysis)
    full = [g.full for g in analysis.groups]
    kept, dropped = kmap.kernels(full + [1] * len(analysis.blocks)), kmap.kernels(full + [0] * len(analysis.blocks))
    pruned, _ = prune(model, SHAPE, analysis, full + [0] * len(analysis.blocks))
    assert len(dropped) < len(kept)
    assert [k.key for k in dropped] == [k.key for k in kernels_of(pruned, SHAPE).values()]


@pytest.mark.parametrize("k", [Kernel(CONV, 8, 16, (3, 3), (2, 2), (1, 1), (1, 1), 1, 16, 16),
                               Kernel(DW, 24, 24, (3, 3), (1, 1), (1, 1), (1, 1), 24, 8, 8),
                               Kernel(GEMM, 32, 10, h=1)], ids=["conv", "dwconv", "gemm"])
def test_a_kernel_graph_computes_its_layer(k):
    """The stand-alone graph is the layer (with ReLU): same output shape as torch's layer on the input."""
    onnx_bytes, x = kernel_onnx(k)
    y = ort_outputs(onnx_bytes, x) if k.op != GEMM else None
    if k.op == GEMM:
        import onnxruntime as ort

        sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        y = sess.run(None, {"x": x})[0]
        assert y.shape == (k.h, k.cout)
    else:
        conv = torch.nn.Conv2d(k.cin, k.cout, k.k, k.stride, k.pad, k.dilation, k.groups)
        assert y.shape == tuple(conv(torch.from_numpy(x)).shape)
    assert (y >= 0).all()  # the ReLU
