"""The default CPU schedule (compile.schedule): which kernels it schedules, and that scheduled libraries
compute what ONNX Runtime computes, on real inputs, for every kind of convolution the zoo uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.compile.schedule import default_schedule
from edgeprune.compile.tvm import build, export_library, import_onnx, make_target
from edgeprune.deploy.verify import verify_against_ort
from edgeprune.export.onnx import export, simplify
from edgeprune.targets import load_target
from tests.conftest import tiny_resnet

SHAPE = (3, 16, 16)


def _mixed() -> nn.Module:
    """Plain, strided, grouped, depthwise and 1×1 convolutions, odd widths (12, 6×6 after the stride, 5
    channels), a residual add, ReLU6, pooling and a linear head."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU6())
            self.group = nn.Conv2d(24, 24, 3, padding=1, groups=4)
            self.dw = nn.Sequential(nn.Conv2d(24, 24, 3, stride=2, padding=2, groups=24), nn.ReLU())
            self.pw = nn.Conv2d(24, 5, 1)
            self.head = nn.Linear(5, 7)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(self.group(x) + x)
            x = self.pw(self.dw(x))
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    for m in Net().modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    return Net().eval()


def _proto(model, shape):
    proto, _ = simplify(export(model, shape))
    return proto


@pytest.mark.parametrize("make", [tiny_resnet, _mixed], ids=["resnet", "mixed"])
def test_every_reduction_kernel_is_scheduled_and_the_library_matches_onnxruntime(make, tmp_path):
    settings = load_target("host").tvm
    proto = _proto(make(), SHAPE)
    _, done, total = default_schedule(import_onnx(proto, SHAPE), make_target(settings))
    convs = sum(1 for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "GlobalAveragePool", "MatMul"))
    assert done >= convs - 1 and total > done  # reshape-like kernels keep TVM's lowering
    ex, _ = build(proto, SHAPE, settings)
    lib = export_library(ex, tmp_path / "m.so", settings)
    x = np.random.default_rng(0).standard_normal((6, *SHAPE)).astype("float32")
    verdict = verify_against_ort(lib, proto.SerializeToString(), x)
    assert verdict.ok and verdict.max_abs_diff < 1e-4, verdict


def test_the_unscheduled_build_is_still_available_and_agrees(tmp_path):
    """``schedule=False`` is TVM's own lowering (what the benchmark compares against): same outputs."""
    settings = load_target("host").tvm
    proto = _proto(_mixed(), SHAPE)
    x = np.random.default_rng(1).standard_normal((2, *SHAPE)).astype("float32")
    from edgeprune.latency import get_backend

    outs = []
    for flag in (True, False):
        ex, _ = build(proto, SHAPE, settings, schedule=flag)
        lib = export_library(ex, tmp_path / f"{flag}.so", settings)
        outs.append(np.concatenate([get_backend("tvm").outputs(lib, x[i : i + 1]) for i in range(2)]))
    assert np.allclose(outs[0], outs[1], atol=1e-5)


def test_a_cross_target_gets_its_own_vector_width(tmp_path):
    """aarch64 (NEON, 4 fp32 lanes) is scheduled too; the library is built for the board."""
    from edgeprune.compile.schedule import lanes

    rpi = load_target("rpi4").tvm
    assert lanes(make_target(rpi)) == 4 and lanes(make_target(load_target("host").tvm)) >= 8
    proto = _proto(tiny_resnet(), SHAPE)
    _, done, _ = default_schedule(import_onnx(proto, SHAPE), make_target(rpi))
    assert done >= 3


def test_a_database_without_records_compiles_with_the_default_schedule(tmp_path):
    """compile.tune's compile path: tuned records where the database has them, the default schedule for
    the rest (MetaSchedule's compile_relax leaves them unscheduled); here none, so all default."""
    import tvm.s_tir.meta_schedule as ms

    from edgeprune.compile.tune import compile_with_database

    settings = load_target("host").tvm
    proto = _proto(tiny_resnet(), SHAPE)
    (tmp_path / "db").mkdir()
    db = ms.database.JSONDatabase(work_dir=str(tmp_path / "db"))
    ex = compile_with_database(db, import_onnx(proto, SHAPE), make_target(settings))
    lib = export_library(ex, tmp_path / "t.so", settings)
    x = np.random.default_rng(2).standard_normal((3, *SHAPE)).astype("float32")
    assert verify_against_ort(lib, proto.SerializeToString(), x).ok


def test_neon_shaped_tiles_compute_the_same_on_this_machine(monkeypatch, tmp_path):
    """The schedule an aarch64 board gets (4-lane tiles) runs here with the same TIR, so its numerics are
    checked on this machine too, not only where an emulated device exists."""
    import edgeprune.compile.schedule as schedule

    monkeypatch.setattr(schedule, "lanes", lambda target: 4)
    settings = load_target("host").tvm
    proto = _proto(_mixed(), SHAPE)
    ex, _ = build(proto, SHAPE, settings)
    lib = export_library(ex, tmp_path / "neon-tiles.so", settings)
    x = np.random.default_rng(3).standard_normal((4, *SHAPE)).astype("float32")
    assert verify_against_ort(lib, proto.SerializeToString(), x).ok


def test_seeding_gives_every_task_the_default_schedule_as_a_measured_record(tmp_path):
    """Before tuning, each task gets the default schedule (TVM's lowering where the rule declines) as a
    record timed here: the database then never holds a task whose best is slower than the default, and
    a library compiled from it computes what ONNX Runtime computes."""
    import tvm.s_tir.meta_schedule as ms

    from edgeprune.compile.tune import compile_with_database, has_record, seed_default_schedules
    from edgeprune.compile.tvm import fused

    settings = load_target("host").tvm
    target = make_target(settings)
    proto = _proto(_mixed(), SHAPE)
    raw = import_onnx(proto, SHAPE)
    (tmp_path / "db").mkdir()
    db = ms.database.JSONDatabase(work_dir=str(tmp_path / "db"))
    tasks = ms.relax_integration.extract_tasks(fused(raw, target), target)
    assert not any(has_record(db, t.dispatched[0]) for t in tasks)
    assert seed_default_schedules(db, tasks, target) == len(tasks)
    assert all(has_record(db, t.dispatched[0]) for t in tasks)
    assert seed_default_schedules(db, tasks, target) == 0  # once per task
    for t in tasks:
        (best,) = db.get_top_k(db.commit_workload(t.dispatched[0]), 1)
        assert 0 < min(best.run_secs) < 0.1  # seconds per call of one small kernel
    lib = export_library(compile_with_database(db, raw, target), tmp_path / "seeded.so", settings)
    x = np.random.default_rng(4).standard_normal((3, *SHAPE)).astype("float32")
    assert verify_against_ort(lib, proto.SerializeToString(), x).ok


def test_tvm_kernel_tables_are_keyed_by_the_schedule_version():
    """Latency-predictor tables timed with another TVM schedule are not reused (their kernels ran 20-70x
    slower before the default schedule); ONNX Runtime's keep its plain version."""
    from edgeprune.compile.schedule import SCHEDULE_VERSION
    from edgeprune.latency import get_backend
    from edgeprune.stages.calibrate import table_version

    tvm = get_backend("tvm")
    assert table_version("tvm", tvm) == f"{tvm.version()}+{SCHEDULE_VERSION}"
    ort = get_backend("onnxruntime")
    assert table_version("onnxruntime", ort) == ort.version()


def test_a_multicore_target_runs_the_outer_tiles_in_parallel_and_computes_the_same(tmp_path):
    """Boards (rpi4: num-cores 4) get the parallel outer loop; checked here with 2 cores."""
    import dataclasses

    host = load_target("host").tvm
    settings = dataclasses.replace(host, target=dict(host.target, **{"num-cores": 2}))
    proto = _proto(_mixed(), SHAPE)
    mod, _, _ = default_schedule(import_onnx(proto, SHAPE), make_target(settings))
    assert "T.parallel" in mod.script()
    lib = export_library(build(proto, SHAPE, settings)[0], tmp_path / "par.so", settings)
    x = np.random.default_rng(5).standard_normal((3, *SHAPE)).astype("float32")
    assert verify_against_ort(lib, proto.SerializeToString(), x).ok
