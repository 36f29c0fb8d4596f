"""The latency screen: a proposal the predictor puts far over the target is not evaluated at all.

``--latency-screen MARGIN``: before a candidate is pruned, exported and measured, the latency predictor
(``latency.predictor``) gives its ratio to the baseline; above ``target × (1 + MARGIN)`` it is *screened*:
not measured, not stored as an evaluation, no budget spent. The agent is told (``tell_screened``) that it
is predicted infeasible, with the predicted ratio, so it does not propose it again. Every measured
evaluation refits the predictor (latency as a function of ``Σ kernels``, ``LatencyPredictor.fit``, over
this run's measured candidates and the baseline), so the screen tracks this run's conditions; the measured
value still decides feasibility of everything evaluated. Only agents that implement ``tell_screened`` are screened.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeprune.latency.predictor import LatencyPredictor
from edgeprune.types import Candidate, EvalResult


@dataclass
class LatencyScreen:
    """``target``: the latency target as a ratio to the baseline; ``baseline_ms``: the baseline's reference
    p10 (ms); ``margin``: how far over the target (fraction) a prediction must be to screen."""

    predictor: LatencyPredictor
    target: float
    margin: float
    baseline_ms: float
    screened: int = 0
    observed: list = field(default_factory=list)  # [(widths, measured ms)] of this run
    refit_errors: int = 0

    def predicted(self, candidate: Candidate) -> float:
        """The predicted ratio of ``candidate``'s latency to the baseline's."""
        return self.predictor.predict_ratio(candidate.widths)

    def rejects(self, candidate: Candidate) -> float | None:
        """The predicted ratio when ``candidate`` is screened, else None."""
        r = self.predicted(candidate)
        return r if r > self.target * (1 + self.margin) else None

    def observe(self, candidate: Candidate, result: EvalResult) -> None:
        """Add a measured evaluation and refit (from two distinct measured candidates on)."""
        self.observed.append((tuple(candidate.widths), float(result.latency_ms)))
        samples = [(self.predictor.full_widths(), self.baseline_ms)] + self.observed
        try:
            self.predictor.fit(samples)
        except ValueError:
            self.refit_errors += 1  # too few distinct samples yet: the previous fit stands

    def describe(self) -> dict:
        return {"margin": self.margin, "screened": self.screened, "threshold_ratio": self.target * (1 + self.margin),
                "predictor": {k: v for k, v in self.predictor.to_dict().items() if k != "samples"},
                "fit_samples": len(self.predictor.samples)}
