"""Measurement, the one capability: latency backends behind a registry, the ``Meter`` contract and its local
and remote meters, interleaved noise-aware timing, and where a target is measured (``latency.where``)."""

from edgeprune.latency.artifact import Artifact
from edgeprune.latency.base import BACKENDS, LatencyBackend, backend_names, get_backend, register
from edgeprune.latency.meter import LocalMeter, Meter, Pair
from edgeprune.types import MeasureSettings

__all__ = ["Artifact", "BACKENDS", "LatencyBackend", "backend_names", "get_backend", "register", "LocalMeter", "Meter",
           "Pair", "MeasureSettings"]
