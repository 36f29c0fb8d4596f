"""The run report (one typed object, serialised once), and the artifacts and manifest of a good run.

A good run's artifacts are written into a staging folder, checked there, and only then replace
``OUT/<name>/``; a failed or infeasible run writes ``report.failed.json`` beside the previous good
artifacts and touches nothing else, so nothing that looks good is ever stale or unverified."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeprune.errors import VerificationError
from edgeprune.model.load import PT_CHECKPOINT, PT_PICKLED, save_checkpoint, verify_checkpoint
from edgeprune.outputs import StagedOutput, atomic_write, write_failure_report
from edgeprune.reporting import write_html_report

FINAL_CHECK_SAMPLES = 50  # calibration images through the reloaded model.pt and the exported model

PACKAGES = ("edgeprune", "torch", "numpy", "onnx", "onnxruntime", "onnxslim", "onnxsim", "torch-pruning", "apache-tvm",
            "apache-tvm-ffi", "botorch")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "not installed"
    return out


def _final_section(final, quantized, target: dict) -> dict | None:
    """The final model's section, with the form deployed (fp32 or int8) and whether that form meets the
    latency target (p10 ratio, each measured in the same rounds as the baseline)."""
    if final is None:
        return None
    d = final.to_dict()
    int8 = quantized is not None and quantized.deployed and quantized.pair is not None
    ratio = target.get("latency_target_ratio")
    d["deployed_form"] = "int8" if int8 else "fp32"
    d["deployed_meets_latency_target"] = (
        (quantized.pair.candidate.ratio_to_baseline <= ratio if ratio is not None else None) if int8
        else d["meets_latency_target"])
    return d


def _stopped_early(evaluations) -> int:
    """Evaluations whose accuracy used fewer images than the search subset (its size: the most any used;
    the first candidate, with no incumbent yet, always uses them all)."""
    full = max((e.result.accuracy_images for e in evaluations), default=0)
    return sum(0 < e.result.accuracy_images < full for e in evaluations)


def _candidate_rows(evaluations) -> list[dict]:
    return [{"index": e.index, "widths": list(e.candidate.widths), "keep": [round(k, 4) for k in e.candidate.keep],
             "origin": e.candidate.origin, "accuracy": e.result.accuracy, "accuracy_images": e.result.accuracy_images,
             "latency_ms": e.result.latency_ms,
             "ratio_to_baseline": e.result.measurement.ratio_to_baseline, "median_ms": e.result.measurement.median_ms,
             "noise": e.result.measurement.noise, "noisy": e.result.measurement.noisy, "macs": e.result.macs,
             "params": e.result.params, "feasible": e.result.feasible, "from_store": e.reused,
             "seconds": e.result.seconds, "measured_on": e.result.measurement.where}
            for e in evaluations]


@dataclass(frozen=True)
class Report:
    """What a run did, serialised once as ``report.json`` (or ``report.failed.json``).

    ``status`` is "ok", "infeasible" (the latency target was not met: exit 3), "gate_failed" (a CI gate was
    missed: exit 3) or "failed" (an artifact failed verification: exit 4); ``reason`` says why when it is not "ok". Sections that a stage did not
    reach are None.
    """

    status: str
    run_id: str
    out_dir: str
    model: dict
    data: dict
    target: dict
    wall_time_s: float
    reason: str | None = None
    search: dict | None = None
    baseline: dict | None = None
    final: dict | None = None
    deploy: dict | None = None
    candidates: list = field(default_factory=list)
    gates: list = field(default_factory=list)
    quantized: dict | None = None
    warnings: list = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def build_report(*, status: str, run_id: str, inputs, t_start: float, reason: str | None = None, analysed=None,
                 baseline=None, base_accuracy: float | None = None, agent=None, outcome=None, selection=None,
                 final=None, deployment=None, gates=(), quantized=None, screen=None, gdp=None, history=None, warnings_seen=()) -> Report:
    """The report from the stages' typed results; every argument after ``t_start`` may be missing when
    the run stopped before that stage."""
    cfg, loaded, profile, plan = inputs.cfg, inputs.loaded, inputs.profile, inputs.plan
    target = {"name": profile.name, "where_measured": plan.where, "measured_on_stand_in": plan.stand_in,
              "limitations": profile.unsupported or None, "latency_target": str(inputs.target)}
    if baseline is not None:
        target.update(latency_target_ratio=baseline.ratio, latency_target_ms=baseline.target_ms)
    search = None
    if gdp is not None:  # no search: the widths came from gated training
        search = {"method": "gdp", "agent": "gdp (gated training, no search)", "gdp": gdp.describe(),
                  "gdp_config": {"epochs": cfg.gdp_epochs, "cost": cfg.gdp_cost},
                  "groups": analysed.analysis.to_dict() if analysed else None}
    if outcome is not None:
        from edgeprune.search.agents import agent_info

        search = {"agent": cfg.agent, "agent_info": agent_info(agent), "budget": cfg.budget, "seed": cfg.seed,
                  "train_device": getattr(inputs, "train_device", "cpu"),
                  "evaluations": len(outcome.evaluations), "evaluated_this_session": outcome.evaluated_now,
                  "evaluation": {"bn_samples": cfg.search_bn_samples, "early_stop": cfg.early_stop,
                                 "val_samples": cfg.search_val_samples,
                                 "stopped_early": _stopped_early(outcome.evaluations)},
                  "screen": screen.describe() if screen is not None else None,
                  "cluster_by": cfg.cluster_by,
                  "group_drops": list(analysed.group_drops) if analysed and analysed.group_drops else None,
                  "history": history,
                  "confirmations": list(selection.confirmations) if selection else [],
                  "confirmed": selection.confirmed if selection else None, "wall_time_s": outcome.seconds,
                  "groups": analysed.analysis.to_dict() if analysed else None}
    base = None
    if analysed is not None and baseline is not None:
        base = {"accuracy": base_accuracy, "macs": analysed.macs, "params": analysed.params,
                "channels": analysed.channels, "onnx_verification": baseline.verdict.to_dict(),
                "latency": baseline.reference.to_dict()}
    return Report(status=status, reason=reason, run_id=run_id, out_dir=str(inputs.out_root / loaded.name),
                  model={"path": str(cfg.model), "name": loaded.name, "arch": loaded.arch,
                         "arch_kwargs": json.loads(json.dumps(loaded.arch_kwargs, default=repr)),
                         "input_shape": list(loaded.input_shape), "model_pt_format": model_pt_format(loaded)},
                  data=data_summary(inputs), target=target, search=search, baseline=base,
                  final=_final_section(final, quantized, target),
                  deploy=deployment.comparison if deployment is not None else None,
                  candidates=_candidate_rows(outcome.evaluations) if outcome is not None else [],
                  wall_time_s=round(time.time() - t_start, 2), gates=[g.to_dict() for g in gates],
                  quantized=quantized.to_dict() if quantized is not None else None,
                  warnings=list(warnings_seen), config=cfg.to_dict())


def model_pt_format(loaded) -> str:
    """"edgeprune-checkpoint" (loads with weights only) or "pickled-module" (the input was a pickled module,
    so model.pt is one too and needs --trust-model-code)."""
    return PT_CHECKPOINT if loaded.arch is not None else PT_PICKLED


def data_summary(inputs) -> dict:
    """The data's summary, its normalisation with where it came from, and what the exported model expects."""
    data = inputs.data.summary()
    data["normalisation"]["source"] = getattr(inputs, "normalisation_source", "") or None
    data["onnx_input"] = inputs.data.normalisation.onnx_input(tuple(inputs.loaded.input_shape))
    return data


def model_input(inputs) -> dict:
    """``manifest.json``'s statement of model.onnx's input."""
    data = data_summary(inputs)
    return {"name": "input", "shape": ["N", *inputs.loaded.input_shape], "dtype": "float32",
            "batch": "dynamic: any N (verified and timed at batch 1; model.tvm.so is compiled for batch 1)",
            "normalisation": data["normalisation"], "expects": data["onnx_input"]}


def write_failure(report: Report, inputs) -> Path:
    """``OUT/<name>/report.failed.json`` and its page ``report.failed.html``; the previous good artifacts
    there (``report.html`` among them) stay untouched."""
    path = write_failure_report(inputs.out_root, inputs.loaded.name, report.to_dict())
    write_html_report(report.to_dict(), path.parent, filename="report.failed.html")
    return path


def write_success(report: Report, *, inputs, final, deployment, calib, command: str, quantized=None) -> Path:
    """Write every artifact into a staging folder, reload and verify ``model.pt`` there, write the manifest,
    and only then replace ``OUT/<name>/`` with it. ``calib`` holds real images (N×C×H×W) for the check."""
    import torch

    loaded, profile, plan = inputs.loaded, inputs.profile, inputs.plan
    with StagedOutput(inputs.out_root, loaded.name) as staged:
        d = staged.dir
        atomic_write(d / "model.onnx", final.onnx_bytes)
        # A model that came in as a pickled module has no recipe: model.pt pickles the pruned module itself
        # (save_checkpoint with arch=None) and reloads only with trust_code, as its input did.
        pt_format = save_checkpoint(
            d / "model.pt", model=final.model, arch=loaded.arch, arch_kwargs=loaded.arch_kwargs,
            input_shape=loaded.input_shape, pruning_history=final.history, name=loaded.name,
            meta={"run_id": report.run_id, "val_accuracy": final.accuracy, "data": inputs.data.name,
                  "normalisation": data_summary(inputs)["normalisation"], "rebuildable": loaded.arch is not None})
        pt_verdict = verify_checkpoint(d / "model.pt", final.model, calib[:FINAL_CHECK_SAMPLES],
                                       trust_code=pt_format == PT_PICKLED)
        if not pt_verdict.ok:
            raise VerificationError(f"model.pt does not reproduce the exported model when reloaded "
                                    f"({pt_verdict.method}: max |diff| {pt_verdict.max_abs_diff:.3g}); not written")
        if deployment.library is not None:
            shutil.copyfile(deployment.library, d / "model.tvm.so")
        if quantized is not None:
            atomic_write(d / "model.int8.onnx", quantized.onnx_bytes)
        atomic_write(d / "report.json", _json(report.to_dict()))
        write_html_report(report.to_dict(), d)
        arts = {name: {"sha256": sha256_file(d / name), "bytes": (d / name).stat().st_size}
                for name in ("model.onnx", "model.pt", "report.json", "report.html")}
        arts["model.onnx"]["verification"] = final.verdict.to_dict()
        arts["model.onnx"]["batch"] = "dynamic"
        arts["model.pt"]["verification"] = pt_verdict.to_dict()
        arts["model.pt"]["format"] = pt_format
        if quantized is not None:  # checked by accuracy on the validation split, not output closeness
            arts["model.int8.onnx"] = {"sha256": sha256_file(d / "model.int8.onnx"),
                                       "bytes": (d / "model.int8.onnx").stat().st_size, "check": quantized.check,
                                       "deployed": quantized.deployed}
        if deployment.library is not None:
            tv = deployment.comparison["tvm"]
            arts["model.tvm.so"] = {"sha256": sha256_file(d / "model.tvm.so"), "bytes": (d / "model.tvm.so").stat().st_size,
                                    "triple": tv["triple"], "tvm_target": tv["target"], "library": tv["library"],
                                    "verification": tv["verification"], "tuning": tv["tuning"], "load": tv["load"]}
        manifest = {"edgeprune_manifest": 1, "run_id": report.run_id, "command": command or " ".join(sys.argv),
                    "input_model_sha256": inputs.model_sha256, "artifacts": arts, "model_input": model_input(inputs),
                    "packages": package_versions(), "platform": platform.platform(), "target_profile": profile.to_dict(),
                    "measured_on": plan.where, "measured_on_stand_in": plan.stand_in,
                    "measurement_threads": plan.profile.measurement.threads,
                    "deployed_runtime": deployment.comparison.get("deployed_runtime", "onnxruntime"),
                    "deployed_form": "int8" if quantized is not None and quantized.deployed else "fp32",
                    "model_pt_format": pt_format, "train_device": getattr(inputs, "train_device", "cpu"),
                    "torch_threads": torch.get_num_threads()}
        atomic_write(d / "manifest.json", _json(manifest))
        return staged.commit()
