"""Models the way users have them, through the pipeline (fake meter, as in tests/test_pipeline.py): a whole
pickled module gives a model.pt that is one too, and --train-device cuda without CUDA is refused at once."""

from __future__ import annotations

import json

import pytest
import torch

from edgeprune.errors import EdgePruneError
from edgeprune.model.load import load_model
from edgeprune.pipeline import compile_model
from tests.conftest import tiny_resnet
from tests.test_pipeline import Opener, cfg, profile  # noqa: F401 - profile is a fixture


@pytest.mark.slow
def test_a_pickled_module_input_gives_a_pickled_module_model_pt(tmp_path, profile):  # noqa: F811
    from edgeprune.artifacts import verify_artifacts

    torch.save(tiny_resnet(), tmp_path / "whole.pt")
    r = compile_model(cfg(tmp_path / "whole.pt", profile, tmp_path / "out", trust_model_code=True), opener=Opener())
    out = tmp_path / "out" / "whole"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_pt_format"] == "pickled-module" and manifest["artifacts"]["model.pt"]["format"] == "pickled-module"
    assert manifest["artifacts"]["model.pt"]["verification"]["ok"] is True
    assert r.report["model"]["model_pt_format"] == "pickled-module" and r.report["model"]["arch"] is None
    assert [w for w in r.report["warnings"] if "model.pt will be one too" in w and "--trust-model-code" in w]
    assert r.report["search"]["train_device"] == "cpu" and r.report["final"]["finetune"]["device"] == "cpu"
    with pytest.raises(EdgePruneError, match="--trust-model-code"):
        load_model(out / "model.pt")
    again = load_model(out / "model.pt", trust_code=True)
    assert again.meta["run_id"] == r.run_id and again.pruning_history
    checks = {c.name: c for c in verify_artifacts(out)}
    assert checks["model.pt vs model.onnx"].ok is None and "pickled module" in checks["model.pt vs model.onnx"].detail
    assert all(c.ok is not False for c in checks.values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_train_device_cuda_without_cuda_is_refused_before_any_work(tiny_ckpt, profile, tmp_path):  # noqa: F811
    opener = Opener()
    with pytest.raises(EdgePruneError, match="--train-device cuda: no CUDA device is available"):
        compile_model(cfg(tiny_ckpt, profile, tmp_path / "out", train_device="cuda"), opener=opener)
    assert opener.calls == 0 and not (tmp_path / "out").exists()
