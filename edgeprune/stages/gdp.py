"""Stage 3 with ``--method gdp``: gates trained with a latency-weighted polarisation (``edgeprune.gdp``)
instead of a search; the pruned model then goes to fine-tuning and the usual final checks."""

from __future__ import annotations

import numpy as np

from edgeprune.gdp import GdpConfig, GdpResult, run_gdp
from edgeprune.search.agents.random import random_keep
from edgeprune.stages.baseline import check_reachable
from edgeprune.stages.calibrate import run_predictor

FIT_SAMPLES = 6  # random candidates measured to fit the predictor to this run's conditions


def gdp_stage(inputs, analysed, evaluator, baseline, run_id: str, rep) -> GdpResult:
    """Fit the predictor on measured candidates (the smallest, ``FIT_SAMPLES`` random ones and the baseline:
    λ is steered by predicted ratios, so they must hold here), then train, fold and prune; the training
    state is checkpointed per epoch beside the run store (``OUT/<run id>.gdp.pt``), so ``--resume``
    continues it."""
    cfg = inputs.cfg
    predictor = run_predictor(inputs, analysed, evaluator.meter, rep, why="--method gdp")
    ref = baseline.reference.p10_ms
    smallest = analysed.smallest()
    samples = [(predictor.full_widths(), ref),
               (smallest.widths, check_reachable(evaluator, smallest, baseline.ratio, rep).ratio_to_baseline * ref)]
    rng = np.random.default_rng(cfg.seed)
    for _ in range(FIT_SAMPLES):
        cand = analysed.space.candidate(random_keep(rng, analysed.space.dim)[1].tolist())
        samples.append((cand.widths, evaluator.remeasure(cand, rounds=None).ratio_to_baseline * ref))
    predictor.fit(samples)
    rep.info(f"GDP: latency predictor fitted on {len(samples)} measured models: {predictor.formula()}")
    gcfg = GdpConfig(epochs=cfg.gdp_epochs, cost=cfg.gdp_cost, lr=cfg.finetune_lr, seed=cfg.seed)
    rep.info(f"GDP: {gcfg.epochs} epochs of gated training, costs by {gcfg.cost}, target "
             f"{baseline.ratio:.3f}x predicted")
    result = run_gdp(inputs.loaded.model, inputs.shape, analysed.analysis, inputs.data, predictor, baseline.ratio,
                     gcfg, align=inputs.plan.profile.round_to, calib=inputs.data.calib[0][: cfg.calib_samples],
                     checkpoint=inputs.out_root / f"{run_id}.gdp.pt", rep=rep, device=inputs.train_device)
    result.fit = predictor.to_dict()
    rep.info(f"GDP: widths {list(result.widths)} predicted {result.predicted_ratio:.3f}x; gated model accuracy "
             f"{result.gated_accuracy:.4f}; folded and pruned model equals it (max |diff| {result.max_fold_error:.1e})")
    return result
