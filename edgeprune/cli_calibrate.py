"""``edgeprune calibrate``: build the latency predictor's kernel table and fit for a model on a target."""

from __future__ import annotations

import json

import click

from edgeprune.cli_options import _model_input_options, _shape


@click.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="host", show_default=True, help="Target profile name or TOML path.")
@click.option("--data", default="shapes", show_default=True,
              help="Built-in (shapes, digits) or a path: its calibration images feed export checks.")
@click.option("--measure-on", default=None, metavar="PROFILE",
              help="Build a stand-in table on a local profile (its folder and every number say so).")
@click.option("--dir", "root", default=None, type=click.Path(file_okay=False),
              help="Calibration folder (default: $EDGEPRUNE_CALIBRATION, else ./calibration).")
@click.option("--grid", default=9, show_default=True, type=click.IntRange(2, 64),
              help="Channel counts per axis of each layer's kernel grid.")
@click.option("--fit-samples", default=12, show_default=True, type=click.IntRange(1, 1000),
              help="Whole candidates measured to fit the predictor.")
@click.option("--holdout", default=30, show_default=True, type=click.IntRange(1, 1000),
              help="Whole candidates measured to check its accuracy (not used by the fit).")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Measurements per whole candidate (the median ratio counts).")
@click.option("--depth/--no-depth", default=False, help="Include keep/drop of residual blocks in the space.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@_model_input_options
def calibrate_cmd(model, target, data, measure_on, root, grid, fit_samples, holdout, repeats, depth, as_json,
                  arch=None, input_shape=None, trust_model_code=False, normalize=None, arch_kwargs=None,
                  train_device="auto") -> None:
    """Measure the kernels MODEL's layers use on TARGET (resumable; shared across models), fit the
    latency predictor to measured candidates, and report its accuracy on held-back ones."""
    import tempfile

    from edgeprune.config import CompileConfig
    from edgeprune.progress import RichReporter
    from edgeprune.stages.calibrate import calibrate

    with tempfile.TemporaryDirectory(prefix="edgeprune-calibrate-") as out:
        cfg = CompileConfig(model=model, target=target, data=data, measure_on=measure_on, arch=arch,
                            normalize=normalize, input_shape=_shape(input_shape), trust_model_code=trust_model_code,
                            out=out, arch_kwargs=arch_kwargs, train_device=train_device, depth=depth)
        c = calibrate(cfg, root=root, grid=grid, fit_samples=fit_samples, holdout=holdout, repeats=repeats,
                      rep=RichReporter())
    if as_json:
        click.echo(json.dumps(c.to_dict(), indent=2))
        return
    click.echo(f"{c.model} on {c.target} ({c.where}, {c.runtime}): {c.kernels_measured} kernels measured now, "
               f"{c.kernels_in_table} in {c.table}")
    loo = ", ".join(f"{f} {e:.1%}" for f, e in (c.fit.get("loo_error") or {}).items())
    click.echo(f"fit: latency = {c.fit['formula']} ({c.fit_file})"
               + (f"; leave-one-out error {loo}" if loo else ""))
    for label, acc in (("kernel sum alone", c.kernel_only), ("fitted", c.fitted)):
        click.echo(f"{label:17s}: {acc['within']:.0%} of {acc['n']} held-back candidates within "
                   f"±{acc['tolerance']:.0%} of the measured ratio (median error {acc['median_error']:.1%}, "
                   f"max {acc['max_error']:.1%})")
