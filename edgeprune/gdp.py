"""``--method gdp``: train gates with differentiable polarization, weighted by each channel's latency cost on
this target, until the predicted latency meets the target; then fold the gates, remove the zero channels and
check the pruned model equals the gated one (paper (c), made latency-aware).

Loss: cross-entropy + λ · Σ_c w_c (t|g_c| − |g_c − ḡ|) (``model.gates.polarization``). ``w_c`` is the
cost of channel ``c``'s group per channel: with ``cost="latency"`` the predicted latency one channel of
that group saves on this target (``latency.predictor``: the kernel sum with ``round_to`` fewer channels,
divided by ``round_to``); with ``cost="macs"`` the MACs it saves (the FLOPs-weighted GDP of the paper).
Costs are normalised to mean 1. After every step the widths the gates give now (channels with g >
``threshold``, rounded up to an allowed width) are predicted: while over the target λ grows (×``lam_step``
per ``check_every`` steps); the step they meet it, the structure is frozen (those gates held at 0, λ = 0)
and the remaining steps train the weights of that structure. ε of ``g = θ²/(θ²+ε)`` stays at ``eps_start`` while the gates
move (θ starts at 3√ε, g ≈ 0.9, where the gradient through g is large — at θ ≫ √ε it vanishes and the gates
freeze), then is annealed geometrically to ``eps_end``, so the gates left polarise to ~1 and the rest to 0.

At the end the widths are the gates' (greedily cut further, lowest gate per predicted latency saved first,
until the predicted ratio meets the target); the channels beyond them get gate 0, the gates are folded
into the BNs and the zero channels removed. The pruned model must equal the gated one on calibration
images (``ATOL``/``RTOL`` of ``verify``) or the run stops (VerificationError): nothing is fine-tuned from
a model that is not what was trained. Training is checkpointed each epoch and resumes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import InfeasibleTargetError, VerificationError
from edgeprune.model.finetune import augment
from edgeprune.model.evaluate import moves, on_device
from edgeprune.model.gates import Gates, fold, gate_sites, polarization
from edgeprune.model.prune import copy_model, prune
from edgeprune.verify import ATOL, RTOL


@dataclass(frozen=True)
class GdpConfig:
    epochs: int = 4
    cost: str = "latency"  # or "macs"
    batch_size: int = 128
    lr: float = 0.02  # weights: SGD, cosine
    gate_lr: float = 0.01  # gates: SGD with momentum (Adam's per-parameter scaling would erase the costs)
    lam: float = 0.02  # initial regulariser strength
    lam_step: float = 1.5  # λ multiplied / divided by this at each check
    t: float = 1.2  # polarisation: t·|g| − |g − ḡ|; t > 1 keeps pushing gates above the mean too
    eps_start: float = 0.01  # held for the first ``anneal_from`` of the steps (gates can still move) ...
    eps_end: float = 1e-4  # ... then annealed geometrically to this (survivors go to ~1, the rest to 0)
    anneal_from: float = 0.75
    theta_init: float = 3.0  # θ starts at theta_init·√eps_start: g ≈ 0.9, where dg/dθ is still large
    threshold: float = 0.05  # a gate above it keeps its channel
    check_every: int = 10
    grad_clip: float = 1.0  # per gate: |dL/dθ| at most this (a large λ must not throw θ across 0 and back)
    seed: int = 0

    def __post_init__(self):
        if self.cost not in ("latency", "macs"):
            raise ValueError(f"GDP cost must be 'latency' or 'macs', not {self.cost!r}")


@dataclass
class GdpResult:
    """The pruned model (folded, zero channels removed), its pruning history and widths; the gated model's
    accuracy on the validation split before folding (zeroed gates forced), the equivalence check, the
    predicted ratio of the widths, and the λ / predicted-ratio trace of training."""

    pruned: nn.Module
    history: list
    widths: tuple[int, ...]
    gated_accuracy: float
    max_fold_error: float
    predicted_ratio: float
    trace: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    polarised: float = 0.0  # fraction of gates < threshold or > 0.5 at the end
    fit: dict = field(default_factory=dict)  # the latency predictor's fit it was steered by

    def describe(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("pruned", "history")}
        d["widths"] = list(self.widths)
        return d


def channel_costs(predictor, analysis, sites, cost: str, align: int) -> list[torch.Tensor]:
    """Per gated channel: what halving its group saves (predicted ms, or MACs), per channel removed,
    normalised to mean 1 over all gated channels. Half, not one ``align`` step: ONNX Runtime pads channels
    to its vector block (16 with AVX-512), so 64 → 56 channels can save nothing while 64 → 32 saves half."""
    full = list(predictor.full_widths())
    per = []
    for s in sites:
        less = list(full)
        less[s.group] = analysis.groups[s.group].width(0.5)
        removed = max(1, full[s.group] - less[s.group])
        if cost == "latency":
            saved = predictor.kernel_sum(full) - predictor.kernel_sum(less)
        else:
            saved = (sum(k.macs for k in predictor.kmap.kernels(full))
                     - sum(k.macs for k in predictor.kmap.kernels(less)))
        per.append(max(float(saved) / removed, 1e-12))
    mean = float(np.mean([c for c, s in zip(per, sites) for _ in range(s.full)]))
    return [torch.full((s.full,), c / mean) for c, s in zip(per, sites)]


def _protect(values, costs, keep) -> list[torch.Tensor]:
    """The costs with the ``keep`` highest gates of each group set to 0: the space never goes below a
    group's smallest width, and a group whose gates all died would cut the network in two."""
    out = []
    for v, c, k in zip(values, costs, keep):
        c = c.clone()
        c[torch.topk(v.detach(), k).indices] = 0.0
        out.append(c)
    return out


def _allowed(choices, count: int) -> int:
    return next((c for c in choices if c >= count), choices[-1])


def gate_widths(gates: Gates, analysis, threshold: float) -> list[int]:
    """Widths the gates give: channels with g > threshold, rounded up to an allowed width; ungated groups full."""
    widths = [g.full for g in analysis.groups]
    for s, v in zip(gates.sites, gates.values()):
        widths[s.group] = _allowed(analysis.groups[s.group].choices, int((v > threshold).sum()))
    return widths


def cut_to_target(widths, gates: Gates, analysis, predictor, target: float) -> list[int]:
    """Cut the widths further, one allowed step at a time, where the step's lowest gates cost least per
    predicted latency saved, until the predicted ratio meets ``target`` (or nothing is left to cut)."""
    widths = list(widths)
    blocks = [1] * len(predictor.kmap.blocks)
    values = {s.group: torch.sort(v.detach()).values for s, v in zip(gates.sites, gates.values())}
    while predictor.predict_ratio(widths + blocks) > target:
        best, best_score = None, math.inf
        now_ms = predictor.predict_ms(widths + blocks)
        for gi, v in values.items():
            choices = analysis.groups[gi].choices
            i = choices.index(widths[gi]) if widths[gi] in choices else len(choices) - 1
            if i == 0:
                continue
            trial = list(widths)
            trial[gi] = choices[i - 1]
            saved = now_ms - predictor.predict_ms(trial + blocks)
            n = len(v)  # ascending: the kept channels are the last widths[gi]; the step removes the lowest of them
            lost = float(v[n - widths[gi] : n - trial[gi]].sum())
            score = lost / max(saved, 1e-9)
            if score < best_score:
                best, best_score = trial, score
        if best is None:
            break
        widths = best
    return widths


def run_gdp(model: nn.Module, input_shape: tuple[int, ...], analysis, data, predictor, target: float,
            cfg: GdpConfig, *, align: int = 8, calib: torch.Tensor | None = None, checkpoint: Path | None = None,
            rep=None, device: str = "cpu") -> GdpResult:
    """Train gates on ``data.train`` for ``cfg.epochs`` (see the module docstring) and return the pruned,
    folded model. ``target``: latency ratio to the baseline; ``predictor``: this model's latency predictor;
    ``checkpoint``: a file the training state is saved to after each epoch and resumed from; ``device``: where
    the gated training runs ("cuda", or the CPU)."""
    sites, skipped = gate_sites(model, input_shape, analysis)
    if not sites:
        raise InfeasibleTargetError("GDP: no channel group can be gated (" + "; ".join(
            f"{n}: {why}" for n, why in list(skipped.items())[:3]) + ")")
    if rep and skipped:
        rep.warn(f"GDP keeps {len(skipped)} groups whole: " + "; ".join(f"{n}: {w}" for n, w in list(skipped.items())[:3]))
    work = copy_model(model)
    gates = Gates(work, sites, eps=cfg.eps_start, init=cfg.theta_init * math.sqrt(cfg.eps_start))
    costs = channel_costs(predictor, analysis, sites, cfg.cost, align)
    # Gated training runs on ``device`` (model, gates, costs and batches there; batches augmented on the CPU
    # with the seeded generator first, as on the CPU path); folding and pruning run on the CPU after it.
    moved = device if moves(device) else None  # None: the CPU, nothing to move
    with on_device(device, work, gates):
        state = _train_gates(work, gates, [c.to(moved) for c in costs] if moved else costs, analysis, data,
                             predictor, target, cfg, checkpoint, rep, moved)
    gates.forced = [f.cpu() if f is not None else None for f in gates.forced]
    return _finish(work, gates, skipped, state, input_shape, analysis, data, predictor, target, cfg, calib, device)


def _train_gates(work, gates, costs, analysis, data, predictor, target, cfg: GdpConfig, checkpoint, rep,
                 device) -> dict:
    """The gated training loop of ``run_gdp`` (resumed from ``checkpoint``); returns its state (epoch, step,
    λ, trace, the step the structure was frozen)."""
    opt_w = torch.optim.SGD(work.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    opt_g = torch.optim.SGD(gates.parameters(), lr=cfg.gate_lr, momentum=0.9)
    x, y = data.train
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = max(1, cfg.epochs * steps_per_epoch)
    state = {"epoch": 0, "step": 0, "lam": cfg.lam, "trace": [], "frozen": None}
    if checkpoint is not None and checkpoint.is_file():
        # Loaded onto the CPU (a run trained on a GPU resumes anywhere); load_state_dict copies into the
        # parameters where they are, and the optimisers cast their state to their parameters' device.
        saved = torch.load(checkpoint, weights_only=True, map_location="cpu")
        work.load_state_dict(saved["model"])
        gates.load_state_dict(saved["gates"])
        opt_w.load_state_dict(saved["opt_w"])
        opt_g.load_state_dict(saved["opt_g"])
        state = {k: saved[k] for k in ("epoch", "step", "lam")} | {"trace": list(saved["trace"]),
                                                                  "frozen": saved.get("frozen")}
        if state["frozen"] is not None:
            gates.forced = list(saved["forced"])
        if rep:
            rep.info(f"GDP: resumed after epoch {state['epoch']} of {cfg.epochs} from {checkpoint}")
    blocks = [1] * len(predictor.kmap.blocks)
    keep = [analysis.groups[s.group].choices[0] for s in gates.sites]
    g = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(state["epoch"], cfg.epochs):
        # The data order of each epoch depends only on (seed, epoch): a resumed run sees the same batches.
        g.manual_seed(cfg.seed * 1000 + epoch)
        work.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), cfg.batch_size):
            step = state["step"]
            frac = min(1.0, step / total)
            late = max(0.0, (frac - cfg.anneal_from) / (1 - cfg.anneal_from))
            gates.eps = cfg.eps_start * (cfg.eps_end / cfg.eps_start) ** late
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))
            for group in opt_w.param_groups:
                group["lr"] = lr
            idx = perm[i : i + cfg.batch_size]
            xb, yb = augment(x[idx], g), y[idx]
            if device is not None:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(work(xb), yb)
            values = gates.values()
            reg = polarization(values, _protect(values, costs, keep), cfg.t)
            total_loss = loss + state["lam"] * reg
            opt_w.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)
            total_loss.backward()
            # BNs after a shrinking gate rescale its channel, so upstream gradients grow as 1/g: clip them.
            torch.nn.utils.clip_grad_norm_(work.parameters(), 5.0)
            for t in gates.theta:
                t.grad.clamp_(-cfg.grad_clip, cfg.grad_clip)
            opt_w.step()
            opt_g.step()
            with torch.no_grad():  # θ ≥ 0: a gate driven to 0 stays exactly 0 (dg/dθ = 0 there)
                for t in gates.theta:
                    t.clamp_(min=0.0)
            state["step"] = step + 1
            if state["frozen"] is None:
                # Every step (a prediction costs microseconds): polarisation cascades once gates start to
                # fall, and a dead gate never comes back, so the structure is frozen the step it meets the
                # target; the rest of the training trains the weights of that structure.
                with torch.no_grad():
                    r = predictor.predict_ratio(gate_widths(gates, analysis, cfg.threshold) + blocks)
                    state["lam"] *= cfg.lam_step ** (1 / cfg.check_every) if r > target else 1.0
                    if r <= target:
                        state["frozen"] = state["step"]
                        for k, v in enumerate(gates.values()):
                            gates.forced[k] = v <= cfg.threshold
                        state["lam"] = 0.0
                if state["step"] % cfg.check_every == 0 or state["frozen"]:
                    state["trace"].append([state["step"], float(state["lam"]), float(r), float(loss.item())])
        state["epoch"] = epoch + 1
        if rep:
            last = state["trace"][-1] if state["trace"] else [0, state["lam"], float("nan"), float("nan")]
            rep.info(f"GDP epoch {epoch + 1}/{cfg.epochs}: predicted {last[2]:.3f}x (target {target:.3f}x), "
                     f"λ {last[1]:.3g}, loss {last[3]:.3f}")
        if checkpoint is not None:
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"model": work.state_dict(), "gates": gates.state_dict(), "opt_w": opt_w.state_dict(),
                        "opt_g": opt_g.state_dict(), **{k: state[k] for k in ("epoch", "step", "lam")},
                        "trace": state["trace"], "frozen": state["frozen"], "forced": gates.forced}, tmp)
            tmp.replace(checkpoint)
    return state


def _finish(work, gates, skipped, state, input_shape, analysis, data, predictor, target, cfg: GdpConfig, calib,
            device) -> GdpResult:
    """Widths from the trained gates, cut to the target; fold, prune and check the pruned model equals the
    gated one (on the CPU)."""
    from edgeprune.model.evaluate import accuracy

    sites = gates.sites
    blocks = [1] * len(predictor.kmap.blocks)
    work.eval()
    with torch.no_grad():
        widths = cut_to_target(gate_widths(gates, analysis, cfg.threshold), gates, analysis, predictor, target)
        values = gates.values()
        polarised = float(torch.cat([(v < cfg.threshold) | (v > 0.5) for v in values]).float().mean())
        # Force 0 on every channel beyond the widths (the lowest gates); the model is then what is pruned.
        for k, (s, v) in enumerate(zip(sites, values)):
            drop = torch.zeros(s.full, dtype=torch.bool)  # v already holds the frozen zeros
            drop[torch.argsort(v)[: s.full - widths[s.group]]] = True
            gates.forced[k] = drop
        scores = {s.name: gates.value(k).detach().clone() for k, s in enumerate(sites)}
    with on_device(device, gates):  # the hooks' gates must be where the model runs
        gated_acc = accuracy(work, *data.val, device=device)
    probe = (calib if calib is not None else data.calib[0])[:32]
    with torch.no_grad():
        ref = work(probe)
    fold(work, gates)
    pruned, history = prune(work, input_shape, analysis, tuple(widths) + tuple(blocks), scores=scores)
    with torch.no_grad():
        out = pruned.eval()(probe)
    err = float((out - ref).abs().max())
    if not torch.allclose(out, ref, atol=ATOL, rtol=RTOL):
        raise VerificationError(f"GDP: the pruned model differs from the gated one it was folded from (max |Δ| "
                                f"{err:.2e} > {ATOL} + {RTOL}·|ref|); nothing is fine-tuned or written")
    return GdpResult(pruned, history, tuple(widths) + tuple(blocks), gated_acc, err,
                     predictor.predict_ratio(list(widths) + blocks), state["trace"], skipped, polarised)
