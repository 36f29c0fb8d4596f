"""Report, manifest and artifacts, written atomically (temp file + rename) so a crash never leaves a
half-written file that looks good."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ("edgeprune", "torch", "numpy", "onnx", "onnxruntime", "onnxslim", "onnxsim", "torch-pruning", "apache-tvm",
            "apache-tvm-ffi", "botorch")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def _candidate_rows(outcome) -> list[dict]:
    return [{"index": idx, "widths": list(c.widths), "keep": [round(k, 4) for k in c.keep], "origin": c.origin,
             "accuracy": r.accuracy, "latency_ms": r.latency_ms, "ratio_to_baseline": r.measurement.ratio_to_baseline,
             "median_ms": r.measurement.median_ms, "macs": r.macs, "params": r.params, "feasible": r.feasible,
             "from_store": reused, "seconds": r.seconds, "measured_on": r.measurement.where}
            for idx, c, r, reused in outcome.evaluations]


def write_outputs(*, status: str, cfg, profile, plan, loaded, data, analysis, outcome, run_id, baseline_ref, target,
                  ratio, baseline, final, command, t_start, pruned=None, history=None, onnx_bytes=None,
                  deploy=None) -> dict:
    """Write ``report.json`` (always) and, when ``status == "ok"``, ``model.onnx``, ``model.pt`` and
    ``manifest.json`` under ``<out>/<model name>/``. Returns the report (with ``out_dir``)."""
    import torch

    from edgeprune.model.load import save_checkpoint

    out_dir = Path(cfg.out) / loaded.name
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "status": status,
        "run_id": run_id,
        "model": {"path": str(cfg.model), "name": loaded.name, "arch": loaded.arch, "input_shape": list(loaded.input_shape)},
        "data": data.summary(),
        "target": {"name": profile.name, "where_measured": plan.where, "measured_on_stand_in": plan.stand_in,
                   "limitations": profile.unsupported or None, "latency_target": str(target),
                   "latency_target_ratio": ratio, "latency_target_ms": ratio * baseline_ref.p10_ms},
        "search": {"agent": cfg.agent, "agent_info": outcome.agent_info, "budget": cfg.budget, "seed": cfg.seed,
                   "evaluations": len(outcome.evaluations), "evaluated_this_session": outcome.evaluated_now,
                   "confirmations": outcome.confirmations, "wall_time_s": outcome.seconds,
                   "groups": analysis.to_dict()},
        "baseline": dict(baseline, latency=baseline_ref.to_dict()),
        "final": final,
        "deploy": {k: v for k, v in (deploy or {}).items() if k != "tvm_library_path"} or None,
        "candidates": _candidate_rows(outcome),
        "wall_time_s": round(time.time() - t_start, 2),
        "out_dir": str(out_dir),
    }
    if status == "ok":
        onnx_path, pt_path = out_dir / "model.onnx", out_dir / "model.pt"
        _atomic_write(onnx_path, onnx_bytes)
        tmp_pt = out_dir / ".model.pt.tmp"
        save_checkpoint(tmp_pt, model=pruned, arch=loaded.arch or "unknown", arch_kwargs=loaded.arch_kwargs,
                        input_shape=loaded.input_shape, pruning_history=history, name=loaded.name,
                        meta={"run_id": run_id, "val_accuracy": final["accuracy"], "data": data.name,
                              "normalisation": data.summary()["normalisation"],
                              "rebuildable": loaded.arch is not None})
        os.replace(tmp_pt, pt_path)
        if deploy and deploy.get("tvm_library_path"):
            # Copied under a temporary name, then renamed: a half-written library never looks finished.
            tmp_so = out_dir / ".model.tvm.so.tmp"
            shutil.copyfile(deploy["tvm_library_path"], tmp_so)
            os.replace(tmp_so, out_dir / "model.tvm.so")
        else:
            (out_dir / "model.tvm.so").unlink(missing_ok=True)  # never leave a stale library from an earlier run
    _atomic_write(out_dir / "report.json", _json(report))
    if status == "ok":
        arts = {name: {"sha256": sha256_file(out_dir / name), "bytes": (out_dir / name).stat().st_size}
                for name in ("model.onnx", "model.pt", "report.json")}
        arts["model.onnx"]["verification"] = final["onnx_verification"]
        if deploy and deploy.get("tvm_library_path"):
            tv = deploy["tvm"]
            arts["model.tvm.so"] = {"sha256": sha256_file(out_dir / "model.tvm.so"),
                                    "bytes": (out_dir / "model.tvm.so").stat().st_size, "triple": tv["triple"],
                                    "tvm_target": tv["target"], "library": tv["library"],
                                    "verification": tv["verification"], "tuning": tv["tuning"], "load": tv["load"]}
        manifest = {"edgeprune_manifest": 1, "run_id": run_id, "command": command or " ".join(sys.argv),
                    "input_model_sha256": sha256_file(cfg.model), "artifacts": arts,
                    "packages": package_versions(), "platform": platform.platform(), "target_profile": profile.to_dict(),
                    "measured_on": plan.where, "measured_on_stand_in": plan.stand_in,
                    "deployed_runtime": (deploy or {}).get("deployed_runtime", "onnxruntime"),
                    "torch_threads": torch.get_num_threads()}
        _atomic_write(out_dir / "manifest.json", _json(manifest))
    return report
