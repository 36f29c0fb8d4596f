import pytest
import torch

from edgeprune.errors import InputShapeError, ModelLoadError, UnknownArchitectureError
from edgeprune.model.arch import build, resolve_arch
from edgeprune.model.load import load_model, save_checkpoint, verify_checkpoint
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


# --- models the way users have them: their own file, inline and flag kwargs, timm / torchvision -----------

MYNETS = '''
import torch
from torch import nn
from blocks import stem  # a file beside this one: importable without PYTHONPATH


class Net(nn.Module):
    def __init__(self, width=8, num_classes=10):
        super().__init__()
        self.stem = stem(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.stem(x).mean((2, 3)))


def mynet(width=8, num_classes=10):
    return Net(width, num_classes)
'''
BLOCKS = '''
from torch import nn


def stem(width):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
'''


@pytest.fixture()
def user_file(tmp_path):
    """models/mynets.py (importing models/blocks.py) and a state dict of mynet(width=16) beside it."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "mynets.py").write_text(MYNETS)
    (folder / "blocks.py").write_text(BLOCKS)
    return folder / "mynets.py"


def _state_dict_of(user_file, path, **kw):
    from edgeprune.model.arch import resolve_arch

    torch.manual_seed(0)
    model = resolve_arch(f"{user_file}:mynet")(**kw)
    torch.save(model.state_dict(), path)
    return model


def test_a_users_own_file_with_inline_and_flag_kwargs(user_file, tmp_path, monkeypatch):
    from edgeprune.model.arch import parse_arch

    model = _state_dict_of(user_file, tmp_path / "sd.pt", width=16, num_classes=4)
    assert parse_arch("m:f(width=16, k=(3, 3), act='relu')") == ("m:f", {"width": 16, "k": (3, 3), "act": "relu"})
    monkeypatch.chdir(tmp_path)  # a relative path works from the current folder
    loaded = load_model(tmp_path / "sd.pt", arch="models/mynets.py:mynet(width=16, num_classes=4)")
    assert _same_outputs(loaded.model, model)
    # the recipe is recorded without the inline part and with an absolute path: it rebuilds from anywhere
    assert loaded.arch == f"{user_file.resolve()}:mynet" and loaded.arch_kwargs == {"width": 16, "num_classes": 4}
    # the flag's kwargs win over the inline ones
    loaded = load_model(tmp_path / "sd.pt", arch="models/mynets.py:mynet(width=4, num_classes=4)",
                        arch_kwargs={"width": 16})
    assert loaded.arch_kwargs == {"width": 16, "num_classes": 4} and _same_outputs(loaded.model, model)
    save_checkpoint(tmp_path / "ck.pt", model=loaded.model, arch=loaded.arch, arch_kwargs=loaded.arch_kwargs,
                    input_shape=(3, 32, 32))
    monkeypatch.chdir(user_file.parent.parent.parent)
    assert _same_outputs(load_model(tmp_path / "ck.pt").model, model)


def test_a_missing_file_or_factory_is_one_clear_line(user_file, tmp_path):
    _state_dict_of(user_file, tmp_path / "sd.pt", width=16)
    with pytest.raises(UnknownArchitectureError, match="does not exist") as e:
        load_model(tmp_path / "sd.pt", arch=str(tmp_path / "nope.py:mynet"))
    assert "\n" not in str(e.value)
    with pytest.raises(UnknownArchitectureError, match=r"has no 'resnet'.*defines: Net, mynet") as e:
        load_model(tmp_path / "sd.pt", arch=f"{user_file}:resnet")
    assert "\n" not in str(e.value)
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    with pytest.raises(UnknownArchitectureError, match="importing .*broken.py failed.*no_such_module_here"):
        resolve_arch(f"{tmp_path / 'broken.py'}:f")


def test_inline_arguments_are_literals_only(user_file):
    for bad, match in ((f"{user_file}:mynet(width=__import__('os'))", "not a literal"),
                       (f"{user_file}:mynet(16)", "by name"), (f"{user_file}:mynet(width=)", "cannot parse")):
        with pytest.raises(UnknownArchitectureError, match=match):
            build(bad, {})


def test_arch_kwargs_text_and_config_field():
    from edgeprune.config import CompileConfig, parse_arch_kwargs
    from edgeprune.errors import EdgePruneError

    assert parse_arch_kwargs("num_classes=10, width=16,act=relu,k=(3, 3),p=0.5") == {
        "num_classes": 10, "width": 16, "act": "relu", "k": (3, 3), "p": 0.5}
    c = CompileConfig(model="m.pt", arch_kwargs="width=16,num_classes=10")
    assert c.arch_kwargs == "num_classes=10, width=16" and c.arch_kwargs_dict() == {"num_classes": 10, "width": 16}
    assert hash(c) == hash(CompileConfig(model="m.pt", arch_kwargs={"width": 16, "num_classes": 10}))
    assert "arch_kwargs" in CompileConfig.SEARCH_KEYS  # --resume compares them
    for bad in ("10", "a b=1", "x="):
        with pytest.raises(EdgePruneError, match="not name=value"):
            CompileConfig(model="m.pt", arch_kwargs=bad)


def test_weights_that_do_not_fit_list_missing_unexpected_and_misshaped(tmp_path):
    from edgeprune.model.zoo import resnet20

    m = resnet20()
    sd = m.state_dict()
    sd["extra.weight"] = torch.zeros(3)  # unexpected
    del sd["conv1.weight"]  # missing
    sd["layer1.0.conv1.weight"] = torch.zeros(8, 16, 3, 3)  # mis-shaped
    torch.save(sd, tmp_path / "sd.pt")
    with pytest.raises(ModelLoadError) as e:
        load_model(tmp_path / "sd.pt", arch="resnet20")
    msg = str(e.value)
    assert "do not fit the architecture 'resnet20'" in msg
    assert "1 missing (in the model, not in the weights): conv1.weight" in msg
    assert "1 unexpected (in the weights, not in the model): extra.weight" in msg
    assert "1 mis-shaped: layer1.0.conv1.weight: weights (8, 16, 3, 3) vs model (16, 16, 3, 3)" in msg
    assert "--arch-kwargs num_classes" not in msg
    # many mismatches: five of each kind, and the count
    with pytest.raises(ModelLoadError, match=r"217 missing .*: conv1.weight, layer1.3.conv1.weight, "
                                             r"layer1.3.bn1.weight, layer1.3.bn1.bias, layer1.3.bn1.running_mean, "
                                             r"… 212 more") as e:
        load_model(tmp_path / "sd.pt", arch="resnet56")
    assert len(str(e.value).splitlines()) == 4


def test_only_the_classifier_differs_hints_num_classes(tmp_path):
    from edgeprune.model.zoo import resnet20

    torch.save(resnet20(num_classes=7).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ModelLoadError) as e:
        load_model(tmp_path / "sd.pt", arch="resnet20")
    msg = str(e.value)
    assert "2 mis-shaped: fc.weight: weights (7, 64) vs model (10, 64); fc.bias: weights (7) vs model (10)" in msg
    assert "pass --arch-kwargs num_classes=7" in msg
    assert _same_outputs(load_model(tmp_path / "sd.pt", arch="resnet20", arch_kwargs={"num_classes": 7}).model,
                         load_model(tmp_path / "sd.pt", arch="resnet20(num_classes=7)").model)


@pytest.mark.parametrize("arch,package", [("timm:efficientnet_b0", "timm"), ("torchvision.models:resnet18", "torchvision")])
def test_timm_or_torchvision_missing_gives_the_install_hint(arch, package, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, package, None)  # not importable, installed here or not
    torch.save(resnet20().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(UnknownArchitectureError) as e:
        load_model(tmp_path / "sd.pt", arch=arch)
    assert f"needs {package}" in str(e.value)
    assert "python -m pip install -c constraints-vision.txt -e '.[vision]'" in str(e.value)


@pytest.mark.vision
def test_timm_and_torchvision_models_build_without_downloading(tmp_path):
    pytest.importorskip("torchvision")
    pytest.importorskip("timm")
    for arch in ("torchvision.models:resnet18", "timm:resnet18"):
        net = build(arch, {"num_classes": 10})
        torch.save(net.state_dict(), tmp_path / "sd.pt")
        loaded = load_model(tmp_path / "sd.pt", arch=arch, arch_kwargs={"num_classes": 10}, input_shape=(3, 64, 64))
        assert loaded.arch == arch and loaded.arch_kwargs == {"num_classes": 10}
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.allclose(net.eval()(x), loaded.model(x))
    with pytest.raises(UnknownArchitectureError, match="timm has no model"):
        resolve_arch("timm:no_such_net")
    with pytest.raises(ModelLoadError, match="never downloads"):
        build("timm:resnet18", {"pretrained": True})


# --- a whole pickled module: model.pt is one too, and reloads with trust -----------------------------------

def test_a_pickled_module_round_trips_through_model_pt(tmp_path):
    from edgeprune.model.load import PT_PICKLED

    torch.save(tiny_resnet(), tmp_path / "whole.pt")
    loaded = load_model(tmp_path / "whole.pt", trust_code=True)
    model = loaded.model
    a = analyse(model, (3, 32, 32), round_to=8)
    pruned, history = prune(model, (3, 32, 32), a, tuple(g.choices[0] for g in a.groups))
    fmt = save_checkpoint(tmp_path / "model.pt", model=pruned, arch=loaded.arch, arch_kwargs={},
                          input_shape=(3, 32, 32), pruning_history=history, meta={"run_id": "r1"})
    assert fmt == PT_PICKLED
    with pytest.raises(ModelLoadError, match="--trust-model-code"):
        load_model(tmp_path / "model.pt")
    again = load_model(tmp_path / "model.pt", trust_code=True)
    assert again.meta["run_id"] == "r1" and again.meta["model_pt_format"] == PT_PICKLED
    assert again.pruning_history == history and _same_outputs(again.model, pruned)
    v = verify_checkpoint(tmp_path / "model.pt", pruned, torch.randn(2, 3, 32, 32), trust_code=True)
    assert v.ok
    assert not verify_checkpoint(tmp_path / "model.pt", pruned, torch.randn(2, 3, 32, 32)).ok  # without trust


def test_a_pickled_module_whose_class_cannot_be_imported(tmp_path, monkeypatch):
    import sys

    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "ep_lost_models.py").write_text(MYNETS.replace("from blocks import stem", "") + BLOCKS)
    monkeypatch.syspath_prepend(str(folder))
    import ep_lost_models

    torch.save(ep_lost_models.mynet(), tmp_path / "whole.pt")
    del sys.modules["ep_lost_models"]
    sys.path.remove(str(folder))
    with pytest.raises(ModelLoadError) as e:
        load_model(tmp_path / "whole.pt", trust_code=True)
    msg = str(e.value)
    assert "needs module 'ep_lost_models', which cannot be imported" in msg and "PYTHONPATH" in msg
    assert "--arch path/to/file.py:factory" in msg and "corrupt" not in msg
    # the module is there but no longer has the class
    (folder / "ep_lost_models.py").write_text("x = 1\n")
    sys.path.insert(0, str(folder))
    try:
        with pytest.raises(ModelLoadError, match="needs class 'Net' of module 'ep_lost_models'"):
            load_model(tmp_path / "whole.pt", trust_code=True)
    finally:
        sys.modules.pop("ep_lost_models", None)


# --- --train-device -----------------------------------------------------------------------------------------

def test_train_device_cpu_and_auto_run_cuda_without_cuda_is_clear():
    from edgeprune.config import CompileConfig
    from edgeprune.errors import EdgePruneError
    from edgeprune.model.evaluate import accuracy, recalibrate_bn, resolve_device
    from edgeprune.model.finetune import TrainConfig, train

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(EdgePruneError, match="--train-device cuda: no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(EdgePruneError, match="auto, cpu or cuda"):
        CompileConfig(model="m.pt", train_device="gpu")
    torch.manual_seed(0)
    x, y = torch.randn(20, 3, 16, 16), torch.randint(0, 10, (20,))
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))
    assert accuracy(m, x, y, device="cpu") == accuracy(m, x, y)
    recalibrate_bn(m, x, device="cpu")
    losses = train(m, x, y, TrainConfig(epochs=1, batch_size=10), device="cpu")
    assert len(losses) == 1 and next(m.parameters()).device.type == "cpu"
