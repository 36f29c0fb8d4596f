"""``edgeprune calibrate`` against the real ONNX Runtime: tables written, fit and accuracy reported, resumed."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edgeprune.cli import cli
from edgeprune.config import CompileConfig
from edgeprune.stages.calibrate import calibrate
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
    assert stored["fitted"] == c.fitted
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
