"""Architectures: from a name to a built ``nn.Module``.

An architecture (``--arch``) is one of
  - a zoo name (``resnet20``);
  - ``package.module:factory`` (imported: the user named it), e.g. ``torchvision.models:resnet18``;
  - ``path/to/file.py:factory``: the user's own file, imported by path (no PYTHONPATH needed);
  - ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, **kwargs)`` (never downloads);
each optionally with literal keyword arguments inline: ``mymodels:mynet(width=16, num_classes=10)``.
A missing torchvision or timm is a clear error naming the vision extra's install command.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from torch import nn

from edgeprune.errors import ModelLoadError, UnknownArchitectureError
from edgeprune.model.zoo import ZOO

VISION_INSTALL = "python -m pip install -c constraints-vision.txt -e '.[vision]'"
VISION_PACKAGES = ("torchvision", "timm")


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
