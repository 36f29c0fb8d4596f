"""Stage 3 with ``--method gdp``: gates trained with a latency-weighted polarisation (``edgeprune.gdp``)
instead of a search; the pruned model then goes to fine-tuning and the usual final checks."""

from __future__ import annotations

from edgeprune.gdp import GdpConfig, GdpResult, run_gdp
from edgeprune.stages.calibrate import run_predictor


def gdp_stage(inputs, analysed, meter, baseline, run_id: str, rep) -> GdpResult:
    """Train, fold and prune; the training state is checkpointed per epoch beside the run store
    (``OUT/<run id>.gdp.pt``), so ``--resume`` continues it."""
    cfg = inputs.cfg
    predictor = run_predictor(inputs, analysed, meter, rep, why="--method gdp")
    # The fit a + b x kernel sum: the baseline is a sample; a stored calibration fit is used when there is one.
    gcfg = GdpConfig(epochs=cfg.gdp_epochs, cost=cfg.gdp_cost, lr=cfg.finetune_lr, seed=cfg.seed)
    rep.info(f"GDP: {gcfg.epochs} epochs of gated training, costs by {gcfg.cost}, target "
             f"{baseline.ratio:.3f}x predicted")
    result = run_gdp(inputs.loaded.model, inputs.shape, analysed.analysis, inputs.data, predictor, baseline.ratio,
                     gcfg, align=inputs.plan.profile.round_to, calib=inputs.data.calib[0][: cfg.calib_samples],
                     checkpoint=inputs.out_root / f"{run_id}.gdp.pt", rep=rep, device=inputs.train_device)
    rep.info(f"GDP: widths {list(result.widths)} predicted {result.predicted_ratio:.3f}x; gated model accuracy "
             f"{result.gated_accuracy:.4f}; folded and pruned model equals it (max |diff| {result.max_fold_error:.1e})")
    return result
