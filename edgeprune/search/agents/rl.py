"""``rl``: an AMC-style DDPG pruner (paper (b), Mu et al.; AMC, He et al. 2018), optionally boosted by history.

An episode is one candidate, built group by group: at group t the actor maps the state s_t to a keep
fraction a_t in [a_min, 1]; the widths follow (``SearchSpace.candidate``, multiples of ``round_to``).
As in AMC, each action is clamped so that the candidate can still meet the latency target with every
later group at a_min, by a latency *estimate* (``clamp="scale"`` instead moves every action towards a_min
by one factor; it learnt less on the toy problems of tests/search/test_rl.py)
(``LatencyEstimate``: ratio ≈ c + s·Σ_g share_g·keep_g + Σ_g δ_g·keep_g, fitted on this run's measured
candidates); the measured latency then decides feasibility and the reward.

State (``STATE_DIM`` numbers, each in about [0, 1], the same meaning for any network and target, which is
what lets history transfer — the paper's augmented transfer): position t/(T−1), log2 of the channels / 12,
channels / the widest group's, depthwise, a removable block, the group's mean importance (its clustering
features, min-max scaled over the groups), the previous action, the mean action so far, the estimated ratio
spent so far / target, the estimated ratio if every remaining group took a_min / target, and the target.

Reward: accuracy (search subset) when the measured ratio meets the target, else accuracy − 3·(ratio/target
− 1). It comes at the end of the episode; with γ = 1 every step's return is the episode's reward, so the
critic is fitted to those Monte-Carlo returns (no bootstrapped targets and no target networks: with a
reward only at the end they add bias and lag and nothing else). Rewards are normalised per run (z-scores
over the run's episodes) so that runs on other networks and targets share one scale. The actor follows
the critic's gradient (deterministic policy gradient). Exploration: a truncated normal around the actor's
action, σ = 0.5 (0.25 after pre-training on history) decayed ×0.95 per episode after ``warmup`` random
episodes. Replay: every transition told.

History (``prior``: rows of ``edgeprune.history``, other runs' evaluations of any model on any target):
(a) transfer learning: the actor and critic are pre-trained on the history's episodes (rebuilt from their
keep fractions and group descriptions) before the first proposal, and the warm-up is skipped; (b) the
normalised states and rewards above make that meaningful across networks and targets; (c) assistant
learning: each proposal is the best of ``assist`` noisy roll-outs by the critic's estimate of its return
(a surrogate of the reward fitted on history and this run), so fewer poor candidates are measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeprune.model.depth import BLOCK
from edgeprune.search.agents.base import BaseAgent, register
from edgeprune.search.agents.bo import one_thread
from edgeprune.search.space import SearchSpace
from edgeprune.types import Candidate, EvalResult

STATE_DIM = 11
PENALTY = 3.0  # reward per unit of (measured ratio / target − 1) over the target


@dataclass(frozen=True)
class GroupInfo:
    """What the state knows of a group: channels, depthwise, a removable block, mean importance in [0, 1]."""

    full: int
    depthwise: bool = False
    block: bool = False
    importance: float = 0.5

    def to_list(self) -> list:
        return [self.full, self.depthwise, self.block, self.importance]

    @classmethod
    def from_list(cls, v) -> "GroupInfo":
        return cls(int(v[0]), bool(v[1]), bool(v[2]), float(v[3]))


def group_infos(space: SearchSpace) -> list[GroupInfo]:
    """The state's description of each dimension of ``space`` (history stores these with each run)."""
    if space.features is not None and len(space.features):
        imp = np.asarray([np.mean(f) if len(f) else 0.0 for f in space.features], dtype=float)
        imp = (imp - imp.min()) / (imp.max() - imp.min()) if imp.max() > imp.min() else np.full(len(imp), 0.5)
    else:
        imp = np.full(space.dim, 0.5)
    out = []
    for i, g in enumerate(space.groups):
        block = g.name.startswith(BLOCK)
        out.append(GroupInfo(g.full, bool(g.depthwise), block, float(imp[i]) if i < len(imp) else 0.5))
    return out


class LatencyEstimate:
    """ratio ≈ c + s·Σ_g share_g·keep_g + Σ_g δ_g·keep_g, refitted on every measured candidate of the run.

    share_g is group g's fraction of all channels. The fixed cost c and the scale s are fitted almost
    freely (a light pull towards c0 and 1 − c0), so two or three measurements already set the overall
    level, which decides the clamp; the per-group corrections δ_g are ridge-regularised towards 0 and come
    with more measurements."""

    def __init__(self, infos: list[GroupInfo], c0: float = 0.25, ridge: float = 0.3, free: float = 0.01):
        share = np.asarray([max(1, i.full) for i in infos], dtype=float)
        self.share = share / share.sum()
        n = len(infos)
        self.prior = np.concatenate([[c0, 1 - c0], np.zeros(n)])
        self.lam = np.diag(np.concatenate([[free, free], np.full(n, ridge)]))
        self.coef = self.prior.copy()
        self.X: list[np.ndarray] = []
        self.y: list[float] = []

    def _row(self, keep: np.ndarray) -> np.ndarray:
        return np.concatenate([[1.0, float(self.share @ keep)], keep])

    def add(self, keep: np.ndarray, ratio: float) -> None:
        self.X.append(self._row(np.asarray(keep, dtype=float)))
        self.y.append(float(ratio))
        X, y = np.stack(self.X), np.asarray(self.y)
        self.coef = np.linalg.solve(X.T @ X + self.lam, X.T @ y + self.lam @ self.prior)

    def ratio(self, keep: np.ndarray) -> float:
        return float(self.coef @ self._row(np.asarray(keep, dtype=float)))

    def slope(self, t: int) -> float:
        """d ratio / d keep_t."""
        return float(self.coef[1] * self.share[t] + self.coef[2 + t])


def _mlp(n_in: int, hidden: int, out_act: nn.Module | None) -> nn.Sequential:
    layers = [nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)]
    return nn.Sequential(*layers, *([out_act] if out_act is not None else []))


class DDPG:
    """Actor μ(s) ∈ [0, 1] and critic Q(s, a), both small MLPs; ``update`` fits the critic to returns and
    moves the actor up the critic's gradient. Deterministic for a seed (one thread)."""

    def __init__(self, state_dim: int, *, seed: int, hidden: int = 64, lr_actor: float = 1e-3,
                 lr_critic: float = 3e-3, batch: int = 64):
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            self.actor = _mlp(state_dim, hidden, nn.Sigmoid()).double()
            self.critic = _mlp(state_dim + 1, hidden, None).double()
        self.opt_a = torch.optim.Adam(self.actor.parameters(), lr=lr_actor)
        self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=lr_critic)
        self.batch, self.gen = batch, g

    def act(self, s: np.ndarray) -> float:
        with torch.no_grad():
            return float(self.actor(torch.as_tensor(s, dtype=torch.double)[None])[0, 0])

    def q(self, S: np.ndarray, A: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.cat([torch.as_tensor(S, dtype=torch.double), torch.as_tensor(A, dtype=torch.double)[:, None]], 1)
            return self.critic(x)[:, 0].numpy()

    def update(self, S: np.ndarray, A: np.ndarray, R: np.ndarray, steps: int) -> float:
        """``steps`` minibatch updates on transitions (S: n×state_dim, A: n actions in [0, 1], R: n returns).
        Returns the last critic loss."""
        S_t, A_t, R_t = (torch.as_tensor(v, dtype=torch.double) for v in (S, A, R))
        loss_c = torch.tensor(0.0)
        with one_thread():
            for _ in range(steps):
                idx = torch.randint(0, len(S_t), (min(self.batch, len(S_t)),), generator=self.gen)
                s, a, r = S_t[idx], A_t[idx, None], R_t[idx, None]
                loss_c = ((self.critic(torch.cat([s, a], 1)) - r) ** 2).mean()
                self.opt_c.zero_grad()
                loss_c.backward()
                self.opt_c.step()
                loss_a = -self.critic(torch.cat([s, self.actor(s)], 1)).mean()
                self.opt_a.zero_grad()
                loss_a.backward()
                self.opt_a.step()
        return float(loss_c.detach())


def reward(accuracy: float, ratio: float, target: float) -> float:
    """Accuracy when the measured ratio meets the target, else accuracy − PENALTY·(ratio/target − 1)."""
    return float(accuracy - PENALTY * max(0.0, ratio / target - 1.0))


def normalised(rewards: np.ndarray) -> np.ndarray:
    """Z-scores over one run's episodes (augmented transfer: one scale across networks and targets)."""
    if len(rewards) < 2:
        return np.zeros(len(rewards))
    sd = rewards.std()
    return (rewards - rewards.mean()) / (sd if sd > 1e-9 else 1.0)


def state_at(t: int, infos: list[GroupInfo], actions: np.ndarray, target: float, est: LatencyEstimate,
             a_min: float, widest: int) -> np.ndarray:
    """State t of an episode whose actions so far are ``actions[:t]`` (later entries are ignored)."""
    T, info = len(infos), infos[t]
    so_far = np.concatenate([actions[:t], np.zeros(T - t)])
    rest_min = np.concatenate([actions[:t], np.full(T - t, a_min)])
    return np.array([t / max(1, T - 1), math.log2(max(1, info.full)) / 12, info.full / widest, float(info.depthwise),
                     float(info.block), info.importance, actions[t - 1] if t else 1.0,
                     float(actions[:t].mean()) if t else 1.0, est.ratio(so_far) / target,
                     est.ratio(rest_min) / target, target])


def states(infos: list[GroupInfo], actions: np.ndarray, target: float, est: LatencyEstimate | None,
           a_min: float) -> np.ndarray:
    """The T states of an episode whose actions (keep fractions) were ``actions`` (T): state t sees the
    actions before t only. ``est`` None: the channel-share prior (history episodes of other models)."""
    est = est or LatencyEstimate(infos)
    widest = max(i.full for i in infos)
    return np.stack([state_at(t, infos, actions, target, est, a_min, widest) for t in range(len(infos))])


@register("rl")
class RLAgent(BaseAgent):
    """DDPG over per-group keep fractions, clamped by a latency estimate; see the module docstring.

    Options: ``a_min`` (smallest keep fraction an action maps to), ``warmup`` (random episodes before the
    actor is used; 0 with history), ``updates`` (gradient steps per told episode), ``assist`` (roll-outs
    per proposal, the critic picks one; 1 = off), ``prior`` (history rows, see ``edgeprune.history``),
    ``pretrain`` (gradient steps on the history before the first proposal), ``clamp`` ("sequential": AMC's,
    each action limited so that the groups after it at a_min could still meet the target; "scale": every
    keep fraction moved towards a_min by one factor until the estimate meets it — the actor's output is
    then not the action the critic judges, and it learnt less: best 0.58–0.65 against 0.67 on the toy).
    """

    name = "rl"

    def __init__(self, space: SearchSpace, *, budget: int, seed: int, latency_ratio: float, a_min: float = 0.1,
                 warmup: int | None = None, updates: int = 30, assist: int = 4, prior: list | None = None,
                 pretrain: int = 300, clamp: str = "sequential"):
        if clamp not in ("scale", "sequential"):
            raise ValueError(f"clamp must be 'scale' or 'sequential', not {clamp!r}")
        self.clamp = clamp
        self.space, self.seed, self.target, self.a_min = space, seed, latency_ratio, a_min
        self.infos = group_infos(space)
        self.est = LatencyEstimate(self.infos)
        self.agent = DDPG(STATE_DIM, seed=seed)
        self.updates, self.assist = updates, max(1, assist)
        self.S: list[np.ndarray] = []  # this run's states, actions, raw rewards (per episode)
        self.A: list[np.ndarray] = []
        self.raw: list[float] = []
        self.told = 0
        self.prior_S, self.prior_A, self.prior_R = self._history(prior or [])
        self.prior_runs = len({r.get("run_id") for r in (prior or [])})
        self.prior_used = len(prior or [])
        if len(self.prior_S):
            self.agent.update(self.prior_S, self.prior_A, self.prior_R, pretrain)
        self.warmup = (0 if len(self.prior_S) else min(10, max(2, budget // 5))) if warmup is None else warmup
        # With history the pre-trained actor starts near good strategies: explore around it less.
        self.sigma0, self.decay = (0.25 if len(self.prior_S) else 0.5), 0.95

    # -- history -------------------------------------------------------------------------------------------
    def _history(self, rows: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Transitions of the history's feasible episodes, rewards normalised per source run.

        Only episodes that met their run's target: this agent's own episodes are clamped to the target, so
        the returns it needs to learn are those of feasible strategies; another agent's infeasible ones
        would teach the critic, through their penalty, that every channel cut is good."""
        by_run: dict[str, list] = {}
        for r in rows:
            if (r.get("keep") and r.get("groups") and r.get("latency_target")
                    and r.get("ratio", math.inf) <= r["latency_target"]):
                by_run.setdefault(str(r.get("run_id")), []).append(r)
        S, A, R = [], [], []
        for run_rows in by_run.values():
            rewards = normalised(np.asarray([reward(r["accuracy"], r["ratio"], r["latency_target"])
                                             for r in run_rows]))
            for r, z in zip(run_rows, rewards):
                infos = [GroupInfo.from_list(g) for g in r["groups"]]
                a = np.clip(np.asarray(r["keep"], dtype=float), self.a_min, 1.0)
                if len(a) != len(infos):
                    continue
                S.append(states(infos, a, r["latency_target"], None, self.a_min))
                A.append((a - self.a_min) / (1 - self.a_min))
                R.append(np.full(len(a), z))
        if not S:
            return np.empty((0, STATE_DIM)), np.empty(0), np.empty(0)
        return np.concatenate(S), np.concatenate(A), np.concatenate(R)

    # -- proposals -------------------------------------------------------------------------------------------
    def _sigma(self) -> float:
        return self.sigma0 * self.decay ** max(0, self.told - self.warmup)

    def _rollout(self, rng: np.random.Generator, explore: bool) -> tuple[np.ndarray, float]:
        """One episode: keep fractions (T) and the critic's mean estimate of its return."""
        T = len(self.infos)
        keep = np.zeros(T)
        random_episode = explore and self.told < self.warmup
        widest = max(i.full for i in self.infos)
        for t in range(T):
            s = state_at(t, self.infos, keep, self.target, self.est, self.a_min, widest)
            if random_episode:
                u = rng.uniform()
            else:
                mu = self.agent.act(s)
                u = _truncated_normal(rng, mu, self._sigma()) if explore else mu
            a = self.a_min + (1 - self.a_min) * u
            if self.clamp == "sequential":
                # AMC's clamp: with every later group at a_min, the estimate must still meet the target.
                rest = np.concatenate([keep[:t], [0.0], np.full(T - t - 1, self.a_min)])
                b = self.est.slope(t)
                if b > 1e-9:
                    a = min(a, max(self.a_min, (self.target - self.est.ratio(rest)) / b))
            keep[t] = a
        if self.clamp == "scale":
            keep = self._scaled(keep)
        if len(self.S) or len(self.prior_S):
            S = states(self.infos, keep, self.target, self.est, self.a_min)
            return keep, float(self.agent.q(S, (keep - self.a_min) / (1 - self.a_min)).mean())
        return keep, 0.0

    def _scaled(self, keep: np.ndarray) -> np.ndarray:
        """``keep`` moved towards a_min in every group by one factor until the estimate meets the target
        (unchanged if it already does): the actor's preferences between groups are kept, where AMC's
        sequential clamp cuts whatever groups come last."""
        lo = np.full(len(keep), self.a_min)
        r_keep, r_lo = self.est.ratio(keep), self.est.ratio(lo)
        if r_keep <= self.target or r_keep <= r_lo:
            return keep
        alpha = float(np.clip((self.target - r_lo) / (r_keep - r_lo), 0.0, 1.0))
        return lo + alpha * (keep - lo)

    def ask(self) -> Candidate | None:
        # Keyed by (seed, number told): a resumed run told the stored results continues the sequence.
        rng = np.random.default_rng([self.seed, self.told, 17])
        rolls = [self._rollout(rng, explore=True) for _ in range(self.assist if self.told >= self.warmup else 1)]
        keep, q = max(rolls, key=lambda kq: kq[1])
        phase = "warm-up" if self.told < self.warmup else f"σ={self._sigma():.3f}"
        return self.space.candidate(keep.tolist(), origin=f"rl episode {self.told} ({phase}, Q={q:.2f})")

    def greedy(self) -> Candidate:
        """The actor's own candidate, without exploration (what it has learnt)."""
        keep, _ = self._rollout(np.random.default_rng(0), explore=False)
        return self.space.candidate(keep.tolist(), origin="rl greedy")

    def tell(self, candidate: Candidate, result: EvalResult) -> None:
        keep = np.clip(self._keep_of(candidate), self.a_min, 1.0)
        ratio = float(result.measurement.ratio_to_baseline)
        self.S.append(states(self.infos, keep, self.target, self.est, self.a_min))
        self.A.append((keep - self.a_min) / (1 - self.a_min))
        self.raw.append(reward(result.accuracy, ratio, self.target))
        self.est.add(self._keep_of(candidate), ratio)
        self.told += 1
        if self.told >= min(self.warmup, 2) and len(self.raw) >= 2:
            z = normalised(np.asarray(self.raw))
            S = np.concatenate(self.S + ([self.prior_S] if len(self.prior_S) else []))
            A = np.concatenate(self.A + ([self.prior_A] if len(self.prior_A) else []))
            R = np.concatenate([np.full(len(a), v) for a, v in zip(self.A, z)]
                               + ([self.prior_R] if len(self.prior_R) else []))
            self.agent.update(S, A, R, self.updates)

    def tell_screened(self, candidate: Candidate, predicted_ratio: float) -> None:
        """A proposal the latency screen rejected: not measured, so no reward; the sequence moves on."""
        self.told += 1

    def _keep_of(self, candidate: Candidate) -> np.ndarray:
        return np.asarray(self.space.keep_of(candidate), dtype=float)

    def describe(self) -> dict:
        return {"a_min": self.a_min, "clamp": self.clamp, "warmup": self.warmup, "updates": self.updates, "assist": self.assist,
                "history": {"rows": self.prior_used, "runs": self.prior_runs, "transitions": int(len(self.prior_S))}}


def _truncated_normal(rng: np.random.Generator, mu: float, sigma: float) -> float:
    """A draw of N(mu, sigma²) truncated to [0, 1] (rejection, then clipping after 20 tries)."""
    for _ in range(20):
        v = rng.normal(mu, sigma)
        if 0.0 <= v <= 1.0:
            return float(v)
    return float(np.clip(mu, 0.0, 1.0))
