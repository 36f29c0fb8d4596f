"""Libraries compiled with the tuning database (compile.tune.database_for / compile.tvm.build(database=)):
the records schedule the kernels whose shapes they were tuned for, the default schedule the rest, the result
computes what ONNX Runtime computes, and the TVM latency backend (the search's candidates) and the deploy
stage both use it.

The database here is real: MetaSchedule's JSONDatabase with records committed by
``seed_default_schedules`` (the default schedule's trace, timed on this machine), the records a tuning run
starts from; tests/compile/test_tune.py tunes with trials."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from edgeprune.compile.tune import database_for, open_database, seed_default_schedules
from edgeprune.compile.tvm import build, export_library, fused, import_onnx, make_target
from edgeprune.deploy.verify import verify_against_ort
from edgeprune.export.onnx import export, simplify
from edgeprune.latency.backends.tvmrt import TvmBackend
from edgeprune.targets.profile import TvmSettings

SHAPE = (3, 12, 12)
SETTINGS = TvmSettings(target={"kind": "llvm", "mcpu": "native", "num-cores": 1})


def _net(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 5)).eval()


def _proto(width: int):
    proto, _ = simplify(export(_net(width), SHAPE))
    return proto


def _seed(proto) -> int:
    """Commit a record for every task of ``proto`` without one into the target's database; returns how
    many tasks ``proto`` has."""
    import tvm.s_tir.meta_schedule as ms

    target = make_target(SETTINGS)
    mod = fused(import_onnx(proto, SHAPE), target)
    tasks = ms.relax_integration.extract_tasks(mod, target)
    from edgeprune.compile.tune import database_dir

    path = database_dir(SETTINGS)
    path.mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(path))
    assert seed_default_schedules(db, tasks, target) >= 1
    return len(tasks)


def test_no_database_until_it_holds_a_record(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_TUNING_DB", str(tmp_path / "tuning"))
    assert database_for(SETTINGS) is None
    _seed(_proto(8))
    assert database_for(SETTINGS) is not None and database_for(SETTINGS).parent == tmp_path / "tuning"


def test_records_schedule_the_kernels_they_match_and_the_library_matches_onnx_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_TUNING_DB", str(tmp_path / "tuning"))
    tuned = _proto(8)
    n_tasks = _seed(tuned)
    db = database_for(SETTINGS)
    x = np.random.default_rng(0).standard_normal((4, *SHAPE)).astype(np.float32)

    stats: dict = {}
    ex, _ = build(tuned, SHAPE, SETTINGS, database=db, stats=stats)
    assert stats["database"] == str(db) and stats["kernels"] >= 3
    # Every task of the tuned model has a record (task extraction dedups identical kernels).
    assert stats["from_database"] >= n_tasks and stats["from_database"] <= stats["kernels"]
    lib = export_library(ex, tmp_path / "a.so", SETTINGS)
    v = verify_against_ort(lib, onnx.load_from_string(tuned.SerializeToString()).SerializeToString(), x)
    assert v.ok, v.max_abs_diff

    # Another width: the first convolution (3→16) has the same shapes and keeps its record, the kernels
    # that involve the new width have none and get the default schedule.
    other = _proto(24)
    stats2: dict = {}
    ex2, _ = build(other, SHAPE, SETTINGS, database=db, stats=stats2)
    assert 1 <= stats2["from_database"] < stats2["kernels"]
    lib2 = export_library(ex2, tmp_path / "b.so", SETTINGS)
    assert verify_against_ort(lib2, other.SerializeToString(), x).ok


def test_the_database_is_read_again_only_when_it_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_TUNING_DB", str(tmp_path / "tuning"))
    _seed(_proto(8))
    path = database_for(SETTINGS)
    first = open_database(path)
    assert open_database(path) is first
    _seed(_proto(24))  # new records: the next compile sees them
    assert open_database(path) is not first


def test_the_tvm_backend_compiles_candidates_with_the_database(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_TUNING_DB", str(tmp_path / "tuning"))
    proto = _proto(8)
    backend = TvmBackend(SETTINGS)
    x = np.random.default_rng(1).standard_normal((2, *SHAPE)).astype(np.float32)
    plain = backend.outputs(proto.SerializeToString(), x)
    assert backend.database_use["compiles"] == 0  # no database yet: the default schedule alone
    _seed(proto)
    with_db = backend.outputs(proto.SerializeToString(), x)
    use = backend.database_use
    assert use["compiles"] == 1 and use["from_database"] >= 1 and use["database"] == str(database_for(SETTINGS))
    np.testing.assert_allclose(with_db, plain, rtol=1e-4, atol=1e-4)
