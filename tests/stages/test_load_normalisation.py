"""The load stage: the run's normalisation (flag > checkpoint > model config > ImageNet + warning), data
brought to the model's input shape, the statement of model.onnx's input, and --resume refusing another
normalisation."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from edgeprune.config import CompileConfig
from edgeprune.data import IMAGENET, load_data, parse_normalisation
from edgeprune.errors import RunStoreError
from edgeprune.model.load import save_checkpoint
from edgeprune.pipeline import _open_run
from edgeprune.progress import RecordingReporter, Reporter
from edgeprune.report import data_summary, model_input
from edgeprune.search.store import RunStore
from edgeprune.stages.load import load
from tests.conftest import tiny_resnet


@pytest.fixture()
def npz48(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d48.npz", x=rng.integers(0, 255, (150, 3, 48, 48), dtype=np.uint8),
             y=np.arange(150) % 10)
    return str(tmp_path / "d48.npz")


def _load(tmp_path, model, data, **kw):
    rep = RecordingReporter(Reporter())
    inputs = load(CompileConfig(model=str(model), data=data, out=str(tmp_path / "out"), **kw), rep)
    return inputs, rep.warnings


def test_an_edgeprune_checkpoint_without_a_record_is_legacy_and_data_are_resized(tiny_ckpt, tmp_path, npz48):
    inputs, warnings = _load(tmp_path, tiny_ckpt, npz48)
    assert warnings == [] and inputs.data.normalisation.name == "legacy"
    assert inputs.data.input_shape == (3, 32, 32)  # the 48×48 data brought to the model's shape
    d = data_summary(inputs)
    assert d["source_shape"] == [3, 48, 48] and d["normalisation"]["source"].startswith("edgeprune checkpoint")
    assert d["onnx_input"].startswith("float32 N×3×32×32") and "(x − mean)/std" in d["onnx_input"]
    m = model_input(inputs)
    assert m["shape"] == ["N", 3, 32, 32] and m["batch"].startswith("dynamic")


def test_the_flag_wins(tiny_ckpt, tmp_path, npz48):
    inputs, _ = _load(tmp_path, tiny_ckpt, npz48, normalize="imagenet")
    assert inputs.data.normalisation.name == "imagenet" and inputs.normalisation_source == "--normalize"


def test_a_state_dict_of_an_unknown_model_assumes_imagenet_with_one_warning(tmp_path, npz48):
    torch.save(tiny_resnet().state_dict(), tmp_path / "sd.pt")
    with pytest.warns(UserWarning, match="assuming imagenet"):
        inputs, warnings = _load(tmp_path, tmp_path / "sd.pt", npz48, arch="tests.conftest:tiny_resnet",
                                 input_shape=(3, 40, 40))
    assert len(warnings) == 1 and "--normalize" in warnings[0]
    assert inputs.data.normalisation.name == "imagenet" and inputs.data.input_shape == (3, 40, 40)


def test_a_checkpoint_records_the_normalisation_it_was_run_with(tmp_path, npz48):
    save_checkpoint(tmp_path / "m.pt", model=tiny_resnet(), arch="tests.conftest:tiny_resnet", arch_kwargs={},
                    input_shape=(3, 32, 32), meta={"normalisation": {"name": "unit", "mean": [0, 0, 0],
                                                                     "std": [1, 1, 1], "source": "--normalize"}})
    inputs, warnings = _load(tmp_path, tmp_path / "m.pt", npz48)
    assert warnings == [] and inputs.data.normalisation.name == "unit"


def test_resume_refuses_another_normalisation(tiny_ckpt, tmp_path, npz48):
    inputs, _ = _load(tmp_path, tiny_ckpt, npz48)
    store = RunStore(tmp_path / "runs.sqlite")
    try:
        run = _open_run(store, inputs)
        cfg = replace(inputs.cfg, resume=run)
        same = replace(inputs, cfg=cfg, data=load_data(npz48, parse_normalisation("0.5,0.25"), (3, 32, 32)))
        assert _open_run(store, same) == run  # the same values, however they were given
        other = replace(inputs, cfg=cfg, data=load_data(npz48, IMAGENET, (3, 32, 32)))
        with pytest.raises(RunStoreError, match="normalisation"):
            _open_run(store, other)
    finally:
        store.close()
