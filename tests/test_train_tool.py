"""tools/train.py's ``train_model`` (how the bundled examples and the vision benchmark train): the
optional BN recalibration after training."""

from __future__ import annotations

import copy

import torch

from edgeprune.model.evaluate import recalibrate_bn
from tests.conftest import train_tool


def _bns(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_recalibrate_re_estimates_bn_statistics_on_the_training_images_after_training():
    tool = train_tool()
    threads = torch.get_num_threads()
    kw = dict(data="digits", epochs=1, lr=0.05, batch_size=32, limit_train=96, threads=1)
    plain, splits, *_, meta_plain = tool.train_model("resnet20", **kw)
    recal, _, *_, meta = tool.train_model("resnet20", recalibrate=True, **kw)
    torch.set_num_threads(threads)
    assert meta["bn_recalibrated"] and not meta_plain["bn_recalibrated"]
    # The same seed trains the same weights; only the statistics differ, and they are what recalibration
    # of the plainly trained model on the same training images gives.
    for a, b in zip(plain.state_dict().items(), recal.state_dict().items()):
        if "running" not in a[0] and "num_batches" not in a[0]:
            assert torch.equal(a[1], b[1]), a[0]
    expected = copy.deepcopy(plain)
    recalibrate_bn(expected, splits.train[0][:96])
    assert any(not torch.allclose(p.running_var, r.running_var) for p, r in zip(_bns(plain), _bns(recal)))
    for e, r in zip(_bns(expected), _bns(recal)):
        assert torch.allclose(e.running_mean, r.running_mean, atol=1e-5)
        assert torch.allclose(e.running_var, r.running_var, atol=1e-5)
