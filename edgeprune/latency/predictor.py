"""A per-target latency predictor: measured kernel tables, interpolated over widths, and a per-model fit.

How (nn-Meter's kernel-level idea, on this project's measurement rules):

1. **Kernel table** (``KernelTable``): the latency of each conv / depthwise conv / linear layer the model
   uses, as a stand-alone ONNX graph (layer + bias + ReLU), measured on the target's runtime interleaved in
   rounds with an empty model whose time (a run's fixed cost) is subtracted: ms = p10(kernel) − p10(empty).
   One table per (target, runtime, runtime version, threads), a JSON-lines file under
   ``calibration/<target>/`` appended kernel by kernel, so an interrupted calibration resumes and a kernel
   another model already needed is not measured again.
2. **Grid** (``LatencyPredictor``): for each layer of the model (``kernels.Slot``), the table holds its
   kernel on a grid of input × output channel counts spanning what the search space allows (``grid``
   values per axis, multiples of ``round_to``); a candidate's layer is interpolated bilinearly between the
   grid's corners (conv time is close to affine in cin, cout and cin·cout at fixed spatial size).
3. **Fit**: a model runs more than its convs (adds, pooling, layout reorders, the run's overhead), and a
   stand-alone kernel pays input/output costs a fused graph does not, so the candidate's latency is a
   function of ``S = Σ kernels`` fitted on whole candidates measured the usual way (interleaved with the
   baseline): ``a + b · S`` (*linear*, least squares) or ``a · S^b`` (*power*, least squares in log space).
   Where there are enough samples (``CHOOSE_FROM``), the form with the smaller leave-one-out error on them
   is kept: measured whole models of MobileNetV2 shrink faster than their kernel sum (inside a small
   candidate its many tiny layers cost less than alone), which a straight line through the baseline
   misses at the small end (docs/benchmarks.md, *Latency predictor*). Without a fit, ``a`` is the empty
   model's time and ``b`` 1: the pure kernel sum. The predicted *ratio* to the baseline (what latency
   targets are stated in) is ``predict(c) / predict(full)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgeprune.latency.kernels import DW, Kernel, KernelMap, Slot, empty_onnx, kernel_onnx
from edgeprune.latency.timing import interleave

ENV_DIR = "EDGEPRUNE_CALIBRATION"
FORMAT = 1
FORMS = ("linear", "power")
# Samples from which the fit's form is chosen by leave-one-out error (fewer: linear). Each left-out sample
# is predicted from a fit on the rest; with fewer than 6 the choice would follow one or two noisy samples.
CHOOSE_FROM = 6


def calibration_dir(explicit: str | Path | None = None) -> Path:
    """Where tables live: ``explicit``, else ``$EDGEPRUNE_CALIBRATION``, else ``./calibration``."""
    return Path(explicit or os.environ.get(ENV_DIR) or "calibration")


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file (none if it is missing); a line cut short by a killed run is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_jsonl(path: Path, row: dict) -> None:
    """Append one row and sync it to disk at once (a killed run keeps every row written before)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class TableConditions:
    """What a kernel table's numbers hold for: the target profile, runtime and version, intra-op threads,
    and where it was measured (a stand-in's tables say so in ``where`` and in their folder's name)."""

    target: str
    runtime: str
    version: str
    threads: int
    where: str
    stand_in: bool = False

    def folder(self) -> str:
        prefix = "standin-" if self.stand_in else ""
        return f"{prefix}{self.runtime}-{self.version}-t{self.threads}"


class KernelTable:
    """Measured kernel latencies (ms, run overhead subtracted) for one set of ``TableConditions``, kept in
    ``root/<target>/<folder>/kernels.jsonl`` (a header line, then one line per kernel)."""

    def __init__(self, root: Path, cond: TableConditions):
        self.cond = cond
        self.dir = Path(root) / cond.target / cond.folder()
        self.path = self.dir / "kernels.jsonl"
        # A line cut short by a killed calibration is skipped: that kernel is measured again.
        self.ms: dict[str, float] = {r["key"]: float(r["ms"]) for r in read_jsonl(self.path) if "key" in r}

    def __contains__(self, k: Kernel) -> bool:
        return k.key in self.ms

    def __getitem__(self, k: Kernel) -> float:
        return self.ms[k.key]

    def __len__(self) -> int:
        return len(self.ms)

    def add(self, k: Kernel, ms: float, **stats) -> None:
        """Record one kernel and append it to the file at once (a killed run keeps what it measured)."""
        if not self.path.is_file():
            append_jsonl(self.path, {"format": FORMAT, "conditions": self.cond.__dict__})
        append_jsonl(self.path, {"key": k.key, "ms": ms, **stats})
        self.ms[k.key] = ms


# Layout conversions ONNX Runtime puts around a stand-alone conv (NCHW <-> blocked NCHWc): inside a model
# they run once at its edges, not per layer, so a kernel's time excludes them (the fit's ``a`` has them).
LAYOUT_OPS = ("ReorderInput", "ReorderOutput")


@dataclass(frozen=True)
class KernelTimer:
    """Times stand-alone kernels on this machine with a latency backend.

    ONNX Runtime (``backend.name == "onnxruntime"``): the layer's own node time from ONNX Runtime's profiler
    (the mean over ``runs`` runs after ``warmup``), without the layout reorders around it — a layer's cost
    as it runs inside a model. Other backends: the whole stand-alone model, timed in ``rounds`` rounds of
    ``per_round`` runs interleaved with the empty model, minus the empty model's time (p10 each).
    """

    backend: object
    threads: int = 1
    rounds: int = 6
    per_round: int = 20
    warmup: int = 10
    runs: int = 100
    percentile: float = 10.0

    def time(self, kernels: Iterable[Kernel]) -> Iterable[tuple[Kernel, float, dict]]:
        """Yield (kernel, ms, stats) as each is measured."""
        if getattr(self.backend, "name", "") == "onnxruntime":
            yield from self._profiled(kernels)
            return
        eb, ex = empty_onnx()
        empty = self.backend.open(eb, ex, threads=self.threads)
        for k in kernels:
            kb, kx = kernel_onnx(k)
            run = self.backend.open(kb, kx, threads=self.threads)
            t_e, t_k = interleave([empty, run], self.rounds, self.per_round, self.warmup)
            pe, pk = float(np.percentile(t_e, self.percentile)), float(np.percentile(t_k, self.percentile))
            yield k, max(pk - pe, 0.0), {"p10_ms": pk, "empty_ms": pe, "median_ms": float(np.median(t_k)),
                                         "method": "interleaved"}

    def _profiled(self, kernels):
        from edgeprune.latency.backends.onnxruntime import profile_events

        for k in kernels:
            kb, kx = kernel_onnx(k)
            per_run: dict[str, list[float]] = {}
            for e in profile_events(kb, kx, runs=self.warmup + self.runs, threads=self.threads):
                if e.get("args", {}).get("op_name", "") not in LAYOUT_OPS:
                    per_run.setdefault(e["name"], []).append(e["dur"] / 1e3)  # µs → ms
            times = np.sort(np.sum([v[self.warmup:] for v in per_run.values()], axis=0))
            # The mean of the faster half: robust to runs the machine interrupted (one 1 ms stall moves a
            # 100-run mean of a 10 µs kernel by 10%), and finer than the profiler's whole µs, which a
            # percentile would not be.
            fast = float(np.mean(times[: max(1, times.size // 2)]))
            yield k, fast, {"median_ms": float(np.median(times)), "mean_ms": float(np.mean(times)),
                            "method": "profiled", "runs": int(times.size)}


def _axis(lo: int, hi: int, n: int, align: int) -> tuple[int, ...]:
    """Up to ``n`` channel counts from ``lo`` to ``hi`` (both included), multiples of ``align`` between."""
    if hi <= lo or n < 2:
        return (hi,)
    inner = np.linspace(lo, hi, n)[1:-1]
    vals = {lo, hi} | {int(max(lo, min(hi, round(v / align) * align))) for v in inner}
    return tuple(sorted(vals))


def _bracket(axis: tuple[int, ...], v: float) -> tuple[int, int, float]:
    """Indices (i, j) of the grid values around ``v`` and the weight of ``j`` (clamped at the ends)."""
    if v <= axis[0] or len(axis) == 1:
        return 0, 0, 0.0
    if v >= axis[-1]:
        return len(axis) - 1, len(axis) - 1, 0.0
    j = int(np.searchsorted(axis, v))
    i = j - 1
    return i, j, (v - axis[i]) / (axis[j] - axis[i])


@dataclass(frozen=True)
class SlotGrid:
    """One layer's grid: its channel axes (cout follows cin for a depthwise conv)."""

    slot: Slot
    cin: tuple[int, ...]
    cout: tuple[int, ...]

    def points(self) -> list[Kernel]:
        if self.slot.full.op == DW:
            return [self.slot.full.with_channels(c, c) for c in self.cin]
        return [self.slot.full.with_channels(ci, co) for ci in self.cin for co in self.cout]

    def value(self, table: KernelTable, cin: int, cout: int) -> float:
        k = self.slot.full
        i, j, t = _bracket(self.cin, cin)
        if k.op == DW:
            return (1 - t) * table[k.with_channels(self.cin[i], 0)] + t * table[k.with_channels(self.cin[j], 0)]
        p, q, u = _bracket(self.cout, cout)

        def at(a, b):
            return table[k.with_channels(self.cin[a], self.cout[b])]

        return ((1 - t) * ((1 - u) * at(i, p) + u * at(i, q)) + t * ((1 - u) * at(j, p) + u * at(j, q)))


@dataclass
class LatencyPredictor:
    """Predicts a candidate's latency (ms, and ratio to the unpruned model) from its widths.

    ``kmap`` gives each candidate's kernels, ``grids`` each layer's channel grid, ``table`` their measured
    times; ``a``, ``b`` and ``form`` the fit (see the module's docstring: ``linear``: ``a`` ms + ``b`` · S;
    ``power``: ``a`` · S^``b``, S in ms), ``fitted`` whether it came from measured candidates, ``loo`` the
    forms' leave-one-out errors when the form was chosen by them.
    """

    kmap: KernelMap
    grids: tuple[SlotGrid, ...]
    table: KernelTable
    a: float = 0.0
    b: float = 1.0
    fitted: bool = False
    samples: list = field(default_factory=list)  # [(kernel sum ms, measured ms)] the fit used
    form: str = "linear"
    loo: dict = field(default_factory=dict)  # {form: mean relative leave-one-out error}

    @classmethod
    def for_model(cls, kmap: KernelMap, table: KernelTable, *, grid: int = 5, align: int = 8) -> "LatencyPredictor":
        grids = []
        for s in kmap.slots:
            (ci0, ci1), (co0, co1) = kmap.channel_range(s)
            grids.append(SlotGrid(s, _axis(ci0, ci1, grid, align), _axis(co0, co1, grid, align)))
        return cls(kmap, tuple(grids), table)

    def missing(self) -> list[Kernel]:
        """Grid kernels the table lacks (distinct, in slot order)."""
        seen, out = set(), []
        for g in self.grids:
            for k in g.points():
                if k.key not in seen and k not in self.table:
                    seen.add(k.key)
                    out.append(k)
        return out

    def calibrate(self, timer: KernelTimer, progress: Callable[[int, int, Kernel, float], None] | None = None) -> int:
        """Measure the grid kernels the table lacks (appended to its file one by one); returns how many."""
        todo = self.missing()
        for n, (k, ms, stats) in enumerate(timer.time(todo), 1):
            self.table.add(k, ms, **stats)
            if progress:
                progress(n, len(todo), k, ms)
        if not self.a and not self.fitted:
            self.a = self._empty_ms()
        return len(todo)

    def _empty_ms(self) -> float:
        """A run's fixed cost when the table's kernels were timed as whole stand-alone models (their rows
        carry the empty model's time); 0 for profiled kernels, which never included it."""
        empty = [r["empty_ms"] for r in read_jsonl(self.table.path) if "empty_ms" in r]
        return float(np.median(empty)) if empty else 0.0

    def kernel_sum(self, widths) -> float:
        """Σ over the candidate's layers of their interpolated kernel times (ms)."""
        by_name = {g.slot.name: g for g in self.grids}
        return sum(by_name[s.name].value(self.table, cin, cout) for s, cin, cout in self.kmap.layers(widths))

    def predict_ms(self, widths) -> float:
        return _apply(self.form, self.a, self.b, self.kernel_sum(widths))

    def full_widths(self) -> tuple[int, ...]:
        return tuple(self.kmap.full) + (1,) * len(self.kmap.blocks)

    def predict_ratio(self, widths) -> float:
        """Predicted latency of ``widths`` / predicted latency of the unpruned model."""
        return self.predict_ms(widths) / self.predict_ms(self.full_widths())

    def fit(self, samples: list[tuple[tuple[int, ...], float]], form: str | None = None) -> None:
        """Fit the predictor to measured candidates: ``[(widths, measured ms)]`` (≥ 2, one may be the
        baseline). ``form``: ``linear`` or ``power``; None: power where it predicts the samples left out one
        at a time better than linear (from ``CHOOSE_FROM`` samples on), else linear. A latency cannot fall
        as kernels grow: a fit with ``b <= 0`` becomes a proportional one (``b`` = 1 for power)."""
        sums = np.array([self.kernel_sum(w) for w, _ in samples])
        ms = np.array([m for _, m in samples])
        if len(samples) < 2 or np.ptp(sums) <= 0:
            raise ValueError("a fit needs at least two measured candidates with different kernels")
        if form is not None and form not in FORMS:
            raise ValueError(f"unknown fit form {form!r}: one of {', '.join(FORMS)}")
        positive = bool((sums > 0).all() and (ms > 0).all())
        loo = {}
        if form is None:
            form = "linear"
            if positive and len(samples) >= CHOOSE_FROM:
                loo = {f: _loo_error(f, sums, ms) for f in FORMS}
                form = min(FORMS, key=lambda f: loo[f])
        elif form == "power" and not positive:
            raise ValueError("a power fit needs positive kernel sums and latencies")
        self.a, self.b = _fit(form, sums, ms)
        self.form, self.loo, self.fitted = form, loo, True
        self.samples = [(float(s), float(m)) for s, m in zip(sums, ms)]

    def formula(self) -> str:
        """The fit in words, e.g. ``-0.0800 ms + 1.000 x kernel sum``."""
        if self.form == "power":
            return f"{self.a:.4f} x (kernel sum in ms)^{self.b:.3f} ms"
        return f"{self.a:.4f} ms + {self.b:.3f} x kernel sum"

    def to_dict(self) -> dict:
        return {"a_ms": self.a, "b": self.b, "form": self.form, "loo_error": self.loo, "fitted": self.fitted,
                "samples": self.samples, "formula": self.formula(),
                "kernels": len(self.table), "grid_points": sum(len(g.points()) for g in self.grids),
                "layers": len(self.grids), "signature": self.kmap.signature()}


def _apply(form: str, a: float, b: float, kernel_sum: float) -> float:
    """The fitted latency (ms) at a kernel sum (ms)."""
    if form == "power":
        return a * kernel_sum ** b if kernel_sum > 0 else 0.0
    return a + b * kernel_sum


def _fit(form: str, sums: np.ndarray, ms: np.ndarray) -> tuple[float, float]:
    """Least-squares (a, b) of ``form`` (power: in log space, so every sample weighs by its relative error)."""
    if form == "power":
        b, log_a = np.polyfit(np.log(sums), np.log(ms), 1)
        if b <= 0:
            return float(np.exp(np.mean(np.log(ms) - np.log(sums)))), 1.0
        return float(np.exp(log_a)), float(b)
    b, a = np.polyfit(sums, ms, 1)
    if b <= 0:
        return 0.0, float(ms.mean() / sums.mean())
    return float(a), float(b)


def _loo_error(form: str, sums: np.ndarray, ms: np.ndarray) -> float:
    """Mean relative error of each sample predicted by ``form`` fitted on the others (samples whose others
    have one kernel sum only are skipped)."""
    errs = []
    for i in range(sums.size):
        keep = np.arange(sums.size) != i
        if np.ptp(sums[keep]) <= 0:
            continue
        a, b = _fit(form, sums[keep], ms[keep])
        errs.append(abs(_apply(form, a, b, float(sums[i])) - ms[i]) / ms[i])
    return float(np.mean(errs)) if errs else float("inf")


def within(predicted: Iterable[float], measured: Iterable[float], tol: float = 0.10) -> dict:
    """Accuracy of predicted vs measured values (ratios): the fraction within ±``tol`` of the measured value,
    the median and largest relative error."""
    p, m = np.asarray(list(predicted), float), np.asarray(list(measured), float)
    err = np.abs(p - m) / m
    return {"n": int(err.size), "within": float((err <= tol).mean()) if err.size else float("nan"),
            "tolerance": tol, "median_error": float(np.median(err)) if err.size else float("nan"),
            "max_error": float(err.max()) if err.size else float("nan")}
