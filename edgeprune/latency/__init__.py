"""Measurement: latency backends behind one small interface, and interleaved, outlier-robust timing."""

from edgeprune.latency.base import BACKENDS, LatencyBackend, get_backend
from edgeprune.latency.meter import LatencyMeter, MeasureSettings

__all__ = ["BACKENDS", "LatencyBackend", "get_backend", "LatencyMeter", "MeasureSettings"]
