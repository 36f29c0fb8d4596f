"""Depth pruning: residual blocks with an identity shortcut, found in the graph and dropped whole.

Width pruning cannot remove a node: on ONNX Runtime each node costs a fixed few microseconds whatever its
width (ResNet-56 has ~0.36 ms of it, docs/benchmarks.md). Dropping a block ``y = act(x + f(x))`` whose
shortcut is the identity replaces it by ``y = x`` and removes every node of ``f``: the same replacement
stochastic depth trains for (Huang et al., 2016). For a post-activation block (``act`` = ReLU after the
add, as in ResNet v1) it is exact in form, because its input is itself a ReLU output (``relu(x) = x``).

A module is a *removable block* when, traced with ``torch.fx`` (its sub-modules kept as calls), its output is an addition (``+``, ``+=``,
``torch.add``) of its own input and something computed from it — or a chain of them, as in a transformer
block (``x + attn(x)``, then ``+ mlp(·)``) — optionally followed by element-wise activations, and one forward on an input of the model's shape shows the block's output has its input's
shape. A block with a projection or strided shortcut (the first of a ResNet stage) is not one: its shortcut
is not the input itself; neither is a stage of blocks (its output is a call, not an addition). Blocks
inside a removable block are not searched separately (the outer one is); a container (``nn.Sequential``)
holding a single block is not a block itself (the block is named).
A module that fx cannot trace (data-dependent control flow) is simply not a candidate.

Dropped blocks travel in the pruning history as ``["block:NAME", False, []]`` entries, after the channel
entries, so a ``model.pt`` rebuilds by replaying them (``replay_history``).
"""

from __future__ import annotations

import operator

import torch
from torch import nn

BLOCK = "block:"  # prefix of a block's name as a search dimension and in the pruning history

_ADDS = {operator.add, operator.iadd, torch.add}
_ACT_FUNCS = {torch.relu, torch.relu_, nn.functional.relu, nn.functional.relu6, nn.functional.gelu,
              nn.functional.silu, nn.functional.hardswish}
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Identity, nn.Dropout)
_PASS_MODULES = (nn.Identity, nn.Dropout)  # on an add's operand: the shortcut itself (timm's nn.Identity)


def _is_add(node) -> bool:
    return ((node.op == "call_function" and node.target in _ADDS)
            or (node.op == "call_method" and node.target in ("add", "add_")))


def _is_act(node, gm) -> bool:
    if node.op == "call_function":
        return node.target in _ACT_FUNCS
    if node.op == "call_method":
        return node.target in ("relu", "relu_")
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _ACT_MODULES)
    return False


def is_identity_residual(module: nn.Module) -> bool:
    """Whether ``module``'s traced output is ``act(input + g(input))`` (see the module docstring)."""
    import torch.fx as fx

    class ChildrenAsLeaves(fx.Tracer):
        # Only the block's own dataflow matters: its sub-modules stay calls (faster, and an attention layer
        # that unpacks ``x.shape`` does not stop the trace of the block around it).
        def is_leaf_module(self, m, qualname):
            return True

    try:
        graph = ChildrenAsLeaves().trace(module)
        gm = fx.GraphModule(module, graph)
    except Exception:  # noqa: BLE001 - untraceable control flow: not a candidate
        return False
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    outputs = [n for n in gm.graph.nodes if n.op == "output"]
    # The block's input is its first argument (others, e.g. timm's ``attn_mask=None``, keep their defaults:
    # the blocks searched are called with one tensor, see ``removable_blocks``).
    if not inputs or len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        return False
    x = inputs[0]

    def through(node, ops):  # strip nodes that pass their first argument on (activations, identities)
        while isinstance(node, fx.Node) and ops(node) and node.args and isinstance(node.args[0], fx.Node):
            node = node.args[0]
        return node

    def passes(node):
        if node.op != "call_module":
            return False
        m = gm.get_submodule(node.target)
        return isinstance(m, _PASS_MODULES) or (isinstance(m, nn.Sequential) and len(m) == 0)

    def stream(node, adds: int) -> bool:
        """Whether ``node`` is the input carried through ≥ 1 residual additions (a transformer block has two:
        x + attn(x), then + mlp(·))."""
        node = through(node, passes)
        if node is x:
            return adds > 0
        if not _is_add(node) or len(node.args) < 2:
            return False
        a, b = (through(v, passes) for v in node.args[:2])
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or a is b:
            return False
        return stream(a, adds + 1) != stream(b, adds + 1)

    return stream(through(outputs[0].args[0], lambda n: _is_act(n, gm)), 0)


def removable_blocks(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, ...]:
    """Names of ``model``'s removable residual blocks, in module order (outer blocks only)."""
    shapes: dict[str, tuple] = {}
    hooks = []
    names = {m: n for n, m in model.named_modules()}
    for m, n in names.items():
        if n and any(True for _ in m.parameters()):
            def hook(mod, args, out, n=n):
                if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                    shapes.setdefault(n, (tuple(args[0].shape), tuple(out.shape)))
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    found: list[str] = []
    for n, m in model.named_modules():
        if not n or n not in shapes or shapes[n][0] != shapes[n][1]:
            continue
        if isinstance(m, (nn.Sequential, nn.ModuleList)):  # a container of one block: name the block itself
            continue
        if any(n.startswith(f + ".") for f in found):
            continue
        if is_identity_residual(m):
            found.append(n)
    return tuple(found)


def block_entries(names) -> list:
    """Pruning-history entries that drop the named blocks (after the channel entries)."""
    return [[BLOCK + n, False, []] for n in names]


def dropped_blocks(history: list) -> list[str]:
    """The blocks a pruning history drops, by module name."""
    return [str(n)[len(BLOCK):] for n, _, _ in history if str(n).startswith(BLOCK)]


def drop_blocks(model: nn.Module, names) -> nn.Module:
    """Replace each named block of ``model`` by ``nn.Identity`` in place; returns ``model``."""
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, (nn.Sequential, nn.ModuleList)) and attr.isdigit():
            parent[int(attr)] = nn.Identity()
        else:
            setattr(parent, attr, nn.Identity())
    return model
