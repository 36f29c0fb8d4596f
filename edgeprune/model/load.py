"""Safe loading of user models and edgeprune checkpoints.

A ``.pt`` file may be:
  (a) an edgeprune checkpoint (a dict with ``format == "edgeprune-checkpoint"``): architecture name,
      kwargs, input shape, state dict and optional pruning history, loaded with ``weights_only=True``;
      or, for a model that came in as a whole pickled module (no rebuild recipe), the same dict with the
      pruned module pickled in its ``"module"`` entry instead of ``arch``/``state_dict`` (needs
      ``trust_code=True``, like its input did);
  (b) a whole pickled ``nn.Module``: unpickling runs arbitrary code, so only with ``trust_code=True``;
  (c) a bare state dict, together with an architecture name.

An architecture (``--arch``) is resolved and built by ``edgeprune.model.arch``.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.errors import InputShapeError, ModelLoadError
from edgeprune.model.arch import arch_recipe, build
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
    except (ModuleNotFoundError, AttributeError) as e:
        if weights_only:
            first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise ModelLoadError(f"{path} is corrupt or not a PyTorch file ({first})") from None
        raise ModelLoadError(f"{path}: the pickled model needs {_missing_class(e)}, which cannot be imported: run "
                             "from the folder that holds it or put it on PYTHONPATH, or save a state dict and use "
                             "--arch path/to/file.py:factory") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many kinds on damaged files
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ModelLoadError(f"{path} is corrupt or not a PyTorch file ({first})") from None


def _missing_class(e: Exception) -> str:
    """'module X' or 'class C of module M', from the error unpickling raised."""
    if isinstance(e, ModuleNotFoundError) and e.name:
        return f"module {e.name!r}"
    import re

    m = re.search(r"attribute '([^']+)' on <module '([^']+)'", str(e))
    if m:
        return f"class {m.group(1)!r} of module {m.group(2)!r}"
    return f"a class or module that is missing ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})"


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
    elif isinstance(obj, dict) and obj.get("format") == FORMAT and isinstance(obj.get("module"), nn.Module):
        # model.pt of a run whose input was a pickled module: the pruned module itself, plus the metadata.
        loaded = LoadedModel(obj["module"], obj.get("name", name), tuple(input_shape or obj.get("input_shape") or (3, 32, 32)),
                             pruning_history=obj.get("pruning_history"),
                             meta=dict(obj.get("meta") or {}, source="pickled-module-checkpoint"))
    elif isinstance(obj, dict) and obj.get("format") == FORMAT:
        loaded = _from_checkpoint(obj, name)
        if input_shape:
            loaded.input_shape = tuple(input_shape)
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if not arch:
            raise ModelLoadError(f"{path} is a bare state dict: name its architecture with --arch")
        recipe, kwargs = arch_recipe(arch, arch_kwargs)
        model = build(recipe, kwargs)
        _load_state(model, obj, path, arch=arch)
        loaded = LoadedModel(model, name, tuple(input_shape or (3, 32, 32)), recipe, kwargs,
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
    _load_state(model, ck["state_dict"], name, arch=ck["arch"])
    return LoadedModel(model, ck.get("name", name), tuple(ck["input_shape"]), ck["arch"], kwargs, history,
                       meta=dict(ck.get("meta") or {}, source="edgeprune-checkpoint"))


SHOW = 5  # keys listed per kind in a weights mismatch


def _load_state(model: nn.Module, state: dict, where, *, arch: str | None = None) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = mismatch_report(model, state)
        if detail is None:  # keys and shapes agree: the model refused for its own reasons
            detail = str(e).splitlines()[0][:300]
        what = f" {arch!r}" if arch else ""
        raise ModelLoadError(f"weights in {where} do not fit the architecture{what}:"
                             f"{'' if detail.startswith(chr(10)) else ' '}{detail}") from None


def _shape(t) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def _listed(keys: list[str]) -> str:
    more = f", … {len(keys) - SHOW} more" if len(keys) > SHOW else ""
    return ", ".join(keys[:SHOW]) + more


def mismatch_report(model: nn.Module, state: dict) -> str | None:
    """Why ``state`` does not load into ``model``, computed from their keys and shapes: up to ``SHOW`` missing,
    unexpected and mis-shaped keys each, with counts, and a hint when only the classifier's number of
    outputs differs. None when keys and shapes all agree."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [k for k in own if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or misshaped):
        return None
    lines = []
    if missing:
        lines.append(f"{len(missing)} missing (in the model, not in the weights): {_listed(missing)}")
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected (in the weights, not in the model): {_listed(unexpected)}")
    if misshaped:
        shown = [f"{k}: weights {_shape(state[k])} vs model {_shape(own[k])}" for k in misshaped]
        lines.append(f"{len(misshaped)} mis-shaped: " + "; ".join(shown[:SHOW])
                     + (f"; … {len(misshaped) - SHOW} more" if len(misshaped) > SHOW else ""))
    n = _classifier_mismatch(model, state, missing, unexpected, misshaped)
    if n is not None:
        lines.append(f"only the classifier's number of outputs differs (the weights have {n}): "
                     f"pass --arch-kwargs num_classes={n}")
    return "\n  " + "\n  ".join(lines)


def _classifier_mismatch(model, state, missing, unexpected, misshaped) -> int | None:
    """The weights' number of classes when the only mismatch is the last Linear layer's out_features."""
    if missing or unexpected or not misshaped:
        return None
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    name, _ = linears[-1]
    prefix = f"{name}." if name else ""
    if not set(misshaped) <= {f"{prefix}weight", f"{prefix}bias"}:
        return None
    own = model.state_dict()
    outs = set()
    for k in misshaped:
        got, want = tuple(state[k].shape), tuple(own[k].shape)
        if len(got) != len(want) or got[1:] != want[1:]:
            return None
        outs.add(got[0])
    return outs.pop() if len(outs) == 1 else None


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


PT_CHECKPOINT = "edgeprune-checkpoint"  # model.pt formats, as the manifest names them
PT_PICKLED = "pickled-module"


def save_checkpoint(path: str | Path, *, model: nn.Module, arch: str | None, arch_kwargs: dict[str, Any],
                    input_shape: tuple[int, ...], pruning_history: list | None = None,
                    meta: dict[str, Any] | None = None, name: str | None = None) -> str:
    """Write a checkpoint; returns its format, ``PT_CHECKPOINT`` or ``PT_PICKLED``.

    With an architecture, the checkpoint loads with ``weights_only=True`` (tensors, str, numbers, lists,
    dicts). With ``arch=None`` (the model came in as a whole pickled module: no recipe rebuilds it) the
    module itself is pickled in the ``"module"`` entry beside the same metadata; loading it runs code, so
    it needs ``load_model(path, trust_code=True)`` (``--trust-model-code``), as its input did."""
    ck = {"format": FORMAT, "version": FORMAT_VERSION, "name": name or Path(path).stem, "arch": arch,
          "arch_kwargs": dict(arch_kwargs or {}), "input_shape": list(input_shape),
          "pruning_history": pruning_history or [],
          # A JSON round trip keeps only plain types: torch.__version__, for one, would pickle as a class.
          "meta": json.loads(json.dumps(meta or {}, default=str))}
    if arch is None:
        ck["module"] = model
        ck["meta"]["model_pt_format"] = PT_PICKLED
        torch.save(ck, path)
        return PT_PICKLED
    ck["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(ck, path)
    return PT_CHECKPOINT


def verify_checkpoint(path: str | Path, model: nn.Module, inputs: torch.Tensor, *, trust_code: bool = False) -> Verdict:
    """Reload the checkpoint written at ``path`` the way users will (``load_model(path)``: weights only,
    architecture rebuilt, pruning history replayed; ``trust_code=True`` for a pickled module), run it and ``model`` on ``inputs`` (N×C×H×W, eval mode,
    no grad) and compare the logits with ``edgeprune.verify.compare``'s one tolerance.

    Returns an ``edgeprune.verify.Verdict``; never raises for a checkpoint that cannot be rebuilt or run:
    the verdict is then not ok and its ``method`` says why.
    """
    method = "model.pt reloaded vs the exported model"
    samples = int(len(inputs))
    try:
        reloaded = load_model(path, trust_code=trust_code).model.to(inputs.device)
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
