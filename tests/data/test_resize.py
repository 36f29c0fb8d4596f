"""Data brought to the model's input shape: image folders of any sizes (ImageNet evaluation transform),
resized .npz arrays, built-in data at another size (and their memory cap), and the clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from edgeprune.data import UNIT, load_data, splits
from edgeprune.data.readers import eval_transform
from edgeprune.errors import DataError, InputShapeError


def _folder(root, sizes, n_per_class=20):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            w, h = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_eval_transform_is_resize_shorter_side_then_centre_crop():
    img = Image.fromarray(np.arange(60 * 90 * 3, dtype=np.uint8).reshape(60, 90, 3))  # 90 wide, 60 high
    out = eval_transform(img, (28, 28))
    assert out.size == (28, 28)
    # round(28 / 0.875) = 32: shorter side 60 -> 32, longer 90 -> 48; then the centre 28×28 of it.
    ref = img.resize((48, 32), Image.BILINEAR).crop((10, 2, 38, 30))
    assert np.array_equal(np.asarray(out), np.asarray(ref))


def test_image_folder_of_mixed_sizes_is_resized_and_cropped(tmp_path):
    root = _folder(tmp_path / "imgs", [(40, 30), (17, 50), (24, 24), (64, 64)])
    d = load_data(str(root), UNIT, (3, 24, 24))
    assert d.input_shape == (3, 24, 24) and d.num_classes == 2
    assert len(d.train[1]) + len(d.val[1]) + len(d.calib[1]) == 40
    x = torch.cat([d.train[0], d.val[0], d.calib[0]])
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # unit normalisation: still in [0, 1]
    s = d.summary()
    assert s["source_shape"] == "images of different sizes" and "centre-cropped" in s["resize"]
    # An image that already has the model's size is taken as it is, not zoomed.
    f = sorted((root / "a").iterdir(), key=lambda p: int(p.stem))[2]  # a 24×24 one
    want = torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1).float() / 255
    assert any(torch.allclose(want, img, atol=1e-6) for img in x)


def test_image_folder_of_mixed_sizes_needs_a_shape(tmp_path):
    root = _folder(tmp_path / "imgs", [(20, 20), (30, 20)])
    with pytest.raises(DataError, match="different sizes.*--input-shape"):
        load_data(str(root))


def test_npz_is_resized_when_its_size_differs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((120, 3, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 3, 120))
    d = load_data(str(tmp_path / "d.npz"), UNIT, (3, 40, 24))
    assert d.input_shape == (3, 40, 24) and d.summary()["source_shape"] == [3, 16, 16]
    assert "bilinear" in d.summary()["resize"]
    # The same as torch's antialiased bilinear resize of the same images (split order is the seeded permutation).
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.interpolate(torch.from_numpy(x)[perm[:24]], size=(40, 24), mode="bilinear",
                                          align_corners=False, antialias=True)
    assert torch.allclose(d.val[0], ref, atol=1e-6)
    # Same size: untouched, and said so.
    same = load_data(str(tmp_path / "d.npz"), UNIT, (3, 16, 16))
    assert same.summary()["resize"] is None and torch.equal(same.val[0], torch.from_numpy(x)[perm[:24]])


def test_channel_mismatch_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "grey.npz", x=rng.random((100, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 2, 100))
    with pytest.raises(InputShapeError, match="1-channel images but the model expects 3 channels"):
        load_data(str(tmp_path / "grey.npz"), None, (3, 8, 8))


def test_too_much_user_data_is_refused_naming_count_and_size(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (100, 3, 8, 8), dtype=np.uint8), y=rng.integers(0, 2, 100))
    monkeypatch.setattr(splits, "MAX_USER_BYTES", 1e6)
    load_data.cache_clear()
    with pytest.raises(DataError, match=r"holds 100 images.*3×64×64.*at most 20 images"):
        load_data(str(tmp_path / "d.npz"), None, (3, 64, 64))


def test_builtin_at_64x64_and_its_cap(monkeypatch):
    # With a 20 MB cap, 64×64 leaves room for 406 images (the real 1.5 GB cap bites above about 98×98):
    # about 24% val, 12% calib, the rest train, and the summary says so.
    monkeypatch.setattr(splits, "MAX_BUILTIN_BYTES", 20e6)
    load_data.cache_clear()
    d = load_data("shapes", None, (3, 64, 64))
    assert d.input_shape == (3, 64, 64) and d.summary()["source_shape"] == [3, 32, 32]
    assert "generated at 3×32×32" in d.summary()["resize"]
    assert (len(d.train[1]), len(d.val[1]), len(d.calib[1])) == (406 - 97 - 49, 97, 49)
    assert sum(t[0].numel() * 4 for t in (d.train, d.val, d.calib)) <= 20e6
    assert "406 of its 13000 images" in d.summary()["note"]
    load_data.cache_clear()


def test_builtin_cap_at_224_keeps_splits_under_1_5_gb():
    per_image = 4 * 3 * 224 * 224
    keep = int(splits.MAX_BUILTIN_BYTES // per_image)
    assert 2400 < keep < 2500 and keep * per_image <= 1.5e9
