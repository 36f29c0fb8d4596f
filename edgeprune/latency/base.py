"""The latency-backend interface and its registry.

A new backend is one module: put it in ``edgeprune/latency/backends/`` (every module there is imported by
discovery) or ship it in a plug-in package that declares a ``edgeprune.latency_backends`` entry point (the
value is the module to import, or a factory). The module calls ``register(name)`` on a factory that takes
the target profile (or None) and returns a ``LatencyBackend``. Target profiles then name it as their
``[runtime] backend``; local and remote meters, the device server and the runtime comparison all find it here.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from edgeprune.errors import TargetError

ENTRY_POINT_GROUP = "edgeprune.latency_backends"


@runtime_checkable
class LatencyBackend(Protocol):
    """Runs one model for repeated timed runs.

    ``suffix`` is the file suffix of what ``payload`` returns (``.onnx``, ``.so``). ``payload`` turns ONNX
    bytes into the file a machine described by ``profile`` runs (ONNX itself, or a library compiled for it);
    ``open`` loads ONNX bytes or such a file on *this* machine and returns a function that runs one
    synchronous inference of ``example`` (1×C×H×W float32). ``device`` is "cpu" or a GPU kind;
    ``providers`` are ONNX Runtime execution providers (backends that have none ignore them).
    """

    name: str
    suffix: str

    def version(self) -> str: ...

    def payload(self, onnx_bytes: bytes, profile) -> bytes: ...

    def open(self, model: bytes | Path, example: np.ndarray, *, threads: int, device: str = "cpu",
             providers: tuple[str, ...] | None = None) -> Callable[[], None]: ...


BackendFactory = Callable[..., LatencyBackend]
BACKENDS: dict[str, BackendFactory] = {}
_discovered = False


def register(name: str):
    """Decorator: register ``factory(profile=None) -> LatencyBackend`` under ``name``."""

    def deco(factory: BackendFactory) -> BackendFactory:
        BACKENDS[name] = factory
        return factory

    return deco


def discover(*, refresh: bool = False) -> dict[str, BackendFactory]:
    """Import every module of ``edgeprune.latency.backends`` and every ``edgeprune.latency_backends``
    entry point (once; ``refresh`` looks again, e.g. after a plug-in was installed)."""
    global _discovered
    if _discovered and not refresh:
        return BACKENDS
    from edgeprune.latency import backends

    for mod in pkgutil.iter_modules(backends.__path__):
        importlib.import_module(f"{backends.__name__}.{mod.name}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plug-in is named, not a traceback
            raise TargetError(f"latency backend plug-in {ep.name!r} ({ep.value}) failed to load: {e}") from None
        if callable(obj) and ep.name not in BACKENDS:
            BACKENDS[ep.name] = obj
    _discovered = True
    return BACKENDS


def backend_names() -> tuple[str, ...]:
    return tuple(sorted(discover()))


def get_backend(name: str, profile=None) -> LatencyBackend:
    """The backend ``name``, set up for ``profile`` (a ``TargetProfile``: execution providers, TVM target)."""
    if name not in discover():
        raise TargetError(f"unknown latency backend {name!r}; available: {', '.join(backend_names())}")
    return BACKENDS[name](profile)
