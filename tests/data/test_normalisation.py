"""Normalisation: parsing, the resolution order (flag > checkpoint > model config > ImageNet + warning), and
data brought to it."""

import numpy as np
import pytest
import torch

from edgeprune.data import IMAGENET, LEGACY, UNIT, Normalisation, load_data, parse_normalisation, resolve_normalisation
from edgeprune.errors import EdgePruneError


def test_parse_names_two_floats_and_per_channel():
    assert parse_normalisation("imagenet") == IMAGENET
    assert parse_normalisation("ImageNet ") == IMAGENET
    assert parse_normalisation("unit") == UNIT
    n = parse_normalisation("0.5,0.25")
    assert n.mean == (0.5,) and n.std == (0.25,) and n.name == "legacy"
    assert n.for_channels(3).mean == (0.5, 0.5, 0.5)
    n = parse_normalisation("0.1,0.2,0.3,0.4,0.5,0.6")
    assert n.mean == (0.1, 0.2, 0.3) and n.std == (0.4, 0.5, 0.6) and n.name == "custom"
    assert parse_normalisation("0.485,0.456,0.406,0.229,0.224,0.225").name == "imagenet"


@pytest.mark.parametrize("bad", ["", "blue", "0.5", "1,2,3", "0.5,0", "0.5,-1", "a,b", "0.5,nan"])
def test_parse_refuses_bad_values(bad):
    with pytest.raises(EdgePruneError, match="--normalize|std"):
        parse_normalisation(bad)


def test_per_channel_values_must_match_the_channels():
    with pytest.raises(EdgePruneError, match="has 3 channels"):
        IMAGENET.for_channels(1)
    assert UNIT.for_channels(1) == Normalisation((0.0,), (1.0,), "unit")


def test_recorded_forms_round_trip():
    assert Normalisation.from_dict({"mean": 0.5, "std": 0.25}).for_channels(3) == LEGACY.for_channels(3)
    assert Normalisation.from_dict(IMAGENET.to_dict()) == IMAGENET


class _Timmish(torch.nn.Module):
    pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "input_size": (3, 224, 224)}


class _Legacyish(torch.nn.Module):
    default_cfg = {"mean": (0.1, 0.2, 0.3), "std": (0.3, 0.2, 0.1)}


def test_resolution_order():
    ck = {"normalisation": {"name": "unit", "mean": [0, 0, 0], "std": [1, 1, 1]}}
    # 1. the flag beats everything
    n, src, warn = resolve_normalisation("imagenet", channels=3, checkpoint_meta=ck, model=_Timmish())
    assert n == IMAGENET and src == "--normalize" and warn is None
    # 2. the checkpoint's record beats the model's config
    n, src, warn = resolve_normalisation(None, channels=3, checkpoint_meta=ck, model=_Timmish())
    assert n == UNIT.for_channels(3) and "checkpoint" in src and warn is None
    # an edgeprune checkpoint without a record: the legacy training normalisation (examples/*.pt)
    n, src, warn = resolve_normalisation(None, channels=3, checkpoint_meta={"data": "shapes"}, model=_Timmish())
    assert n == LEGACY.for_channels(3) and warn is None
    # a zoo architecture's bare state dict: its training default
    n, _, warn = resolve_normalisation(None, channels=3, zoo_arch="resnet20", model=torch.nn.Identity())
    assert n == LEGACY.for_channels(3) and warn is None
    # 3. the model's own config (timm's pretrained_cfg, or default_cfg)
    n, src, warn = resolve_normalisation(None, channels=3, model=_Timmish())
    assert n.mean == (0.5, 0.5, 0.5) and n.std == (0.5, 0.5, 0.5) and "pretrained_cfg" in src and warn is None
    n, src, _ = resolve_normalisation(None, channels=3, model=_Legacyish())
    assert n.mean == (0.1, 0.2, 0.3) and "default_cfg" in src
    # 4. nothing known: ImageNet, with one warning that says how to change it
    n, src, warn = resolve_normalisation(None, channels=3, model=torch.nn.Identity())
    assert n == IMAGENET and "assumed" in src
    assert "assuming imagenet" in warn and "--normalize" in warn


def test_splits_carry_and_apply_the_normalisation(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (200, 3, 8, 8), dtype=np.uint8), y=rng.integers(0, 3, 200))
    spec = str(tmp_path / "d.npz")
    legacy = load_data(spec)
    unit = load_data(spec, UNIT)
    assert legacy.summary()["normalisation"] == {"name": "legacy", "mean": [0.5] * 3, "std": [0.25] * 3}
    assert unit.summary()["normalisation"] == {"name": "unit", "mean": [0.0] * 3, "std": [1.0] * 3}
    assert torch.allclose(unit.val[0], legacy.val[0] * 0.25 + 0.5, atol=1e-6)
    imnet = load_data(spec, IMAGENET)
    m = torch.tensor(IMAGENET.mean).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET.std).view(1, 3, 1, 1)
    assert torch.allclose(imnet.val[0] * s + m, unit.val[0], atol=1e-5)
