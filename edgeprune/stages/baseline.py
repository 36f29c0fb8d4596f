"""Stage 3, baseline: the unpruned model exported and verified, the meters opened with it, its reference
latency, and the latency target as a ratio — plus an early check that the target can be reached at all."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.deploy.stage import check_tvm_importable
from edgeprune.errors import InfeasibleTargetError
from edgeprune.export.onnx import export_verified
from edgeprune.latency.artifact import Artifact
from edgeprune.latency.where import Meters, open_meters, runtimes_for
from edgeprune.search.store import RunStore
from edgeprune.stages.load import Inputs
from edgeprune.types import Measurement
from edgeprune.verify import Verdict

REACH_MARGIN = 1.05  # the smallest candidate may measure this much above the target before the run gives up


@dataclass(frozen=True)
class Baseline:
    """``reference`` is the baseline's latency the target is set against (its p10 decides); ``ratio`` the
    target as a fraction of it. ``tvm_problem`` says why TVM cannot import the model (None if it can)."""

    onnx_bytes: bytes
    verdict: Verdict
    tvm_problem: str | None
    meters: Meters
    reference: Measurement
    ratio: float

    @property
    def target_ms(self) -> float:
        return self.ratio * self.reference.p10_ms


def measure_baseline(inputs: Inputs, store: RunStore, run_id: str, calib, rep, *, opener=open_meters) -> Baseline:
    """Export and verify the unpruned model, open one meter per runtime (``opener``: ``open_meters``, or
    a replacement with the same signature), and take the baseline reference (a resumed run keeps its own)."""
    import onnx

    cfg, profile = inputs.cfg, inputs.profile
    base_bytes, _, verdict = export_verified(inputs.loaded.model, inputs.shape, calib[:16], full_check=True)
    # Before the search: a model TVM cannot import is said now, not after minutes of search.
    tvm_problem = check_tvm_importable(onnx.load_from_string(base_bytes), profile)
    if tvm_problem:
        rep.warn(f"{tvm_problem}; no TVM library, ONNX Runtime only")
    meters = opener(inputs.plan, runtimes_for(profile, tvm_problem), Artifact(base_bytes, label="baseline"),
                    calib[:1].numpy(), store.get_meta(run_id, "search_runtime"), rep, parallel=cfg.batch,
                    target=profile)
    store.put_meta(run_id, "search_runtime", meters.search_runtime)
    stored = store.get_meta(run_id, "baseline_reference")
    reference = Measurement.from_dict(stored) if stored else meters.search.baseline()
    store.put_meta(run_id, "baseline_reference", reference.to_dict())
    ratio = inputs.target.ratio(reference.p10_ms)
    rep.info(f"baseline {reference.p10_ms:.3f} ms (p10; median {reference.median_ms:.3f} ms) on {inputs.plan.where}; "
             f"target {inputs.target} = {ratio:.3f}x = {ratio * reference.p10_ms:.3f} ms"
             + (f"; the machine was noisy while measuring (round-to-round variation {reference.noise:.0%})"
                if reference.noisy else ""))
    return Baseline(base_bytes, verdict, tvm_problem, meters, reference, ratio)


def check_reachable(evaluator, smallest, ratio: float, rep) -> Measurement:
    """Measure the smallest candidate the space allows before the search: when even it is slower than the
    target (beyond the noise margin), no candidate can meet it, so the run stops now instead of after its
    whole budget. Returns the smallest candidate's measurement."""
    m = evaluator.remeasure(smallest, rounds=None)
    if m.ratio_to_baseline > ratio * REACH_MARGIN:
        raise InfeasibleTargetError(
            f"the latency target ({ratio:.3f}x the baseline) cannot be met: even the smallest model the search "
            f"space allows (every group at its minimum width) measured {m.ratio_to_baseline:.3f}x; "
            f"choose a target of at least {m.ratio_to_baseline:.2f}x")
    rep.info(f"smallest candidate measured {m.ratio_to_baseline:.3f}x the baseline: the target is reachable")
    return m
