"""Attention modules under channel pruning: which q/k/v projections are searched (fused ``qkv`` with
``num_heads``: the head dimension), which are kept whole (separate projections split into heads), and the
attributes to update after pruning (``head_dim``, ``attn_dim``, torchvision ViT's ``hidden_dim``)."""

from __future__ import annotations

from torch import nn

_QKV_NAMES = {"qkv", "qk", "kv", "q", "k", "v", "q_proj", "k_proj", "v_proj", "qkv_proj", "in_proj", "to_qkv",
              "query", "key", "value", "wq", "wk", "wv", "to_q", "to_k", "to_v", "to_kv"}


def fused_qkv(model: nn.Module) -> dict[nn.Module, nn.Module]:
    """{qkv Linear: its attention module} for attention modules with ``num_heads`` and one fused ``qkv``
    projection (timm's ViT/DeiT/Swin blocks…). Their head dimension is searched: the same positions are
    removed from q, k and v of every head (Torch-Pruning couples the three through the unbind), and
    ``sync_attention`` updates ``head_dim``/``attn_dim`` afterwards."""
    out = {}
    for m in model.modules():
        qkv = getattr(m, "qkv", None)
        heads = getattr(m, "num_heads", None)
        if (isinstance(qkv, nn.Linear) and isinstance(heads, int) and heads > 0
                and qkv.out_features % (3 * heads) == 0):
            out[qkv] = m
    return out


def sync_attention(model: nn.Module) -> nn.Module:
    """After pruning (or replaying a pruning history): set ``head_dim`` and ``attn_dim`` of fused-qkv attention
    modules from their pruned ``qkv`` (timm reshapes with them), and torchvision ViT's ``hidden_dim`` from its
    patch projection. In place; returns ``model``."""
    for m in model.modules():
        # torchvision's VisionTransformer reshapes patches with a width stored at build time.
        conv = getattr(m, "conv_proj", None)
        if isinstance(conv, nn.Conv2d) and isinstance(getattr(m, "hidden_dim", None), int):
            m.hidden_dim = conv.out_channels
    for qkv, m in fused_qkv(model).items():
        head_dim = qkv.out_features // (3 * m.num_heads)
        if isinstance(getattr(m, "head_dim", None), int):
            m.head_dim = head_dim
        if isinstance(getattr(m, "attn_dim", None), int):
            m.attn_dim = head_dim * m.num_heads
    return model


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, why) of the layers whose outputs are reshaped into attention heads in a way edgeprune
    does not search (separate q/k/v projections): kept whole, since pruning them would break
    ``num_heads × head_dim``. Fused qkv projections are searched instead (``fused_qkv``), and an
    ``nn.MultiheadAttention``'s embedding width with the same positions removed from every head."""
    fused = fused_qkv(model)
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            continue  # Torch-Pruning cuts its embedding width; _parts keeps it a multiple of num_heads
        if hasattr(m, "num_heads"):
            for cname, c in m.named_children():
                if (isinstance(c, (nn.Linear, nn.Conv1d, nn.Conv2d)) and cname.lower() in _QKV_NAMES
                        and c not in fused):
                    out.append((f"{name}.{cname}" if name else cname, c, "attention q/k/v projection (split into heads)"))
    return out
