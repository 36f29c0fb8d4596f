"""MetaSchedule tuning through the pipeline: a verified tuned library, tuned vs untuned vs ONNX Runtime in
the report, and a database reused by the next run."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_tune_trials_tunes_verifies_compares_and_reuses_the_database(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_TUNING_DB", str(tmp_path / "tuning"))
    args = ["compile", str(tiny_ckpt), "--target", "host", "--latency-target", "0.9x", "--agent", "uniform",
            "--budget", "2", "--data", "digits", "--finetune-epochs", "0", "--tune-trials", "8", "--json"]
    r = run_cli(*args, "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)  # MetaSchedule's console logs must not leak into --json output
    report = json.loads((tmp_path / "a" / "tiny" / "report.json").read_text())
    d = report["deploy"]
    assert set(d["runtimes"]) == {"onnxruntime", "tvm", "tvm-tuned"}
    tuning = d["tvm"]["tuning"]
    assert tuning["tasks"] >= 1 and tuning["tasks_from_database"] == 0 and tuning["trials_requested"] == 8
    assert d["tvm"]["verification"]["ok"]
    median = {k: v["latency"]["median_ms"] for k, v in d["runtimes"].items()}
    assert d["deployed_runtime"] == min(median, key=median.get)
    # model.tvm.so is the faster TVM library: tuned, or the default schedule when 8 trials lost to it.
    assert d["tvm"]["schedule"].startswith("tuned" if median["tvm-tuned"] < median["tvm"] else "default")
    assert os.path.isdir(tuning["database"]) and tuning["database"].startswith(str(tmp_path / "tuning"))
    # The same final model again: every task comes from the database, no trial runs.
    r = run_cli(*args, "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "b" / "tiny" / "report.json").read_text())["deploy"]["tvm"]["tuning"]
    assert again["tasks_from_database"] == again["tasks"] == tuning["tasks"]
    # Only trials the database does not hold yet run: the first run's (records less the seeded defaults).
    assert again["trials_in_database_before"] >= 1 and again["trials_run"] == max(0, 8 - again["trials_in_database_before"])
    if again["trials_run"] == 0:
        assert again["seconds"] < tuning["seconds"]
    # A teammate (or a CI cache) imports the export: their first run tunes nothing either.
    assert run_cli("tuning", "export", str(tmp_path / "tuning.jsonl")).returncode == 0
    monkeypatch.setenv("EDGEPRUNE_TUNING_DB", str(tmp_path / "teammate"))
    r = run_cli("tuning", "import", str(tmp_path / "tuning.jsonl"))
    assert r.returncode == 0 and " 0 new" not in r.stdout, r.stdout
    r = run_cli(*args, "--out", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    shared = json.loads((tmp_path / "c" / "tiny" / "report.json").read_text())["deploy"]["tvm"]["tuning"]
    assert shared["tasks_from_database"] == shared["tasks"] and shared["database"].startswith(str(tmp_path / "teammate"))
