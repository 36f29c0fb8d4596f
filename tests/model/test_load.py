import pytest
import torch

from edgeprune.errors import InputShapeError, ModelLoadError, UnknownArchitectureError
from edgeprune.model.load import load_model, resolve_arch, save_checkpoint, verify_checkpoint
from edgeprune.model.prune import analyse, channel_counts, prune
from edgeprune.model.zoo import resnet20
from tests.conftest import tiny_resnet


def _same_outputs(a, b):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x))


def test_checkpoint_round_trip_loads_with_weights_only(tiny_ckpt):
    ck = torch.load(tiny_ckpt, weights_only=True)  # must not need pickled code
    assert ck["format"] == "edgeprune-checkpoint"
    loaded = load_model(tiny_ckpt)
    assert loaded.arch == "tests.conftest:tiny_resnet" and loaded.input_shape == (3, 32, 32)
    assert _same_outputs(loaded.model, tiny_resnet())


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_empty_file(tmp_path):
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load_model(tmp_path / "e.pt")


def test_corrupt_and_truncated_files(tmp_path, tiny_ckpt):
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(tmp_path / "junk.pt")
    data = tiny_ckpt.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(tmp_path / "trunc.pt")


def test_pickled_module_needs_explicit_trust(tmp_path):
    torch.save(tiny_resnet(), tmp_path / "whole.pt")
    with pytest.raises(ModelLoadError, match="--trust-model-code"):
        load_model(tmp_path / "whole.pt")
    loaded = load_model(tmp_path / "whole.pt", trust_code=True)
    assert loaded.arch is None and _same_outputs(loaded.model, tiny_resnet())


def test_state_dict_needs_arch(tmp_path):
    torch.manual_seed(1)
    m = resnet20()
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(tmp_path / "sd.pt")
    loaded = load_model(tmp_path / "sd.pt", arch="resnet20")
    assert _same_outputs(loaded.model, m)
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model(tmp_path / "sd.pt", arch="resnet56")


def test_unknown_architecture(tmp_path):
    save_checkpoint(tmp_path / "u.pt", model=tiny_resnet(), arch="resnet999", arch_kwargs={}, input_shape=(3, 32, 32))
    with pytest.raises(UnknownArchitectureError, match="resnet999"):
        load_model(tmp_path / "u.pt")
    with pytest.raises(UnknownArchitectureError, match="cannot import"):
        resolve_arch("no_such_pkg.mod:fn")


def test_wrong_input_shape(tiny_ckpt):
    with pytest.raises(InputShapeError, match="input shape"):
        load_model(tiny_ckpt, input_shape=(1, 32, 32))


def test_wrong_type_of_object(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelLoadError, match="not a model"):
        load_model(tmp_path / "list.pt")


def _pruned_tiny(tmp_path):
    """A tiny ResNet pruned to its smallest widths, saved with its pruning history."""
    model = tiny_resnet()
    a = analyse(model, (3, 32, 32), round_to=8)
    pruned, history = prune(model, (3, 32, 32), a, tuple(g.choices[0] for g in a.groups))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model=pruned, arch="tests.conftest:tiny_resnet", arch_kwargs={}, input_shape=(3, 32, 32),
                    pruning_history=history)
    return pruned, path


def test_verify_checkpoint_of_a_pruned_model(tmp_path):
    pruned, path = _pruned_tiny(tmp_path)
    assert channel_counts(pruned)["layer3.0.conv1"] < 64  # really pruned: the reload must replay the history
    pruned.train()
    torch.manual_seed(3)
    v = verify_checkpoint(path, pruned, torch.randn(4, 3, 32, 32))
    assert v.ok and v.samples == 4 and v.max_abs_diff <= 1e-5 and v.top1_agreement == 1.0
    assert v.method == "model.pt reloaded vs the exported model"
    assert pruned.training  # the caller's model is left in the mode it was in


def test_verify_checkpoint_detects_tampered_weights(tmp_path):
    pruned, path = _pruned_tiny(tmp_path)
    ck = torch.load(path, weights_only=True)
    ck["state_dict"]["fc.bias"][0] += 0.01  # one number changed: still loads (same shapes), differs
    torch.save(ck, path)
    torch.manual_seed(3)
    v = verify_checkpoint(path, pruned, torch.randn(4, 3, 32, 32))
    assert not v.ok and v.max_abs_diff > 1e-3 and v.samples == 4


def test_verify_checkpoint_that_cannot_be_rebuilt(tmp_path):
    # A trusted whole-module pickle has no rebuild recipe: the pipeline writes arch "unknown".
    model = tiny_resnet()
    save_checkpoint(tmp_path / "model.pt", model=model, arch="unknown", arch_kwargs={}, input_shape=(3, 32, 32))
    v = verify_checkpoint(tmp_path / "model.pt", model, torch.randn(2, 3, 32, 32))
    assert not v.ok and v.samples == 2
    assert "cannot be reloaded" in v.method and "unknown architecture 'unknown'" in v.method
    assert "\n" not in v.method
    # Weights that no longer fit the recorded pruning history: not ok either, never an exception.
    pruned, path = _pruned_tiny(tmp_path)
    ck = torch.load(path, weights_only=True)
    ck["pruning_history"] = []
    torch.save(ck, path)
    v = verify_checkpoint(path, pruned, torch.randn(2, 3, 32, 32))
    assert not v.ok and "do not fit" in v.method
