"""One exception root; the CLI turns any of these into one line on stderr and a non-zero exit."""

from __future__ import annotations


class EdgePruneError(Exception):
    """Root of every error edgeprune raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class ModelLoadError(EdgePruneError):
    """The model file is missing, corrupt, of the wrong type or needs code the user did not trust."""


class UnknownArchitectureError(ModelLoadError):
    """An architecture name that is neither in the zoo nor an importable ``package.module:factory``."""


class InputShapeError(EdgePruneError):
    """The model does not accept the declared input shape."""


class DataError(EdgePruneError):
    """The data set cannot be read or does not fit the model (for example the number of classes)."""


class TargetError(EdgePruneError):
    """A target profile is missing or invalid."""


class UnsupportedLayerError(EdgePruneError):
    """The model holds layers the pruner or exporter cannot handle."""


class VerificationError(EdgePruneError):
    """An artifact's outputs differ from the PyTorch model beyond the stated tolerance."""

    exit_code = 4


class InfeasibleTargetError(EdgePruneError):
    """No evaluated candidate met the latency target. ``fastest`` is the fastest one found."""

    exit_code = 3

    def __init__(self, message: str, *, fastest=None):
        super().__init__(message)
        self.fastest = fastest


class RunStoreError(EdgePruneError):
    """The run store cannot be opened or the run to resume does not exist or does not match."""


class Interrupted(EdgePruneError):
    """The user interrupted a run (Ctrl-C); what was evaluated is in the run store."""

    exit_code = 130


class DeviceError(EdgePruneError):
    """A remote device or its tracker could not be reached or failed, after the retries allowed."""


class OutputError(EdgePruneError):
    """The output folder cannot be used: it is a file, cannot be created, or is not writable."""


class ProjectConfigError(EdgePruneError):
    """The project config (``edgeprune.toml`` or ``[tool.edgeprune]`` in ``pyproject.toml``) is invalid."""
