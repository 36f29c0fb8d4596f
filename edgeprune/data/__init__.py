"""Data: offline built-in data sets and readers for user data, with deterministic splits."""

from edgeprune.data.splits import DataSplits, load_data

__all__ = ["DataSplits", "load_data"]
