"""Safe loading of user models and edgeprune checkpoints.

A ``.pt`` file may be:
  (a) an edgeprune checkpoint (a dict with ``format == "edgeprune-checkpoint"``): architecture name,
      kwargs, input shape, state dict and optional pruning history, loaded with ``weights_only=True``;
  (b) a whole pickled ``nn.Module``: unpickling runs arbitrary code, so only with ``trust_code=True``;
  (c) a bare state dict, together with an architecture name.
"""

from __future__ import annotations

import importlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgeprune.errors import InputShapeError, ModelLoadError, UnknownArchitectureError
from edgeprune.model.zoo import ZOO
from edgeprune.verify import Verdict, compare

FORMAT = "edgeprune-checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A model ready for pruning. ``arch`` is None for a trusted whole-module pickle (no rebuild recipe)."""

    model: nn.Module
    name: str
    input_shape: tuple[int, ...]  # C×H×W, batch excluded
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    pruning_history: list | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_arch(arch: str) -> Callable[..., nn.Module]:
    """A zoo name, or ``package.module:factory`` (imports that module: the user named it)."""
    if arch in ZOO:
        return ZOO[arch]
    if ":" in arch:
        mod_name, _, fn_name = arch.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as e:
            raise UnknownArchitectureError(f"cannot import architecture {arch!r}: {e}") from None
        if not callable(fn):
            raise UnknownArchitectureError(f"architecture {arch!r} is not callable")
        return fn
    raise UnknownArchitectureError(
        f"unknown architecture {arch!r}; built-in: {', '.join(sorted(ZOO))}, or give package.module:factory")


def build(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = resolve_arch(arch)(**kwargs)
    except UnknownArchitectureError:
        raise
    except TypeError as e:
        raise ModelLoadError(f"cannot build {arch!r} with {kwargs}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"architecture {arch!r} returned {type(model).__name__}, not an nn.Module")
    return model


def _torch_load(path: Path, weights_only: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as e:
        if weights_only:
            raise ModelLoadError(
                f"{path} holds pickled code objects, not just weights ({str(e).splitlines()[0][:160]}); "
                "loading it would run code from the file. If you trust it, pass --trust-model-code; "
                "better, save an edgeprune checkpoint (tools/train.py) or a state dict with --arch") from None
        raise ModelLoadError(f"{path} is not a readable PyTorch file: {e}") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many kinds on damaged files
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ModelLoadError(f"{path} is corrupt or not a PyTorch file ({first})") from None


def load_model(path: str | Path, *, arch: str | None = None, arch_kwargs: dict[str, Any] | None = None,
               input_shape: tuple[int, ...] | None = None, trust_code: bool = False) -> LoadedModel:
    """Load a model file safely; see the module docstring for the accepted forms.

    ``input_shape`` (C×H×W) overrides the checkpoint's; it is checked with one forward pass.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file {path} is empty")
    obj = _torch_load(path, weights_only=not trust_code)
    name = path.stem
    if isinstance(obj, nn.Module):
        loaded = LoadedModel(obj, name, tuple(input_shape or (3, 32, 32)), meta={"source": "pickled-module"})
    elif isinstance(obj, dict) and obj.get("format") == FORMAT:
        loaded = _from_checkpoint(obj, name)
        if input_shape:
            loaded.input_shape = tuple(input_shape)
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if not arch:
            raise ModelLoadError(f"{path} is a bare state dict: name its architecture with --arch")
        model = build(arch, dict(arch_kwargs or {}))
        _load_state(model, obj, path)
        loaded = LoadedModel(model, name, tuple(input_shape or (3, 32, 32)), arch, dict(arch_kwargs or {}),
                             meta={"source": "state-dict"})
    else:
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a model, a state dict or an edgeprune checkpoint")
    loaded.model.eval()
    check_input_shape(loaded.model, loaded.input_shape)
    return loaded


def _from_checkpoint(ck: dict, name: str) -> LoadedModel:
    for key in ("arch", "state_dict", "input_shape"):
        if key not in ck:
            raise ModelLoadError(f"edgeprune checkpoint is missing {key!r}")
    if int(ck.get("version", 0)) > FORMAT_VERSION:
        raise ModelLoadError(f"checkpoint format version {ck['version']} is newer than this edgeprune ({FORMAT_VERSION})")
    kwargs = dict(ck.get("arch_kwargs") or {})
    model = build(ck["arch"], kwargs)
    history = ck.get("pruning_history")
    if history:
        from edgeprune.model.prune import replay_history

        replay_history(model, history, tuple(ck["input_shape"]))
    _load_state(model, ck["state_dict"], name)
    return LoadedModel(model, ck.get("name", name), tuple(ck["input_shape"]), ck["arch"], kwargs, history,
                       meta=dict(ck.get("meta") or {}, source="edgeprune-checkpoint"))


def _load_state(model: nn.Module, state: dict, where) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"weights in {where} do not fit the architecture: {str(e).splitlines()[0][:300]}") from None


def check_input_shape(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Run one forward pass on zeros of 1×``input_shape``; returns the number of output classes."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *input_shape))
    except RuntimeError as e:
        raise InputShapeError(f"model does not accept input shape {tuple(input_shape)}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise InputShapeError(f"model output for input {tuple(input_shape)} is not N×classes logits")
    return int(out.shape[1])


def save_checkpoint(path: str | Path, *, model: nn.Module, arch: str, arch_kwargs: dict[str, Any],
                    input_shape: tuple[int, ...], pruning_history: list | None = None,
                    meta: dict[str, Any] | None = None, name: str | None = None) -> None:
    """Write a checkpoint that loads with ``weights_only=True`` (tensors, str, numbers, lists, dicts)."""
    ck = {"format": FORMAT, "version": FORMAT_VERSION, "name": name or Path(path).stem, "arch": arch,
          "arch_kwargs": dict(arch_kwargs), "input_shape": list(input_shape),
          "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
          "pruning_history": pruning_history or [],
          # A JSON round trip keeps only plain types: torch.__version__, for one, would pickle as a class.
          "meta": json.loads(json.dumps(meta or {}, default=str))}
    torch.save(ck, path)


def verify_checkpoint(path: str | Path, model: nn.Module, inputs: torch.Tensor) -> Verdict:
    """Reload the checkpoint written at ``path`` the way users will (``load_model(path)``: weights only,
    architecture rebuilt, pruning history replayed), run it and ``model`` on ``inputs`` (N×C×H×W, eval mode,
    no grad) and compare the logits with ``edgeprune.verify.compare``'s one tolerance.

    Returns an ``edgeprune.verify.Verdict``; never raises for a checkpoint that cannot be rebuilt or run:
    the verdict is then not ok and its ``method`` says why.
    """
    method = "model.pt reloaded vs the exported model"
    samples = int(len(inputs))
    try:
        reloaded = load_model(path).model.to(inputs.device)
    except Exception as e:  # noqa: BLE001 - any failure to rebuild is a failed verification, said in one line
        why = " ".join(str(e).split())[:300] or type(e).__name__
        return Verdict(False, float("inf"), samples, method=f"{method}: the checkpoint cannot be reloaded ({why})")
    was_training = model.training
    try:
        with torch.no_grad():
            ref = model.eval()(inputs)
            got = reloaded.eval()(inputs)
    except Exception as e:  # noqa: BLE001
        why = " ".join(str(e).split())[:300] or type(e).__name__
        return Verdict(False, float("inf"), samples, method=f"{method}: running the models failed ({why})")
    finally:
        model.train(was_training)
    return compare(ref.detach().cpu().numpy(), got.detach().cpu().numpy(), method=method)
