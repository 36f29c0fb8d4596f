"""The ``edgeprune`` command as a user runs it: end to end, bad input, resume after a kill."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeprune.data import load_data
from edgeprune.model.load import load_model
from edgeprune.model.zoo import resnet20
from tests.conftest import ROOT, run_cli, tiny_resnet

FAST = ["--data", "digits", "--finetune-epochs", "1"]


def _one_clean_error_line(r: subprocess.CompletedProcess, match: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("edgeprune: error:")]
    assert len(lines) == 1 and match in lines[0], r.stderr


@pytest.mark.slow
def test_compile_end_to_end_writes_verified_faster_artifacts(resnet20_ckpt, tmp_path):
    r = run_cli("compile", str(resnet20_ckpt), "--target", "host", "--latency-target", "0.6x", "--budget", "4",
                "--out", str(tmp_path), "--json", *FAST)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)  # stdout holds the JSON and nothing else
    out = tmp_path / "resnet20"
    assert summary["status"] == "ok" and summary["out_dir"] == str(out)
    for name in ("model.onnx", "model.pt", "model.tvm.so", "report.json", "manifest.json"):
        assert (out / name).is_file()
    report = json.loads((out / "report.json").read_text())
    final = report["final"]
    # Faster, measured interleaved with the baseline in the same run.
    assert final["latency"]["baseline_median_ratio"] < 0.8
    assert final["macs"] < report["baseline"]["macs"] / 2
    assert final["onnx_verification"]["ok"] and final["onnx_verification"]["samples"] == 180  # all digits calib images
    for key in ("median_ms", "p90_ms", "spread", "repeats", "warmup", "threads", "backend", "backend_version", "where"):
        assert key in report["baseline"]["latency"] and key in final["latency"]
    assert len(report["candidates"]) == report["search"]["evaluations"] >= 2
    manifest = json.loads((out / "manifest.json").read_text())
    from edgeprune.report import sha256_file

    for name, art in manifest["artifacts"].items():
        assert art["sha256"] == sha256_file(out / name)
    assert manifest["packages"]["torch"].startswith("2.13.0") and "compile" in manifest["command"]
    # model.pt rebuilds from the architecture with weights_only loading, and matches model.onnx.
    torch.load(out / "model.pt", weights_only=True)
    loaded = load_model(out / "model.pt")
    x = load_data("digits").calib[0][:8]
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": x[i : i + 1].numpy()})[0] for i in range(8)])
    with torch.no_grad():
        ref = loaded.model(x).numpy()
    assert np.allclose(got, ref, atol=1e-4, rtol=1e-3)
    assert sum(p.numel() for p in loaded.model.parameters()) == final["params"]
    # The TVM library for this machine was verified against ONNX Runtime, and both runtimes were timed.
    tvm_art = manifest["artifacts"]["model.tvm.so"]
    assert tvm_art["verification"]["ok"] and tvm_art["library"]["arch"] == "x86_64"
    deploy = report["deploy"]
    # Both runtimes were compared; one whose baseline was far slower is not timed again, and says why.
    assert set(deploy["runtimes"]) | set(deploy["not_timed"]) == {"onnxruntime", "tvm"} and not deploy["stand_in"]
    assert all("cannot win" in why for why in deploy["not_timed"].values())
    assert set(deploy["baseline_per_runtime"]) == {"onnxruntime", "tvm"}
    assert deploy["deployed_runtime"] == min(deploy["runtimes"], key=lambda k: deploy["runtimes"][k]["latency"]["median_ms"])
    rows, dep = deploy["runtimes"], summary["deploy"]
    fastest = min(rows, key=lambda k: rows[k]["baseline_same_run"]["median_ms"])
    assert dep["fastest_baseline_runtime"] == fastest and dep["speedup_vs_fastest_baseline"] == pytest.approx(
        rows[fastest]["baseline_same_run"]["median_ms"] / rows[deploy["deployed_runtime"]]["latency"]["median_ms"])
    assert manifest["deployed_runtime"] == deploy["deployed_runtime"]
    from edgeprune.latency import get_backend

    got = get_backend("tvm").outputs(out / "model.tvm.so", x[:1].numpy())
    assert np.allclose(got, ref[:1], atol=1e-4, rtol=1e-3)


def test_cross_target_without_device_needs_a_stand_in(resnet20_ckpt, tmp_path):
    _one_clean_error_line(run_cli("compile", str(resnet20_ckpt), "--target", "rpi4", "--out", str(tmp_path)),
                          "--measure-on host")
    assert not list(tmp_path.glob("*/model.*"))


@pytest.mark.slow
@pytest.mark.needs_cross
def test_cross_target_measured_on_a_stand_in_is_labelled(resnet20_ckpt, tmp_path):
    r = run_cli("compile", str(resnet20_ckpt), "--target", "rpi4", "--measure-on", "host", "--latency-target", "0.6x",
                "--budget", "3", "--out", str(tmp_path), "--data", "digits", "--finetune-epochs", "0", "--json")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "resnet20"
    report = json.loads((out / "report.json").read_text())
    assert report["target"]["name"] == "rpi4" and report["target"]["measured_on_stand_in"]
    for m in (report["baseline"]["latency"], report["final"]["latency"]):
        assert m["where"].startswith("STAND-IN host") and "rpi4" in m["where"]
    assert all(r_["latency"]["where"].startswith("STAND-IN") for r_ in report["deploy"]["runtimes"].values())
    manifest = json.loads((out / "manifest.json").read_text())
    so = manifest["artifacts"]["model.tvm.so"]
    assert so["library"]["arch"] == "aarch64" and so["triple"] == "aarch64-linux-gnu"
    assert so["verification"]["ok"] is None and "cross-compiled" in so["verification"]["method"]
    assert (out / "model.tvm.so").read_bytes()[18] == 183  # ELF e_machine EM_AARCH64
    assert manifest["measured_on_stand_in"]
    # The stand-in measured with its own thread count (host: 1), not the board's (rpi4: 4).
    assert manifest["measurement_threads"] == 1 == report["final"]["latency"]["threads"]
    assert manifest["target_profile"]["measurement"]["threads"] == 4
    assert json.loads(r.stdout)["deploy"]["tvm_verified"] is None  # unchecked, and the summary says so


@pytest.mark.slow
def test_jetson_nano_explains_why_no_tvm_library(resnet20_ckpt, tmp_path):
    r = run_cli("compile", str(resnet20_ckpt), "--target", "jetson-nano", "--measure-on", "host", "--latency-target",
                "0.6x", "--budget", "3", "--out", str(tmp_path), "--data", "digits", "--finetune-epochs", "0")
    assert r.returncode == 0, r.stderr
    assert "sm_53" in r.stderr and "no TVM library" in r.stdout
    out = tmp_path / "resnet20"
    assert (out / "model.onnx").is_file() and not (out / "model.tvm.so").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["deploy"]["tvm"]["built"] is False and "sm_53" in report["deploy"]["tvm"]["reason"]
    assert report["deploy"]["deployed_runtime"] == "onnxruntime" and "sm_53" in report["target"]["limitations"]


def test_missing_model_file(tmp_path):
    _one_clean_error_line(run_cli("compile", str(tmp_path / "none.pt"), "--out", str(tmp_path)), "does not exist")


def test_corrupt_model_file(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage" * 50)
    _one_clean_error_line(run_cli("compile", str(tmp_path / "bad.pt"), "--out", str(tmp_path)), "corrupt")


def test_untrusted_pickle_without_flag(tmp_path):
    torch.save(tiny_resnet(), tmp_path / "whole.pt")
    _one_clean_error_line(run_cli("compile", str(tmp_path / "whole.pt"), "--out", str(tmp_path)), "--trust-model-code")


def test_unknown_architecture(tmp_path):
    torch.save(resnet20().state_dict(), tmp_path / "sd.pt")
    _one_clean_error_line(run_cli("compile", str(tmp_path / "sd.pt"), "--arch", "resnet7", "--out", str(tmp_path)),
                          "unknown architecture")


def test_wrong_input_shape(resnet20_ckpt, tmp_path):
    _one_clean_error_line(run_cli("compile", str(resnet20_ckpt), "--input-shape", "1,32,32", "--out", str(tmp_path)),
                          "input shape")


def test_data_with_wrong_number_of_classes(resnet20_ckpt, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "three.npz", x=rng.random((200, 3, 32, 32), dtype=np.float32), y=rng.integers(0, 3, 200))
    _one_clean_error_line(run_cli("compile", str(resnet20_ckpt), "--data", str(tmp_path / "three.npz"),
                                  "--out", str(tmp_path)), "3 classes")


def test_bad_latency_target_and_unknown_target(resnet20_ckpt, tmp_path):
    _one_clean_error_line(run_cli("compile", str(resnet20_ckpt), "--latency-target", "fast", "--out", str(tmp_path)),
                          "latency target")
    _one_clean_error_line(run_cli("compile", str(resnet20_ckpt), "--target", "pdp11", "--out", str(tmp_path)),
                          "no target profile")


@pytest.mark.slow
def test_impossible_latency_target_is_found_before_the_search(resnet20_ckpt, tmp_path):
    r = run_cli("compile", str(resnet20_ckpt), "--latency-target", "0.02x", "--budget", "3", "--out", str(tmp_path), *FAST)
    assert r.returncode == 3
    _one_clean_error_line(r, "cannot be met: even the smallest model")
    assert "choose a target of at least" in r.stderr
    report = json.loads((tmp_path / "resnet20" / "report.failed.json").read_text())
    assert report["status"] == "infeasible" and report["final"] is None and report["candidates"] == []
    assert not (tmp_path / "resnet20" / "model.onnx").exists()  # nothing written as good
    assert _stored(tmp_path / "runs.sqlite", report["run_id"]) == 0  # no budget spent


def _stored(db, run_id=None):
    con = sqlite3.connect(db)
    try:
        if run_id is None:
            row = con.execute("SELECT run_id FROM runs").fetchone()
            return row[0] if row else None
        return con.execute("SELECT COUNT(*) FROM evaluations WHERE run_id = ?", (run_id,)).fetchone()[0]
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()


@pytest.mark.slow
def test_run_killed_half_way_resumes_without_reevaluating(resnet20_ckpt, tmp_path):
    # 0.8x: the test is about a killed run resuming; six random candidates miss the default 0.5x about one
    # time in twelve (random keeps reach it about one time in three), which failed this test once.
    args = ["compile", str(resnet20_ckpt), "--agent", "random", "--budget", "6", "--latency-target", "0.8x",
            "--out", str(tmp_path), *FAST]
    proc = subprocess.Popen([sys.executable, "-m", "edgeprune.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db, run_id, deadline = tmp_path / "runs.sqlite", None, time.time() + 300
    try:
        while time.time() < deadline:
            run_id = run_id or (db.exists() and _stored(db))
            if run_id and (_stored(db, run_id) or 0) >= 2:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: the hardest kind of crash
    finally:
        proc.wait(30)
    done_before = _stored(db, run_id)
    assert 2 <= done_before < 6, "the run should be killed half-way"
    assert not (tmp_path / "resnet20" / "manifest.json").exists()
    r = run_cli("compile", *args[1:], "--resume", run_id, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "resnet20" / "report.json").read_text())
    assert report["run_id"] == run_id and report["search"]["evaluations"] == 6
    assert report["search"]["evaluated_this_session"] == 6 - done_before
    assert [c["from_store"] for c in report["candidates"]][:done_before] == [True] * done_before
    # Resuming with other search settings is refused, not silently mixed.
    r = run_cli("compile", *args[1:], "--seed", "5", "--resume", run_id)
    _one_clean_error_line(r, "different settings")


def test_targets_lists_every_profile_with_runtime_and_reach():
    r = run_cli("targets")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert set(rows) >= {"host", "rpi4", "rpi5", "arm64-linux", "jetson-nano", "jetson-orin-nano"}
    assert "auto" in rows["host"] and "local" in rows["host"] and "onnxruntime" in rows["jetson-nano"]
    assert "rpc:rpi4" in rows["rpi4"] and "[limited" in rows["jetson-nano"]


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_names_the_run_to_resume(resnet20_ckpt, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "edgeprune.cli", "compile", str(resnet20_ckpt), "--agent", "random",
                             "--budget", "30", "--latency-target", "0.8x", "--out", str(tmp_path), *FAST], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # A shell without job control starts background jobs (CI, `cmd &`) with SIGINT
                            # ignored, and children inherit that: give the run the terminal's default.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    db, run_id, deadline = tmp_path / "runs.sqlite", None, time.time() + 300
    while time.time() < deadline and not (run_id and (_stored(db, run_id) or 0) >= 1):
        run_id = run_id or (db.exists() and _stored(db))
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    # Python sees the signal when the running C++ call (ONNX Runtime, TVM) returns: seconds on an idle
    # machine, minutes when CI shares it with other jobs.
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"--resume {run_id}" in err and "evaluations are stored" in err


def test_the_summary_compares_the_deployed_model_with_the_original_in_its_fastest_runtime():
    from edgeprune.cli import _deployed_vs_fastest_baseline

    def row(final_ms, base_ms):
        return {"latency": {"median_ms": final_ms}, "baseline_same_run": {"median_ms": base_ms}}

    d = {"deployed_runtime": "tvm", "runtimes": {"onnxruntime": row(0.30, 0.44), "tvm": row(0.15, 0.55)}}
    got = _deployed_vs_fastest_baseline(d)
    assert got["fastest_baseline_runtime"] == "onnxruntime" and got["deployed_median_ms"] == 0.15
    assert got["speedup_vs_fastest_baseline"] == pytest.approx(0.44 / 0.15)  # not 0.55 / 0.15: the best the user had
    assert _deployed_vs_fastest_baseline({"deployed_runtime": "tvm", "runtimes": {}}) == {}
