"""Progress reporting. The pipeline calls a Reporter; the CLI supplies one that draws rich progress bars
on stderr. Library callers get the default, which is silent except for warnings: those are raised with
``warnings.warn(..., EdgePruneWarning)``, so Python callers see them (and can filter or turn them into errors)."""

from __future__ import annotations

import warnings

from edgeprune.types import Candidate, EvalResult


class EdgePruneWarning(UserWarning):
    """Something the user should know that does not stop the run (a stand-in, a frozen layer, a retry)."""


class Reporter:
    """Silent reporter (warnings go to ``warnings.warn``); subclass and override what you want to show."""

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None:
        warnings.warn(message, EdgePruneWarning, stacklevel=3)

    def search_start(self, total: int, already: int) -> None: ...

    def search_step(self, idx: int, candidate: Candidate, result: EvalResult, reused: bool,
                    best: EvalResult | None) -> None: ...

    def search_end(self) -> None: ...

    def train_start(self, total_steps: int) -> None: ...

    def train_step(self, step: int, total: int, loss: float) -> None: ...

    def train_end(self) -> None: ...


class RichReporter(Reporter):
    """Progress bars and one-line messages on stderr (stdout stays clean for ``--json``)."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True)
        self._progress = None
        self._task = None

    def info(self, message: str) -> None:
        self.console.print(f"[bold]edgeprune[/]: {message}", highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning[/]: {message}", highlight=False)

    def _start(self, description: str, total: int, completed: int = 0) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=self.console)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=completed, status="")

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def search_start(self, total: int, already: int) -> None:
        self._start("search", total, 0)

    def search_step(self, idx, candidate, result, reused, best) -> None:
        status = "no feasible candidate yet"
        if best is not None:
            status = f"best feasible: acc {best.accuracy:.3f} at {best.latency_ms:.3f} ms"
        self._progress.update(self._task, advance=1, status=status + (" (from store)" if reused else ""))

    def search_end(self) -> None:
        self._stop()

    def train_start(self, total_steps: int) -> None:
        self._start("fine-tune", total_steps)

    def train_step(self, step: int, total: int, loss: float) -> None:
        self._progress.update(self._task, completed=step, status=f"loss {loss:.3f}")

    def train_end(self) -> None:
        self._stop()


class RecordingReporter(Reporter):
    """Passes everything to ``inner`` and keeps the warnings, for the run report."""

    def __init__(self, inner: Reporter):
        self.inner = inner
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.inner.warn(message)

    def __getattribute__(self, name):
        # Every other Reporter method goes straight to the wrapped reporter.
        if name in ("inner", "warnings", "warn") or name.startswith("__"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "inner"), name)
