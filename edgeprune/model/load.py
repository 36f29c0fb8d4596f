"""Safe loading of user models and edgeprune checkpoints.

A ``.pt`` file may be:
  (a) an edgeprune checkpoint (a dict with ``format == "edgeprune-checkpoint"``): architecture name,
      kwargs, input shape, state dict and optional pruning history, loaded with ``weights_only=True``;
      or, for a model that came in as a whole pickled module (no rebuild recipe), the same dict with the
      pruned module pickled in its ``"module"`` entry instead of ``arch``/``state_dict`` (needs
      ``trust_code=True``, like its input did);
  (b) a whole pickled ``nn.Module``: unpickling runs arbitrary code, so only with ``trust_code=True``;
  (c) a bare state dict, together with an architecture name.

An architecture (``--arch``) is one of
  - a zoo name (``resnet20``);
  - ``package.module:factory`` (imported: the user named it), e.g. ``torchvision.models:resnet18``;
  - ``path/to/file.py:factory``: the user's own file, imported by path (no PYTHONPATH needed);
  - ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, **kwargs)`` (never downloads);
each optionally with literal keyword arguments inline: ``mymodels:mynet(width=16, num_classes=10)``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import pickle
import sys
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

VISION_INSTALL = "python -m pip install -c constraints-vision.txt -e '.[vision]'"
VISION_PACKAGES = ("torchvision", "timm")


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


def parse_arch(arch: str) -> tuple[str, dict[str, Any]]:
    """Split ``factory(k=v, ...)`` into the architecture and its inline keyword arguments.

    The arguments are parsed with ``ast`` and must be literals (numbers, strings, tuples, lists, dicts,
    True/False/None): nothing is evaluated. ``mymodels:mynet(width=16)`` → ``("mymodels:mynet", {"width": 16})``.
    """
    arch = arch.strip()
    if not arch.endswith(")") or "(" not in arch:
        return arch, {}
    head, args = arch[: arch.index("(")].strip(), arch[arch.index("("):]
    try:
        call = ast.parse(f"f{args}", mode="eval").body
    except SyntaxError:
        raise UnknownArchitectureError(f"architecture {arch!r}: cannot parse the arguments {args}; write "
                                       "factory(name=value, ...) with literal values") from None
    if not isinstance(call, ast.Call) or call.args:
        raise UnknownArchitectureError(f"architecture {arch!r}: give the arguments by name, factory(name=value, ...)")
    kwargs: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise UnknownArchitectureError(f"architecture {arch!r}: '**' is not allowed; give each argument by name")
        try:
            kwargs[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise UnknownArchitectureError(
                f"architecture {arch!r}: argument {kw.arg}={ast.unparse(kw.value)} is not a literal (numbers, "
                "quoted strings, tuples, lists, dicts, True/False/None; nothing is evaluated)") from None
    return head, kwargs


def _missing_vision(e: ImportError, arch: str) -> UnknownArchitectureError | None:
    """The install hint when ``e`` is torchvision or timm not being importable."""
    top = (getattr(e, "name", None) or "").split(".")[0]
    if top in VISION_PACKAGES:
        return UnknownArchitectureError(f"architecture {arch!r} needs {top}, which is not installed here: install "
                                        f"the vision extra: {VISION_INSTALL}")
    return None


def _timm_factory(name: str, arch: str) -> Callable[..., nn.Module]:
    try:
        import timm
    except ImportError as e:
        raise _missing_vision(e, arch) or UnknownArchitectureError(
            f"architecture {arch!r}: timm does not import ({e}); install the vision extra: {VISION_INSTALL}") from None
    if hasattr(timm, "is_model") and not timm.is_model(name):
        raise UnknownArchitectureError(f"architecture {arch!r}: timm has no model {name!r} "
                                       "(timm.list_models('pattern*') lists them)")

    def create(**kwargs) -> nn.Module:
        if kwargs.pop("pretrained", False):
            raise ModelLoadError(f"architecture {arch!r}: edgeprune never downloads weights (pretrained=True); "
                                 "save the trained weights as a state dict and pass it as MODEL")
        return timm.create_model(name, pretrained=False, **kwargs)

    return create


def _is_file_arch(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or "\\" in module_part


def _import_file(module_part: str, arch: str):
    """Import the user's own ``file.py`` by path, once, under a stable module name unique to its absolute
    path; its folder is appended to ``sys.path`` so that it can import the files beside it."""
    path = Path(module_part).expanduser()
    if not path.is_file():
        raise UnknownArchitectureError(f"architecture {arch!r}: file {path} does not exist"
                                       + ("" if path.is_absolute() else f" (relative to {Path.cwd()})"))
    path = path.resolve()
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    mod_name = f"edgeprune_user_{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise UnknownArchitectureError(f"architecture {arch!r}: {path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        del sys.modules[mod_name]
        raise _missing_vision(e, arch) or UnknownArchitectureError(
            f"architecture {arch!r}: importing {path} failed: {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's file raised while importing: one line naming it
        del sys.modules[mod_name]
        raise UnknownArchitectureError(f"architecture {arch!r}: importing {path} failed: "
                                       f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
    return module


def resolve_arch(arch: str) -> Callable[..., nn.Module]:
    """The factory of a zoo name, ``package.module:factory`` (imports that module: the user named it),
    ``path/to/file.py:factory`` (imports that file) or ``timm:NAME``. Inline arguments are ignored here:
    ``build`` applies them."""
    arch, _ = parse_arch(arch)
    if arch in ZOO:
        return ZOO[arch]
    if ":" in arch:
        mod_name, _, fn_name = arch.rpartition(":")
        if mod_name == "timm":
            return _timm_factory(fn_name, arch)
        if _is_file_arch(mod_name):
            module = _import_file(mod_name, arch)
            if not hasattr(module, fn_name):
                public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
                raise UnknownArchitectureError(f"architecture {arch!r}: {mod_name} has no {fn_name!r} "
                                               f"(it defines: {', '.join(public[:12]) or 'nothing callable'})")
            fn = getattr(module, fn_name)
        else:
            try:
                fn = getattr(importlib.import_module(mod_name), fn_name)
            except ImportError as e:
                raise _missing_vision(e, arch) or UnknownArchitectureError(
                    f"cannot import architecture {arch!r}: {e}") from None
            except AttributeError as e:
                raise UnknownArchitectureError(f"cannot import architecture {arch!r}: {e}") from None
        if not callable(fn):
            raise UnknownArchitectureError(f"architecture {arch!r} is not callable")
        return fn
    raise UnknownArchitectureError(
        f"unknown architecture {arch!r}; built-in: {', '.join(sorted(ZOO))}, or give package.module:factory, "
        "path/to/file.py:factory or timm:NAME")


def arch_recipe(arch: str, kwargs: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The architecture without inline arguments and the merged keyword arguments (``kwargs`` win over the
    inline ones). A file architecture is recorded with its absolute path, so a checkpoint rebuilds from
    any folder."""
    base, inline = parse_arch(arch)
    mod_name, sep, fn_name = base.rpartition(":")
    if sep and mod_name != "timm" and _is_file_arch(mod_name) and Path(mod_name).expanduser().is_file():
        base = f"{Path(mod_name).expanduser().resolve()}:{fn_name}"
    return base, {**inline, **dict(kwargs or {})}


def build(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    _, inline = parse_arch(arch)
    kwargs = {**inline, **dict(kwargs or {})}
    try:
        model = resolve_arch(arch)(**kwargs)
    except (UnknownArchitectureError, ModelLoadError):
        raise
    except TypeError as e:
        raise ModelLoadError(f"cannot build {arch!r} with {kwargs}: {e}") from None
    except ImportError as e:
        raise _missing_vision(e, arch) or ModelLoadError(f"cannot build {arch!r} with {kwargs}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a user's factory may raise anything: one line naming it
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise ModelLoadError(f"cannot build {arch!r} with {kwargs}: {type(e).__name__}: {first}") from None
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
