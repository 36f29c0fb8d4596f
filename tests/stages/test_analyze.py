"""``edgeprune analyze``: sensitivity per group, frozen layers, latency share and floor, before any search."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeprune.config import CompileConfig
from edgeprune.export.onnx import export_verified
from edgeprune.latency.backends.onnxruntime import profile_nodes
from edgeprune.stages.analyze import analyze
from tests.conftest import run_cli, tiny_resnet
from tests.test_pipeline import PROFILE, Opener


def test_profile_nodes_attributes_the_kernel_time_to_onnx_nodes():
    x = torch.randn(1, 3, 32, 32)
    onnx_bytes = export_verified(tiny_resnet(), (3, 32, 32), x)[0]
    nodes = profile_nodes(onnx_bytes, x.numpy(), runs=5)
    ops = {op for _, op, _ in nodes}
    assert "Conv" in ops and all(ms >= 0 for _, _, ms in nodes)
    # Attribution, not speed (a time share depends on the machine's load; ONNX Runtime fuses and renames nodes):
    # the convolutions are profiled as such, one entry per kernel, with time spent.
    import onnx

    graph_convs = sum(n.op_type == "Conv" for n in onnx.load_from_string(onnx_bytes).graph.node)
    profiled_convs = [ms for _, op, ms in nodes if op == "Conv"]
    assert 1 <= len(profiled_convs) <= graph_convs
    assert len({name for name, _, _ in nodes}) == len(nodes) and sum(ms for *_, ms in nodes) > 0


def test_analysis_of_a_model_before_any_search(tiny_ckpt, tmp_path):
    profile = tmp_path / "fakebox.toml"
    profile.write_text(PROFILE.format(extra=""))
    cfg = CompileConfig(model=str(tiny_ckpt), target=str(profile), data="digits", out=str(tmp_path / "o"),
                        calib_samples=60)
    a = analyze(cfg, keeps=(0.25, 0.75), val_samples=60, opener=Opener())
    assert len(a.groups) >= 3 and a.frozen == {"fc": "output layer: its width is the number of classes"}
    for g in a.groups:
        assert set(g.accuracy) == {"0.25", "0.75"}
        w_small, acc = g.accuracy["0.25"]
        assert w_small < g.full and 0 <= acc <= 1
    assert 0 < a.latency_floor_ratio < 1  # the smallest model measured (by the fake meter) below the baseline
    assert abs(sum(a.op_share.values()) - 1) < 1e-6 and "Conv" in a.op_share
    d = json.loads(json.dumps(a.to_dict()))
    assert d["groups"][0]["name"] == a.groups[0].name
    from edgeprune.reporting.analysis import render_analysis_html

    page = render_analysis_html(d)
    assert page.count("data:image/png;base64,") == 2 and "Sensitivity of each prunable group" in page


@pytest.mark.slow
def test_analyze_from_the_command_line_measures_for_real(tiny_ckpt, tmp_path):
    profile = tmp_path / "ort.toml"  # ONNX Runtime only: the real meter, without compiling TVM baselines
    profile.write_text(PROFILE.format(extra="").replace("rounds = 2", "rounds = 4"))
    r = run_cli("analyze", str(tiny_ckpt), "--data", "digits", "--target", str(profile), "--json")
    assert r.returncode == 0, r.stderr
    a = json.loads(r.stdout)
    assert a["target"] == "fakebox" and a["baseline_latency"]["backend"] == "onnxruntime"
    assert 0 < a["latency_floor_ratio"] < 1.2 and np.isfinite(a["base_accuracy"])
    r = run_cli("analyze", str(tiny_ckpt), "--data", "digits", "--target", str(profile), "--html",
                str(tmp_path / "analysis.html"))
    assert r.returncode == 0 and "latency floor" in r.stdout and "keep 0.25" in r.stdout
    assert "img-sensitivity" in (tmp_path / "analysis.html").read_text()
