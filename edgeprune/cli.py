"""The command line: each command parses, calls one library function, prints. The ``device``
commands live in ``cli_device.py``."""

from __future__ import annotations

import json
import shlex
import sys

import click

from edgeprune.cli_calibrate import calibrate_cmd
from edgeprune.cli_device import device_group
from edgeprune.cli_history import history_group
from edgeprune.cli_tuning import tuning_group
from edgeprune.cli_options import _fraction, _model_input_options, _shape
from edgeprune.errors import EdgePruneError


@click.group()
@click.version_option(package_name="edgeprune")
def cli() -> None:
    """Shrink a trained CNN so it runs measurably faster on a target device."""


@cli.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="host", show_default=True, help="Target profile name or TOML path.")
@click.option("--latency-target", default="0.5x", show_default=True, help="Fraction of baseline ('0.5x') or ms ('3.5ms').")
@click.option("--out", default="dist", show_default=True, help="Output folder; artifacts go to OUT/<model name>/.")
@click.option("--data", default="shapes", show_default=True, help="Built-in (shapes, digits) or a path.")
@click.option("--agent", default="bo", show_default=True, help="Search agent: bo, bo-plain, bo-flops, rl, uniform, random.")
@click.option("--budget", default=40, show_default=True, type=int, help="Number of distinct candidate evaluations.")
@click.option("--clusters", default=None, type=int, help="bo: clusters in the first phase (default about sqrt(groups)).")
@click.option("--cluster-by", type=click.Choice(["importance", "sensitivity"]), default="importance", show_default=True,
              help="bo: cluster groups by their channel-importance distributions (the paper's) or by the accuracy "
                   "each loses when cut alone (one evaluation per group before the search).")
@click.option("--batch", default=1, show_default=True, type=int, help="bo: candidates proposed at once.")
@click.option("--seed", default=0, show_default=True, type=int)
@_model_input_options
@click.option("--search-bn-samples", default=100, show_default=True, type=int,
              help="Calibration images that re-estimate BN statistics for each search candidate.")
@click.option("--early-stop/--no-early-stop", default=True, show_default=True,
              help="Stop a candidate's accuracy early once it is clearly below the best feasible one so far.")
@click.option("--depth/--no-depth", default=False, show_default=True,
              help="Also search which residual blocks (identity shortcut) to drop whole, beside the widths.")
@click.option("--method", type=click.Choice(["search", "gdp"]), default="search", show_default=True,
              help="search: an agent chooses widths by measuring candidates; gdp: gates trained with a "
                   "polarising regulariser weighted by each channel's predicted latency on this target.")
@click.option("--gdp-epochs", default=4, show_default=True, type=int, help="GDP: epochs of gated training.")
@click.option("--gdp-cost", type=click.Choice(["latency", "macs"]), default="latency", show_default=True,
              help="GDP: weight each channel's penalty by its predicted latency on the target, or by its MACs.")
@click.option("--latency-screen", default=None, metavar="MARGIN", callback=_fraction,
              help="Skip proposals the latency predictor puts above the target by more than MARGIN (0.15 or 15%) "
                   "without evaluating them; kernel tables are measured on first use (edgeprune calibrate).")
@click.option("--calibration-dir", default=None, type=click.Path(file_okay=False),
              help="Kernel tables of the latency predictor (default: $EDGEPRUNE_CALIBRATION, else ./calibration).")
@click.option("--history", default="auto", show_default=True, metavar="off|auto|PATH",
              help="Evaluations of earlier runs the rl and bo agents start from, and where this run's are added "
                   "(auto: $EDGEPRUNE_HISTORY, else ~/.cache/edgeprune/history.sqlite).")
@click.option("--finetune-epochs", default=4, show_default=True, type=int)
@click.option("--distill", is_flag=True, help="Fine-tune with knowledge distillation from the original model.")
@click.option("--resume", default=None, metavar="RUN", help="Continue run RUN from OUT/runs.sqlite.")
@click.option("--measure-on", default=None, metavar="PROFILE",
              help="Measure on this local profile (e.g. host) as a stand-in for a target that cannot be reached; "
                   "every latency is labelled as the stand-in's.")
@click.option("--tracker", default=None, metavar="HOST:PORT", help="TVM RPC tracker whose devices measure (overrides the profile).")
@click.option("--device-key", default=None, metavar="KEY", help="Device key at the tracker (overrides the profile).")
@click.option("--verify-device", default=None, metavar="KEY",
              help="Also run the TVM library on a device of KEY (may be emulated) and compare its outputs.")
@click.option("--tune-trials", default=0, show_default=True, type=int,
              help="MetaSchedule trials to tune the final TVM library (on a target that is this machine).")
@click.option("--accept-closest", is_flag=True,
              help="Deploy the closest candidate when none re-measures under the latency target (else exit 3).")
@click.option("--overwrite", is_flag=True, help="Let --resume of a finished run replace its artifacts.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also quantize the final model (ONNX Runtime static INT8, QDQ); deployed when faster and "
                   "within --int8-max-drop accuracy.")
@click.option("--quantize-in-search", is_flag=True,
              help="With --quantize int8: measure every candidate quantized, so the deployed INT8 form meets the "
                   "latency target.")
@click.option("--int8-max-drop", default="1%", show_default=True, callback=_fraction,
              help="Accuracy the INT8 model may lose and still be deployed (0.01 or 1%).")
@click.option("--max-latency-ms", type=float, default=None,
              help="CI gate: the final model's median latency must be at most this (else exit 3, nothing written).")
@click.option("--min-accuracy", default=None, callback=_fraction,
              help="CI gate: final validation accuracy at least this (0.93 or 93%).")
@click.option("--max-accuracy-drop", default=None, callback=_fraction,
              help="CI gate: baseline minus final accuracy at most this (0.02 or 2% = 2 points).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report summary (or, on failure, an error object) as JSON on stdout, nothing else.")
@click.pass_context
def compile_cmd(ctx, model, as_json, **options) -> None:
    """Prune MODEL to meet a latency target measured on TARGET; write verified artifacts.

    Options not given on the command line come from the project config (edgeprune.toml, or
    [tool.edgeprune.compile] in pyproject.toml, found from the current folder upwards), else the defaults."""
    from edgeprune.config import CompileConfig
    from edgeprune.pipeline import compile_model
    from edgeprune.progress import RichReporter

    project, values = _project_options(ctx)
    options.update(values)  # each option's name is its CompileConfig field
    if isinstance(options["input_shape"], str):
        options["input_shape"] = _shape(options["input_shape"])
    cfg = CompileConfig(model=model, project_config=str(project) if project else None, **options)
    command = "edgeprune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = compile_model(cfg, reporter=RichReporter(), command=command)
    summary = summarise(result.report)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        f = summary["final"]
        click.echo(f"{result.out_dir}: latency {f['latency_median_ms']:.3f} ms vs {f['baseline_median_ms']:.3f} ms "
                   f"({f['latency_ratio_median']:.3f}x, medians in the same run), accuracy {f['accuracy']:.4f} "
                   f"vs {summary['baseline']['accuracy']:.4f}, run {result.run_id}")
        d = summary["deploy"]
        if d:
            if not d["tvm_library"]:
                lib = f"no TVM library ({d['tvm_reason']})"
            elif d["tvm_verified"]:
                lib = "model.tvm.so written and verified against ONNX Runtime"
            else:  # cross-compiled and not run: say so, never just "written"
                lib = ("model.tvm.so written but NOT numerically checked (cross-compiled for the device; "
                       "--verify-device KEY runs it on a device or an emulated one)")
            click.echo(f"deployed runtime: {d['deployed_runtime']}; {lib}; measured on {d['measured_on']}")
            if d.get("speedup_vs_fastest_baseline") and d["deployed_runtime"] != d["fastest_baseline_runtime"]:
                click.echo(f"deployed: {d['deployed_median_ms']:.3f} ms in {d['deployed_runtime']}, "
                           f"{d['speedup_vs_fastest_baseline']:.2f}x faster than the original model in its fastest "
                           f"runtime ({d['fastest_baseline_runtime']}, {d['fastest_baseline_median_ms']:.3f} ms; "
                           f"medians, each in its own rounds)")


# Options a project config may set, with their types. Not trust_model_code (a cloned repository must not
# turn on unpickling by itself), nor the per-run resume, overwrite and json.
PROJECT_OPTIONS = {"target": str, "latency_target": str, "out": str, "data": str, "agent": str, "budget": int,
                   "clusters": int, "cluster_by": str, "batch": int, "seed": int, "arch": str, "input_shape": tuple,
                   "normalize": str, "arch_kwargs": str, "train_device": str,
                   "finetune_epochs": int, "distill": bool, "measure_on": str, "tracker": str, "device_key": str,
                   "verify_device": str, "tune_trials": int, "accept_closest": bool, "max_latency_ms": float,
                   "min_accuracy": float, "max_accuracy_drop": float, "quantize": str, "int8_max_drop": float,
                   "search_bn_samples": int, "early_stop": bool, "depth": bool,
                   "quantize_in_search": bool, "latency_screen": float, "calibration_dir": str,
                   "history": str, "method": str, "gdp_epochs": int, "gdp_cost": str}
PROJECT_PATHS = {"out": None, "data": lambda v: v not in ("shapes", "shapes-hard", "digits"), "target": lambda v: v.endswith(".toml")}


def _project_options(ctx: click.Context):
    """(config file or None, {option: value} from it for every option left at its default on the command line)."""
    from click.core import ParameterSource

    from edgeprune.project import find_project_config, load_project_config

    path = find_project_config()
    if path is None:
        return None, {}
    values = load_project_config(path, known=PROJECT_OPTIONS, paths=PROJECT_PATHS)
    if isinstance(values.get("arch"), str):  # arch = "models/net.py:mynet" is relative to the config file
        values["arch"] = _relative_arch_file(values["arch"], path.resolve().parent)
    return path, {k: v for k, v in values.items() if ctx.get_parameter_source(k) is ParameterSource.DEFAULT}


def _relative_arch_file(arch: str, base) -> str:
    """``path/to/file.py:factory(...)`` with a relative path made absolute against ``base``; others unchanged."""
    from pathlib import Path

    head, paren, args = arch.partition("(")
    module, colon, factory = head.rpartition(":")
    if colon and module.endswith(".py") and not Path(module).expanduser().is_absolute():
        return f"{(Path(base) / module).resolve()}:{factory}{paren}{args}"
    return arch


def summarise(report: dict) -> dict:
    """The short form of a report printed by ``--json``."""
    f = report["final"]
    return {"status": report["status"], "run_id": report["run_id"], "out_dir": report["out_dir"],
            "target": report["target"], "wall_time_s": report["wall_time_s"],
            "baseline": {"accuracy": report["baseline"]["accuracy"], "macs": report["baseline"]["macs"],
                         "params": report["baseline"]["params"]},
            "final": {"accuracy": f["accuracy"], "macs": f["macs"], "params": f["params"],
                      "latency_median_ms": f["latency"]["median_ms"],
                      "baseline_median_ms": f["baseline_latency_same_run"]["median_ms"],
                      "latency_ratio_median": f["latency"]["baseline_median_ratio"],
                      "latency_ratio_p10": f["latency"]["ratio_to_baseline"],
                      "meets_latency_target": f["meets_latency_target"],
                      "onnx_verified": f["onnx_verification"]["ok"]},
            "method": report["search"].get("method", "search"),
            "evaluations": report["search"].get("evaluations", 0),
            "gates": report.get("gates", []),
            "deploy": _deploy_summary(report.get("deploy"))}


def _deploy_summary(d: dict | None) -> dict | None:
    if not d:
        return None
    return {"deployed_runtime": d["deployed_runtime"], "measured_on": d["measured_on"], "stand_in": d["stand_in"],
            "tvm_library": d["tvm"]["built"], "tvm_reason": d["tvm"].get("reason"),
            "tvm_verification": d["tvm"].get("verification", {}).get("method"),
            "tvm_verified": d["tvm"].get("verification", {}).get("ok"),
            "median_ms_per_runtime": {rt: r["latency"]["median_ms"] for rt, r in d["runtimes"].items()},
            **_deployed_vs_fastest_baseline(d)}


def _deployed_vs_fastest_baseline(d: dict) -> dict:
    """The deployed model against the original in the runtime that ran the original fastest: what a user
    gains over the best they had. Medians of different rounds (each runtime's pair has its own), so less
    exact than each runtime's same-run ratio."""
    rows = d.get("runtimes") or {}
    deployed = rows.get(d.get("deployed_runtime"))
    if not deployed:
        return {}
    fastest = min(rows, key=lambda rt: rows[rt]["baseline_same_run"]["median_ms"])
    base = rows[fastest]["baseline_same_run"]["median_ms"]
    ms = deployed["latency"]["median_ms"]
    return {"deployed_median_ms": ms, "fastest_baseline_runtime": fastest, "fastest_baseline_median_ms": base,
            "speedup_vs_fastest_baseline": base / ms}


@cli.command("analyze")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="host", show_default=True, help="Target profile name or TOML path.")
@click.option("--data", default="shapes", show_default=True, help="Built-in (shapes, digits) or a path.")
@click.option("--measure-on", default=None, metavar="PROFILE", help="A local stand-in for a target that cannot be reached.")
@_model_input_options
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON on stdout, nothing else.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False),
              help="Also write the analysis as a page with plots to this file.")
def analyze_cmd(model, target, data, measure_on, arch, input_shape, trust_model_code, as_json, html_path,
                normalize=None, arch_kwargs=None, train_device="auto") -> None:
    """Before a search: each group's sensitivity, what stays whole, where the latency goes, its floor."""
    import tempfile

    from edgeprune.config import CompileConfig
    from edgeprune.progress import RichReporter
    from edgeprune.stages.analyze import analyze

    with tempfile.TemporaryDirectory(prefix="edgeprune-analyze-") as out:
        cfg = CompileConfig(model=model, target=target, data=data, measure_on=measure_on, arch=arch, normalize=normalize,
                            input_shape=_shape(input_shape), trust_model_code=trust_model_code, out=out,
                            arch_kwargs=arch_kwargs, train_device=train_device)
        a = analyze(cfg, rep=RichReporter())
    if html_path:
        from pathlib import Path

        from edgeprune.outputs import atomic_write
        from edgeprune.reporting.analysis import render_analysis_html

        atomic_write(Path(html_path), render_analysis_html(a.to_dict()).encode())
    if as_json:
        click.echo(json.dumps(a.to_dict(), indent=2))
        return
    lat = a.baseline_latency
    click.echo(f"{a.model} on {a.target} ({a.where_measured}): accuracy {a.base_accuracy:.4f}, "
               f"{a.macs / 1e6:.1f} MMACs, latency {lat['median_ms']:.3f} ms (median, {lat['backend']})")
    if a.normalisation:
        n = a.normalisation
        click.echo(f"input normalisation: {n['name']}, mean {n['mean']}, std {n['std']} ({n.get('source')})")
    keeps = list(a.groups[0].accuracy) if a.groups else []
    click.echo(f"\n{'group':32s} {'width':>5s}  " + "  ".join(f"keep {k:>4s}" for k in keeps) + "   (accuracy after "
               "pruning this group alone, adaptive BN)")
    for g in a.groups:
        click.echo(f"{g.name:32s} {g.full:5d}  " + "  ".join(f"{acc:9.3f}" for _, acc in g.accuracy.values()))
    for layer, why in a.frozen.items():
        click.echo(f"kept whole: {layer}: {why}")
    click.echo("\nlatency by ONNX op (ONNX Runtime profiler, this machine): "
               + ", ".join(f"{op} {share:.0%}" for op, share in a.op_share.items() if share >= 0.01))
    click.echo(f"latency floor: the smallest model the search space allows measures {a.latency_floor_ratio:.2f}x "
               f"the baseline; width pruning cannot go below it")


@cli.command("report")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
def report_cmd(folder) -> None:
    """Write FOLDER/report.html (OUT/<name>/) again from its report.json (or report.failed.html from
    report.failed.json); every compile writes it already."""
    from pathlib import Path

    from edgeprune.reporting import write_html_report

    folder = Path(folder)
    for src, page in (("report.json", "report.html"), ("report.failed.json", "report.failed.html")):
        if (folder / src).is_file():
            try:
                report = json.loads((folder / src).read_text())
            except json.JSONDecodeError as e:
                raise EdgePruneError(f"{folder / src} is not valid JSON: {e}") from None
            click.echo(str(write_html_report(report, folder, filename=page)))
            return
    raise EdgePruneError(f"{folder} holds no report.json or report.failed.json (an OUT/<name>/ folder of a run)")


@cli.command("verify")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON on stdout.")
def verify_cmd(folder, as_json) -> None:
    """Re-check a built artifact folder (OUT/<name>/): hashes, ONNX vs model.pt, the TVM library here.

    Exits 4 when any check fails."""
    from edgeprune.artifacts import verify_artifacts
    from edgeprune.errors import VerificationError

    checks = verify_artifacts(folder)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        for c in checks:
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[c.ok]
            click.echo(f"{mark} {c.name:28s} {c.detail}")
    failed = [c for c in checks if c.ok is False]
    if failed:
        raise VerificationError(f"{folder}: {len(failed)} of {len(checks)} checks failed: "
                                + "; ".join(f"{c.name} ({c.detail})" for c in failed))


@cli.command("targets")
def targets_cmd() -> None:
    """List target profiles."""
    from edgeprune.targets import list_targets, load_target

    for name in list_targets():
        t = load_target(name)
        reach = "local" if t.is_local else (f"rpc:{t.connection.key}" if t.connection.kind == "rpc" else "unreachable")
        click.echo(f"{name:18s} {t.arch:8s} {t.device:4s} {t.backend:12s} {reach:22s} threads={t.measurement.threads} "
                   f"round_to={t.round_to}  {t.description}" + ("  [limited: see profile]" if t.unsupported else ""))


cli.add_command(device_group)

cli.add_command(calibrate_cmd)

cli.add_command(history_group)
cli.add_command(tuning_group)


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    as_json = len(sys.argv) > 1 and sys.argv[1] == "compile" and "--json" in sys.argv[2:]
    try:
        cli.main(standalone_mode=False)
    except EdgePruneError as e:
        click.echo(f"edgeprune: error: {e}", err=True)
        if as_json:  # a CI job parsing stdout gets an object, not nothing
            click.echo(json.dumps({"status": "error", "error": type(e).__name__, "message": str(e),
                                   "exit_code": e.exit_code}))
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("edgeprune: interrupted; resume with --resume RUN (the run id is printed at the start)", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("edgeprune: interrupted; resume with --resume RUN (the run id is printed at the start)", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
