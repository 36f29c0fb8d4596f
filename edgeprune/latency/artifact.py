"""What a meter times: a model in its source form (ONNX) and, when already built, a compiled file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Artifact:
    """A model to measure.

    ``onnx`` is the model's ONNX bytes (every artifact has them: a meter compiles them for the machine it
    measures on). ``library`` is a file already compiled for the machine that will run it (e.g. the tuned
    ``model.tvm.so``); it is used instead of compiling, and then ``runtime`` must name the backend that
    loads it. ``label`` names the model in messages.
    """

    onnx: bytes
    library: Path | None = None
    runtime: str | None = None
    label: str = ""

    def __post_init__(self):
        if self.library is not None and self.runtime is None:
            raise ValueError("an Artifact with a compiled library must say which runtime loads it")

    def for_runtime(self, runtime: str) -> "Artifact":
        """This artifact as ``runtime`` sees it: the compiled library only if it was built for that runtime."""
        if self.runtime in (None, runtime):
            return self
        return Artifact(self.onnx, label=self.label)
