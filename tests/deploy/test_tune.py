"""MetaSchedule tuning: a tuned library that still matches ONNX Runtime, and a database reused next time."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeprune.deploy.tune import tune
from edgeprune.deploy.tvm import export_library, verify_against_ort
from edgeprune.export.onnx import export, simplify
from edgeprune.targets import load_target


def test_tuning_verifies_and_reuses_its_database(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4)).eval()
    proto, _ = simplify(export(model, (3, 16, 16)))
    settings = load_target("host").tvm
    ex, first = tune(proto, (3, 16, 16), settings, trials=8, db_dir=tmp_path / "db")
    assert first.tasks >= 1 and first.tasks_from_database == 0
    lib = export_library(ex, tmp_path / "t.so", settings)
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    assert verify_against_ort(lib, proto.SerializeToString(), x)["ok"]
    # Same workloads again: every task comes from the database and no trial runs.
    _, second = tune(proto, (3, 16, 16), settings, trials=8, db_dir=tmp_path / "db")
    assert second.tasks_from_database == second.tasks == first.tasks
    assert second.seconds < first.seconds
