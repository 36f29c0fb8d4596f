import pickle

import numpy as np
import pytest
from PIL import Image

from edgeprune.data import load_data
from edgeprune.errors import DataError


def test_npz_channels_last_uint8(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (300, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 4, 300)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_data(str(tmp_path / "d.npz"))
    assert d.input_shape == (3, 32, 32) and d.num_classes == 4
    assert len(d.train[1]) + len(d.val[1]) + len(d.calib[1]) == 300


def test_npz_missing_array_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((5, 3, 32, 32)))
    with pytest.raises(DataError, match="'x' and 'y'"):
        load_data(str(tmp_path / "bad.npz"))


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(60):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    d = load_data(str(tmp_path))
    assert d.num_classes == 2 and d.input_shape == (3, 16, 16)


def _cifar_batch(path, n, rng):
    with open(path, "wb") as f:
        pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                     b"labels": rng.integers(0, 10, n).tolist()}, f)


def test_cifar_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    _cifar_batch(tmp_path / "data_batch_1", 200, rng)
    _cifar_batch(tmp_path / "test_batch", 100, rng)
    d = load_data(str(tmp_path))
    assert d.input_shape == (3, 32, 32)
    assert len(d.train[1]) + len(d.val[1]) + len(d.calib[1]) == 300


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_batch_that_runs_code_is_refused(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
    with pytest.raises(DataError, match="refusing"):
        load_data(str(tmp_path))


def test_missing_path_names_the_builtins():
    with pytest.raises(DataError, match="shapes"):
        load_data("/no/such/data")
