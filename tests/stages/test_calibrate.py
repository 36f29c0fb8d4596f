"""``edgeprune calibrate`` against the real ONNX Runtime: tables written, fit and accuracy reported, resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeprune.cli import cli
from edgeprune.config import CompileConfig
from edgeprune.latency.predictor import TableConditions
from edgeprune.progress import Reporter
from edgeprune.stages.analyse import analyse_model
from edgeprune.stages.calibrate import calibrate, predictor_for
from edgeprune.stages.load import load
from tests.test_pipeline import PROFILE


def test_calibrate_writes_a_table_and_a_fit_and_resumes_without_measuring_again(tiny_ckpt, tmp_path):
    profile = tmp_path / "fakebox.toml"
    profile.write_text(PROFILE.format(extra=""))
    cfg = CompileConfig(model=str(tiny_ckpt), target=str(profile), data="digits", out=str(tmp_path / "o"),
                        calib_samples=20)
    root = tmp_path / "cal"
    c = calibrate(cfg, root=root, grid=3, fit_samples=3, holdout=3, repeats=1)
    assert c.kernels_measured == c.kernels_in_table > 0 and c.runtime == "onnxruntime"
    assert c.fitted["n"] == c.kernel_only["n"] == 3 and 0 <= c.fitted["within"] <= 1
    assert c.fit["fitted"] and c.fit["b"] > 0 and len(c.fit["samples"]) == 4  # 3 candidates + the baseline
    stored = json.loads(Path(c.fit_file).read_text())
    assert stored["fitted"] == c.fitted and stored["fit"]["form"] == "linear"  # 4 samples: too few to choose
    # A stored fit is what later runs' predictors (screen, GDP) start from, in its form.
    inputs = load(cfg, Reporter())
    analysed = analyse_model(inputs, Reporter())
    Path(c.fit_file).write_text(json.dumps({**stored, "fit": {**stored["fit"], "form": "power", "a_ms": 0.5,
                                                              "b": 1.3}}))
    pred = predictor_for(inputs.loaded.model, inputs.shape, analysed.analysis,
                         TableConditions(**stored["conditions"]), root=root, grid=3)
    assert (pred.form, pred.a, pred.b, pred.fitted) == ("power", 0.5, 1.3, True)
    assert pred.predict_ms(pred.full_widths()) == pytest.approx(0.5 * pred.kernel_sum(pred.full_widths()) ** 1.3)
    samples = next(root.glob("fakebox/*/models/*.samples.jsonl"))
    lines = samples.read_text().count("\n")
    again = calibrate(cfg, root=root, grid=3, fit_samples=3, holdout=3, repeats=1)
    assert again.kernels_measured == 0 and samples.read_text().count("\n") == lines
    assert [h["measured"] for h in again.holdout] == [h["measured"] for h in c.holdout]


def test_the_calibrate_command_prints_the_accuracy(tiny_ckpt, tmp_path):
    profile = tmp_path / "fakebox.toml"
    profile.write_text(PROFILE.format(extra=""))
    r = CliRunner().invoke(cli, ["calibrate", str(tiny_ckpt), "--target", str(profile), "--data", "digits",
                                 "--dir", str(tmp_path / "cal"), "--grid", "3", "--fit-samples", "2",
                                 "--holdout", "2", "--repeats", "1"])
    assert r.exit_code == 0, r.output
    assert "held-back candidates within ±10%" in r.output and "fit: latency" in r.output
