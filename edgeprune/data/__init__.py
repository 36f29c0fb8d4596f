"""Data: offline built-in data sets and readers for user data, brought to the model's input shape and
normalisation, with deterministic splits."""

from edgeprune.data.normalisation import (IMAGENET, LEGACY, UNIT, Normalisation, parse_normalisation,
                                          resolve_normalisation)
from edgeprune.data.splits import DataSplits, load_data

__all__ = ["DataSplits", "load_data", "Normalisation", "IMAGENET", "LEGACY", "UNIT", "parse_normalisation",
           "resolve_normalisation"]
