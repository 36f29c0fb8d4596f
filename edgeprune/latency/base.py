"""The latency-backend interface and its registry: a new backend is one module that calls ``register``."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np


class LatencyBackend(Protocol):
    """Opens a model for repeated timed runs. ``open`` returns a function that runs one inference."""

    name: str

    def version(self) -> str: ...

    def open(self, model_bytes: bytes, example: np.ndarray, *, threads: int) -> Callable[[], None]: ...


BACKENDS: dict[str, Callable[[], LatencyBackend]] = {}


def register(name: str):
    def deco(factory):
        BACKENDS[name] = factory
        return factory

    return deco


def get_backend(name: str, profile=None) -> LatencyBackend:
    """The backend ``name``, set up for ``profile`` (a ``TargetProfile``: execution providers, TVM target)."""
    from edgeprune.errors import TargetError
    from edgeprune.latency import onnxruntime as _ort  # noqa: F401 - registers itself
    from edgeprune.latency import tvmrt as _tvm  # noqa: F401 - registers itself

    if name not in BACKENDS:
        raise TargetError(f"unknown latency backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](profile)
