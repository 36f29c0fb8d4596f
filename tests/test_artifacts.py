"""``edgeprune verify DIR`` against a good folder and tampered ones."""

from __future__ import annotations

import json

import pytest
import torch

from edgeprune.artifacts import verify_artifacts
from edgeprune.errors import EdgePruneError
from edgeprune.pipeline import compile_model
from edgeprune.report import sha256_file
from tests.conftest import run_cli
from tests.test_pipeline import PROFILE, Opener, cfg


@pytest.fixture()
def built(tiny_ckpt, tmp_path):
    profile = tmp_path / "fakebox.toml"
    profile.write_text(PROFILE.format(extra=""))
    return compile_model(cfg(tiny_ckpt, str(profile), tmp_path / "out"), opener=Opener()).out_dir


def _by_name(checks):
    return {c.name: c for c in checks}


def test_a_good_folder_passes_every_check(built):
    checks = _by_name(verify_artifacts(built))
    assert all(c.ok for c in checks.values()), checks
    assert {"model.onnx sha256", "model.pt sha256", "model.onnx onnx.checker", "model.pt vs model.onnx"} <= set(checks)
    assert "calibration images of 'digits'" in checks["model.pt vs model.onnx"].detail  # real inputs


def test_a_changed_file_fails_its_hash(built):
    (built / "model.onnx").write_bytes((built / "model.onnx").read_bytes() + b"\0")
    checks = _by_name(verify_artifacts(built))
    assert checks["model.onnx sha256"].ok is False and "changed after it was written" in checks["model.onnx sha256"].detail


def test_weights_that_no_longer_match_the_onnx_model_fail_even_with_a_fixed_up_manifest(built):
    ck = torch.load(built / "model.pt", weights_only=True)
    name = next(k for k, v in ck["state_dict"].items() if k.endswith("weight") and v.dim() == 4)
    ck["state_dict"][name] = ck["state_dict"][name] + 0.5
    torch.save(ck, built / "model.pt")
    manifest = json.loads((built / "manifest.json").read_text())  # a careful forger updates the hash too
    manifest["artifacts"]["model.pt"].update(sha256=sha256_file(built / "model.pt"),
                                             bytes=(built / "model.pt").stat().st_size)
    (built / "manifest.json").write_text(json.dumps(manifest))
    checks = _by_name(verify_artifacts(built))
    assert checks["model.pt sha256"].ok and checks["model.pt vs model.onnx"].ok is False


def test_the_cli_exits_4_on_a_tampered_folder_and_2_on_a_wrong_one(built, tmp_path):
    assert run_cli("verify", str(built)).returncode == 0
    (built / "model.onnx").write_bytes(b"garbage")
    r = run_cli("verify", str(built), "--json")
    assert r.returncode == 4 and "Traceback" not in r.stderr
    checks = json.loads(r.stdout)
    assert any(c["name"] == "model.onnx sha256" and c["ok"] is False for c in checks)
    with pytest.raises(EdgePruneError, match="not an edgeprune artifact folder"):
        verify_artifacts(tmp_path / "nothing-here")
    assert run_cli("verify", str(tmp_path / "nothing-here")).returncode == 2


def test_the_report_page_is_written_again_from_the_folder(built, tmp_path):
    (built / "report.html").unlink()
    r = run_cli("report", str(built))
    assert r.returncode == 0 and (built / "report.html").read_text().count("<img") >= 3
    r = run_cli("report", str(tmp_path))
    assert r.returncode == 2 and "no report.json" in r.stderr
