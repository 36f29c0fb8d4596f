"""Remote profiling over real TVM RPC on 127.0.0.1: a tracker, two device servers, faults."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from edgeprune.errors import DeviceError
from edgeprune.export.onnx import export_verified
from edgeprune.latency import Artifact, MeasureSettings, Meter
from edgeprune.latency.remote import RemoteMeter
from edgeprune.latency.rpc import DevicePool, RetryPolicy, tracker_summary
from edgeprune.remote.device import check_bind
from tests.conftest import ROOT, run_cli, tiny_resnet
from tests.remote.farm import Farm, free_port


def _stored(db) -> int:
    try:
        return sqlite3.connect(db).execute("select count(*) from evaluations").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _wait_for_evaluations(proc, db, n: int, timeout: float = 300) -> None:
    """Until the running compile ``proc`` has stored ``n`` evaluations in the run store ``db``."""
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None and _stored(db) < n:
        time.sleep(0.1)


@pytest.fixture()
def farm():
    f = Farm()
    f.add_device("dev-a", "testdev")
    f.add_device("dev-b", "testdev")
    yield f
    f.close()


@pytest.fixture(scope="module")
def tiny_bytes():
    x = torch.randn(2, 3, 32, 32)
    return export_verified(tiny_resnet(), (3, 32, 32), x)[0]


def test_measures_on_devices_in_parallel_and_survives_a_dead_device(farm, tiny_bytes):
    pool = DevicePool(farm.tracker, "testdev", size=2, retry=RetryPolicy(retries=4, backoff_s=0.1))
    meter = RemoteMeter(pool, "onnxruntime", Artifact(tiny_bytes), (1, 3, 32, 32), MeasureSettings(warmup=2, rounds=2, runs_per_round=3),
                        "farm")
    assert isinstance(meter, Meter) and meter.parallel == 2
    pairs = meter.measure_many([Artifact(tiny_bytes)] * 4)
    assert {p[0].where.split("device ")[1].split(" ")[0] for p in pairs} == {"dev-a", "dev-b"}
    for cand, base in pairs:
        assert cand.repeats == cand.rounds * 3 and cand.rounds % 2 == 0 and cand.backend == "onnxruntime" and 0.5 < cand.ratio_to_baseline < 2
    farm.kill("dev-a")
    pairs = meter.measure_many([Artifact(tiny_bytes)] * 4)  # a session to dev-a breaks: retried on dev-b
    assert all("dev-b" in p[0].where for p in pairs) and len(pairs) == 4
    assert any(f["device"] == "dev-a" for f in pool.failures)


def test_no_device_left_is_a_clear_error_after_bounded_retries(farm, tiny_bytes):
    pool = DevicePool(farm.tracker, "testdev", retry=RetryPolicy(retries=2, backoff_s=0.05))
    meter = RemoteMeter(pool, "onnxruntime", Artifact(tiny_bytes), (1, 3, 32, 32), MeasureSettings(warmup=1, rounds=1, runs_per_round=2),
                        "farm")
    farm.kill("dev-a")
    farm.kill("dev-b")
    t = time.time()
    with pytest.raises(DeviceError, match="failed on 3 attempts"):
        meter.measure(Artifact(tiny_bytes))
    assert time.time() - t < 120


def test_tracker_down_and_unknown_key_are_clear_errors(farm):
    with pytest.raises(DeviceError, match="cannot reach the TVM RPC tracker"):
        tracker_summary(f"127.0.0.1:{free_port()}")
    r = run_cli("device", "list", "--tracker", farm.tracker)
    assert r.returncode == 0 and "testdev" in r.stdout and "free 2" in r.stdout


def test_servers_refuse_a_public_address_without_the_flag():
    with pytest.raises(PermissionError, match="--allow-remote"):
        check_bind("0.0.0.0", allow_remote=False)
    check_bind("127.0.0.1", allow_remote=False)
    r = subprocess.run([sys.executable, "-m", "edgeprune.remote.serve", "--key", "x", "--host", "0.0.0.0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no authentication" in r.stderr


@pytest.mark.slow
def test_compile_measured_remotely_completes_when_a_device_dies(farm, tmp_path):
    # The bundled trained model: BO's batch proposals (measured two at a time) need a real accuracy landscape.
    args = [sys.executable, "-m", "edgeprune.cli", "compile", str(ROOT / "examples" / "resnet20.pt"), "--target", "host",
            "--tracker", farm.tracker, "--device-key", "testdev", "--agent", "bo", "--batch", "2", "--budget", "8",
            "--finetune-epochs", "0", "--out", str(tmp_path), "--json", "--latency-target", "0.8x"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "runs.sqlite"
    _wait_for_evaluations(proc, db, 2)
    farm.kill("dev-a")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    report = json.loads((tmp_path / "resnet20" / "report.json").read_text())
    assert report["search"]["evaluations"] == 8 and len(report["candidates"]) == 8
    devices = {c["measured_on"].split("device ")[1].split(" ")[0] for c in report["candidates"]}
    assert devices == {"dev-a", "dev-b"}  # both measured before the kill; dev-b carried on
    assert report["deploy"]["remote"]["parallel"] == 2
    assert "over TVM RPC" in report["target"]["where_measured"]


def test_tvm_libraries_are_timed_on_the_device_per_call_like_onnx_runtime(farm, tiny_bytes):
    """The device times a TVM library with the same backend code and per-call timing as the host."""
    from edgeprune.targets import load_target

    pool = DevicePool(farm.tracker, "testdev")
    meter = RemoteMeter(pool, "tvm", Artifact(tiny_bytes), (1, 3, 32, 32),
                        MeasureSettings(warmup=1, rounds=3, runs_per_round=4), "farm", profile=load_target("host"))
    cand, base = meter.measure(Artifact(tiny_bytes))
    assert cand.backend == "tvm" and cand.backend_version.startswith("0.27") and cand.repeats % 12 == 0
    assert 0.5 < cand.ratio_to_baseline < 2 and base.ratio_to_baseline == pytest.approx(1.0)


def test_an_expired_session_is_reopened(farm, tiny_bytes):
    pool = DevicePool(farm.tracker, "testdev", size=1, session_timeout_s=2, retry=RetryPolicy(retries=3, backoff_s=0.1))
    meter = RemoteMeter(pool, "onnxruntime", Artifact(tiny_bytes), (1, 3, 32, 32), MeasureSettings(warmup=1, rounds=1, runs_per_round=2),
                        "farm")
    meter.measure(Artifact(tiny_bytes))
    time.sleep(3.5)  # the device ends the session after 2 s
    cand, _ = meter.measure(Artifact(tiny_bytes))
    assert cand.repeats % 2 == 0 and len(pool.failures) >= 1


@pytest.mark.slow
def test_run_stops_clearly_when_every_device_is_gone_and_resumes_later(farm, resnet20_ckpt, tmp_path):
    # 0.8x: the test is about devices lost and the run resumed, not about reaching a hard target (at the
    # default 0.5x six random candidates missed it once in CI: random keeps reach 0.5x about one time in three).
    args = ["compile", str(resnet20_ckpt), "--target", "host", "--tracker", farm.tracker, "--device-key", "testdev",
            "--agent", "random", "--budget", "6", "--data", "digits", "--finetune-epochs", "0", "--out", str(tmp_path),
            "--latency-target", "0.8x"]
    proc = subprocess.Popen([sys.executable, "-m", "edgeprune.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    db = tmp_path / "runs.sqlite"
    _wait_for_evaluations(proc, db, 2)
    farm.kill("dev-a")
    farm.kill("dev-b")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    line = [ln for ln in err.splitlines() if ln.startswith("edgeprune: error:")][0]
    assert "--resume" in line and "Traceback" not in err
    run_id = line.split("--resume ")[1].split()[0]
    stored = _stored(db)
    assert stored >= 2
    farm.add_device("dev-c", "testdev")
    r = run_cli(*args, "--resume", run_id, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "resnet20" / "report.json").read_text())
    assert report["search"]["evaluations"] == 6 and report["search"]["evaluated_this_session"] == 6 - stored


@pytest.mark.slow
def test_tune_trials_for_a_remote_target_times_trials_on_the_device(farm, tiny_ckpt, tmp_path, monkeypatch):
    """--tune-trials with --tracker/--device-key: MetaSchedule's trials are timed on the devices through TVM
    RPC (the device servers here run on this machine, as a board would run them), the records land in the
    target's database, and the library written is verified."""
    from edgeprune.compile.tuning_db import databases

    monkeypatch.setenv("EDGEPRUNE_TUNING_DB", str(tmp_path / "tuning"))
    r = run_cli("compile", str(tiny_ckpt), "--target", "host", "--tracker", farm.tracker, "--device-key", "testdev",
                "--agent", "uniform", "--budget", "2", "--data", "digits", "--finetune-epochs", "0",
                "--latency-target", "0.9x", "--tune-trials", "8", "--out", str(tmp_path / "out"), "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "out" / "tiny" / "report.json").read_text())["deploy"]
    tuning = d["tvm"]["tuning"]
    assert tuning["timed_on"] == {"tracker": farm.tracker, "key": "testdev"}
    assert tuning["tasks"] >= 1 and tuning["seeded_with_default_schedule"] == tuning["tasks"]
    assert set(d["runtimes"]) == {"onnxruntime", "tvm", "tvm-tuned"}
    assert d["tvm"]["verification"]["ok"]
    (db,) = databases(tmp_path / "tuning")
    assert db.records >= tuning["tasks"] and str(db.path) == tuning["database"]
