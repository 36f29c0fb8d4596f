"""Bayesian optimisation with clustering and roll-back (paper (a)), constrained by measured latency.

Registered agents:
- ``bo``: groups clustered into k dimensions (Ward on importance distributions), then rolled back to an
  intermediate number of clusters and finally to every group, bounds narrowed each time.
- ``bo-plain``: the same BO over every group from the start (no clustering, no roll-back).
- ``bo-flops``: ``bo`` with MACs as the constraint instead of measured latency (how the papers did it);
  the MAC target is the same fraction of the baseline as the latency target.

Model: one GP per outcome (accuracy; constraint value = latency or MAC ratio to the baseline), each a
SingleTaskGP that infers its own observation noise, outcomes standardised. Acquisition: qLogNEI with the
constraint as an outcome constraint (feasibility-weighted), not a penalty. Initial design: a few steps of
the ``uniform`` bisection (one shared keep fraction, moved towards the latency target), then Sobol points.
The uniform steps are ours, not the paper's: on ResNet-56 a uniform strategy that just meets the target
was more accurate than anything BO found from a Sobol design alone (docs/benchmarks.md), and with it the GP
starts from a feasible, accurate incumbent.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from contextlib import contextmanager

import numpy as np
import torch

from edgeprune.search.agents.base import BaseAgent, register
from edgeprune.search.agents.uniform import UniformAgent
from edgeprune.search.cluster import contiguous_clusters, default_clusters, ward_clusters
from edgeprune.search.rollback import Phase, initial_phase, narrowed_phase
from edgeprune.search.space import SearchSpace
from edgeprune.types import Candidate, EvalResult


@contextmanager
def one_thread():
    """GP fits take ~1 s on one thread and 12–31 s on two under load (docs/design/STACK.md)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class GPFitWarning(UserWarning):
    """A GP fit failed; the agent went on with the GP's initial hyperparameters (counted in the report)."""


class BOAgent(BaseAgent):
    """The BO agent behind ``bo``, ``bo-plain`` and ``bo-flops`` (their factories below choose the options).
    ``constraint``: "latency" (the measured latency ratio) or "macs" (the MAC ratio to the baseline)."""

    name = "bo"

    def __init__(self, space: SearchSpace, *, budget: int, seed: int, latency_ratio: float,
                 clusters: int | None = None, rollback: bool = True, constraint: str = "latency",
                 batch: int = 1, n_init: int | None = None, stagnation: int | None = None,
                 schedule: tuple[float, float] = (0.5, 0.75), top_m: int = 10, uniform_init: int | None = None,
                 name: str = "bo", prior: list | None = None):
        if constraint not in ("latency", "macs"):
            raise ValueError(f"constraint must be 'latency' or 'macs', not {constraint!r}")
        self.name = name
        self.space, self.seed, self.target = space, seed, latency_ratio
        self.constraint, self.batch = constraint, max(1, batch)
        n = space.dim
        feats = np.asarray(space.features) if space.features is not None else None
        k = n if clusters is None and not rollback else (clusters or default_clusters(n))
        k_mid = int(round(math.sqrt(k * n)))

        def assign(kk):
            if kk >= n:
                return np.arange(n)
            return ward_clusters(feats, kk) if feats is not None else contiguous_clusters(n, kk)

        # Phase assignments: k clusters → intermediate → every group (fewer when they coincide).
        self.assignments = [assign(k)]
        if rollback:
            for kk in (k_mid, n):
                a = assign(kk)
                if a.max() > self.assignments[-1].max():
                    self.assignments.append(a)
        self.phase_idx = 0
        self.phase: Phase = initial_phase(self.assignments[0])
        # Switch phases at these fractions of the budget, or after `stagnation` evaluations without improvement.
        self.switch_at = [int(f * budget) for f in schedule][: len(self.assignments) - 1]
        self.stagnation = stagnation or max(5, budget // 10)
        self.n_init = n_init or max(4, min(10, budget // 5))
        # The first evaluations of the initial design bisect one shared keep fraction (the uniform agent).
        self.uniform_init = min(4, self.n_init // 2) if uniform_init is None else min(self.n_init, uniform_init)
        self._uniform = UniformAgent(space, budget=budget, seed=seed, latency_ratio=latency_ratio)
        self._uniform_out: str | None = None  # key of a uniform proposal not yet told (batches ask ahead)
        self.top_m = top_m
        self.keeps: list[np.ndarray] = []  # full keep vectors told
        self.acc: list[float] = []
        self.con: list[float] = []  # constraint value: ratio to the baseline (≤ target is feasible)
        # Proposals the latency screen rejected (search.screen): their predicted ratio joins the constraint
        # model only; the accuracy model and the incumbent are measured evaluations alone.
        self.s_keeps: list[np.ndarray] = []
        self.s_con: list[float] = []
        self._warm_start(prior or [])
        self.best, self.since_best, self.phase_start = -math.inf, 0, 0
        self.pending: list[Candidate] = []
        self.history: list[dict] = []  # phase switches, for the report
        self.gp_fit_failures = 0  # fits that raised: the proposal used the GP's initial hyperparameters

    def _warm_start(self, prior: list) -> None:
        """History (``edgeprune.history`` rows annotated by ``annotate``): evaluations of this same model on
        this data in earlier runs join the accuracy model (accuracy does not depend on the target); those
        also measured on this target under the same conditions join the latency-constraint model. With
        four or more of the first, the Sobol part of the initial design is skipped: after the uniform
        steps the proposals are the GP's."""
        rows = [r for r in prior if r.get("same_model") and r.get("keep") and len(r["keep"]) == self.space.dim]
        self.p_keeps = [np.asarray(r["keep"], dtype=float) for r in rows]
        self.p_acc = [float(r["accuracy"]) for r in rows]
        con = [r for r in rows if r.get("same_conditions") and self.constraint == "latency" and r.get("ratio")]
        self.p_con_keeps = [np.asarray(r["keep"], dtype=float) for r in con]
        self.p_con = [float(r["ratio"]) for r in con]
        self.prior_info = {"rows_given": len(prior), "accuracy_observations": len(rows),
                           "constraint_observations": len(con), "runs": len({r.get("run_id") for r in rows})}
        if len(self.p_keeps) >= 4:
            # The uniform steps stay: on ResNet-56 the first of them was already within 3 points of the
            # cold run's best, and a warm start without them began at 0.44 (docs/benchmarks.md).
            self.n_init = self.uniform_init
        self.prior_info.update(n_init=self.n_init, uniform_init=self.uniform_init)

    def describe(self) -> dict:
        return {"constraint": self.constraint, "history": self.prior_info, "batch": self.batch, "n_init": self.n_init, "uniform_init": self.uniform_init,
                "stagnation": self.stagnation, "switch_at": self.switch_at,
                "clusters": [a.tolist() for a in self.assignments], "phase_switches": self.history,
                "gp_fit_failures": self.gp_fit_failures}

    # -- bookkeeping -------------------------------------------------------------------------------------
    def constraint_value(self, result: EvalResult) -> float:
        if self.constraint == "macs":
            return result.macs / max(1, self.space.base_macs)
        return float(result.measurement.ratio_to_baseline)

    def feasible(self, result: EvalResult) -> bool:
        return self.constraint_value(result) <= self.target

    @property
    def any_feasible(self) -> bool:
        return any(c <= self.target for c in self.con + self.p_con)

    def tell(self, candidate: Candidate, result: EvalResult) -> None:
        self.keeps.append(self._keep_of(candidate))
        if candidate.keep and len(set(candidate.keep)) == 1:  # a uniform strategy narrows the bisection
            # ... by this agent's constraint (bo-flops bisects on MACs).
            self._uniform.tell(candidate, dataclasses.replace(result, feasible=self.feasible(result)))
        if candidate.key == self._uniform_out:
            self._uniform_out = None
        self.acc.append(result.accuracy)
        self.con.append(self.constraint_value(result))
        self.pending = [c for c in self.pending if c.key != candidate.key]
        if self.feasible(result) and result.accuracy > self.best + 1e-9:
            self.best, self.since_best = result.accuracy, 0
        else:
            self.since_best += 1

    def tell_screened(self, candidate: Candidate, predicted_ratio: float) -> None:
        """A proposal predicted (not measured) at ``predicted_ratio`` of the baseline, over the target."""
        self.s_keeps.append(self._keep_of(candidate))
        self.s_con.append(float(predicted_ratio))
        if candidate.keep and len(set(candidate.keep)) == 1:
            self._uniform.tell_screened(candidate, predicted_ratio)
        if candidate.key == self._uniform_out:
            self._uniform_out = None
        self.pending = [c for c in self.pending if c.key != candidate.key]

    def _keep_of(self, candidate: Candidate) -> np.ndarray:
        return np.asarray(self.space.keep_of(candidate), dtype=float)

    def _roll_back_reason(self) -> str | None:
        if self.phase_idx + 1 >= len(self.assignments):
            return None
        n = len(self.keeps)
        if n >= self.switch_at[self.phase_idx]:
            return "schedule"
        # Stagnation counts BO iterations only: the Sobol design is not expected to improve steadily.
        started = max(self.phase_start, self.n_init)
        if n - started >= self.stagnation and self.since_best >= self.stagnation:
            return "stagnation"
        return None

    def _maybe_roll_back(self) -> None:
        """Expand to the next phase while one is due (a resumed run may be past several switch points)."""
        while (reason := self._roll_back_reason()) is not None:
            n = len(self.keeps)
            feas = np.asarray(self.con) <= self.target
            # Best strategies: feasible ones by accuracy, then the rest by how close they came to the target.
            order = sorted(range(n), key=lambda i: (not feas[i], -self.acc[i] if feas[i] else self.con[i]))
            top = np.stack([self.keeps[i] for i in order[: min(self.top_m, n)]])
            self.phase_idx += 1
            self.phase = narrowed_phase(self.assignments[self.phase_idx], top)
            self.phase_start, self.since_best = n, 0
            self.pending = []
            self.history.append({"at_evaluation": n, "dims": self.phase.dim, "reason": reason,
                                 "lower": self.phase.lower.round(3).tolist(), "upper": self.phase.upper.round(3).tolist()})

    # -- proposals ---------------------------------------------------------------------------------------
    def _candidate(self, x: np.ndarray, origin: str) -> Candidate:
        return self.space.candidate(self.phase.to_full(x).tolist(), origin=origin)

    def _sobol(self, count: int, skip: int) -> np.ndarray:
        from torch.quasirandom import SobolEngine

        eng = SobolEngine(self.phase.dim, scramble=True, seed=self.seed + 7919 * self.phase_idx)
        eng.fast_forward(skip)
        return eng.draw(count).double().numpy()

    def ask(self) -> Candidate | None:
        if self.pending:
            return self.pending.pop(0)
        self._maybe_roll_back()
        n = len(self.keeps)
        if n < self.uniform_init and self._uniform_out is None and (u := self._uniform.ask()) is not None:
            self._uniform_out = u.key
            return u
        if n < self.n_init:
            # Screened Sobol points advance the sequence too (the next proposal is a new point).
            xs = self._sobol(min(self.batch, self.n_init - n), n + len(self.s_keeps))
            self.pending = [self._candidate(x, f"sobol {n + i}") for i, x in enumerate(xs)]
        else:
            how = "" if self.any_feasible else ", feasibility"
            xs = self._propose()
            self.pending = [self._candidate(x, f"bo phase {self.phase_idx} ({self.phase.dim}-d{how})") for x in xs]
        return self.pending.pop(0)

    def _propose(self) -> np.ndarray:
        """q points (q × d, unit cube) maximising qLogNEI of accuracy s.t. constraint ≤ target, or, while no
        observation is feasible, the log probability of feasibility: with every point infeasible qLogNEI has
        no feasible incumbent to improve on and its values carry little signal (BoTorch warns as much)."""
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement, qLogProbabilityOfFeasibility
        from botorch.exceptions.warnings import BotorchWarning, InputDataWarning
        from botorch.acquisition.objective import GenericMCObjective
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import ModelListGP, SingleTaskGP
        from botorch.models.transforms.outcome import Standardize
        from botorch.optim import optimize_acqf
        from botorch.sampling import SobolQMCNormalSampler
        from gpytorch.mlls import SumMarginalLogLikelihood
        from linear_operator.utils.warnings import NumericalWarning

        n = len(self.keeps)
        # Seeds follow every tell, screened ones included: a screened proposal is not proposed again.
        m = n + len(self.s_keeps)
        def xs(keeps):
            return torch.tensor(self.phase.from_full(np.stack(keeps)), dtype=torch.double).reshape(len(keeps), -1)

        def ys(v):
            return torch.tensor(v, dtype=torch.double).reshape(-1, 1)

        # Accuracy: this run's evaluations and history's of this model; constraint: this run's, the screened
        # predictions, and history's measured on this target under the same conditions.
        X = xs(self.keeps + self.p_keeps)
        Ya = ys(self.acc + self.p_acc)
        Xc = xs(self.keeps + self.s_keeps + self.p_con_keeps)
        Yc = ys(self.con + self.s_con + self.p_con)
        d = self.phase.dim
        fit_error = None
        with one_thread(), warnings.catch_warnings():
            # Observations from before a roll-back lie outside the narrowed bounds by design.
            warnings.simplefilter("ignore", InputDataWarning)
            # BoTorch checks feasibility per posterior sample: with feasible observations near the boundary
            # some samples have none and it falls back to a lower bound (and warns). When no *observation*
            # is feasible this agent already proposes by probability of feasibility instead.
            warnings.filterwarnings("ignore", "When all training points are infeasible", BotorchWarning)
            # Near-duplicate strategies make the covariance nearly singular; GPyTorch then adds jitter to the
            # diagonal and warns once per posterior: a handled fallback that filled the terminal with warnings.
            warnings.simplefilter("ignore", NumericalWarning)
            torch.manual_seed(self.seed * 100_003 + m)
            models = [SingleTaskGP(X, Ya, outcome_transform=Standardize(m=1)),
                      SingleTaskGP(Xc, Yc, outcome_transform=Standardize(m=1))]
            model = ModelListGP(*models)
            try:
                fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model))
            except Exception as e:  # noqa: BLE001 - a failed fit keeps the initial hyperparameters; still usable
                fit_error = e
            target = self.target
            constraints = [lambda Z: Z[..., 1] - target]
            sampler = SobolQMCNormalSampler(torch.Size([128]), seed=self.seed + m)
            if self.any_feasible:
                acq = qLogNoisyExpectedImprovement(
                    model=model, X_baseline=X.clamp(0, 1), objective=GenericMCObjective(lambda Z, X=None: Z[..., 0]),
                    constraints=constraints, sampler=sampler, prune_baseline=True)
            else:
                acq = qLogProbabilityOfFeasibility(model=model, constraints=constraints, sampler=sampler)
            bounds = torch.stack([torch.zeros(d, dtype=torch.double), torch.ones(d, dtype=torch.double)])
            cand, _ = optimize_acqf(acq, bounds=bounds, q=self.batch, num_restarts=8, raw_samples=256,
                                    options={"seed": self.seed + m, "maxiter": 100})
        if fit_error is not None:
            self.gp_fit_failures += 1
            warnings.warn(f"{self.name}: GP fit failed at evaluation {n} ({type(fit_error).__name__}: {fit_error}); "
                          f"proposing with the initial hyperparameters ({self.gp_fit_failures} failed fit(s) so far)",
                          category=GPFitWarning, stacklevel=2)
        xs = cand.detach().numpy()
        # Quantised widths can map a proposal onto an evaluated strategy: nudge it with a Sobol point instead.
        seen = {self.space.candidate(k.tolist()).key for k in self.keeps + self.s_keeps + self.p_keeps}
        for i, x in enumerate(xs):
            if self._candidate(x, "").key in seen:
                xs[i] = self._sobol(1, 1000 + m + i)[0]
        return xs


@register("bo")
def _bo(space: SearchSpace, *, budget: int, seed: int, latency_ratio: float, clusters: int | None = None,
        batch: int = 1, n_init: int | None = None, uniform_init: int | None = None, stagnation: int | None = None,
        schedule: tuple[float, float] = (0.5, 0.75), top_m: int = 10, prior: list | None = None) -> BOAgent:
    """Clusters then roll-back, constrained by measured latency."""
    return BOAgent(space, budget=budget, seed=seed, latency_ratio=latency_ratio, clusters=clusters, batch=batch,
                   n_init=n_init, uniform_init=uniform_init, stagnation=stagnation, schedule=schedule, top_m=top_m,
                   prior=prior)


@register("bo-plain")
def _bo_plain(space: SearchSpace, *, budget: int, seed: int, latency_ratio: float, batch: int = 1,
              n_init: int | None = None, uniform_init: int | None = None, prior: list | None = None) -> BOAgent:
    """Every group its own dimension from the start: no clusters, no roll-back."""
    return BOAgent(space, budget=budget, seed=seed, latency_ratio=latency_ratio, clusters=space.dim, rollback=False,
                   batch=batch, n_init=n_init, uniform_init=uniform_init, name="bo-plain", prior=prior)


@register("bo-flops")
def _bo_flops(space: SearchSpace, *, budget: int, seed: int, latency_ratio: float, clusters: int | None = None,
              batch: int = 1, n_init: int | None = None, uniform_init: int | None = None, stagnation: int | None = None,
              schedule: tuple[float, float] = (0.5, 0.75), top_m: int = 10) -> BOAgent:
    """``bo`` constrained by MACs (the same fraction of the baseline's) instead of measured latency."""
    return BOAgent(space, budget=budget, seed=seed, latency_ratio=latency_ratio, clusters=clusters, batch=batch,
                   n_init=n_init, uniform_init=uniform_init, stagnation=stagnation, schedule=schedule, top_m=top_m,
                   constraint="macs", name="bo-flops")
