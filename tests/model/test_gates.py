"""GDP's gates: where they go, that folding them changes nothing, and that polarisation drives gates to zero."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edgeprune.data import load_data
from edgeprune.gdp import GdpConfig, gate_widths, run_gdp
from edgeprune.model.gates import Gates, fold, gate_sites, polarization
from edgeprune.model.prune import analyse, copy_model, prune
from edgeprune.model.zoo import mobilenet_v2
from tests.conftest import tiny_resnet
from tests.latency.test_predictor import synthetic_predictor

SHAPE = (3, 32, 32)


def test_every_group_of_a_resnet_is_gated_at_its_batchnorms():
    model = tiny_resnet()
    analysis = analyse(model, SHAPE, round_to=8)
    sites, skipped = gate_sites(model, SHAPE, analysis)
    assert len(sites) + len(skipped) == len(analysis.groups) and sites
    stream = next(s for s in sites if "bn1" in s.modules)  # the residual stream: stem BN and each block's last BN
    assert len(stream.modules) > 1


def test_an_inverted_residual_is_gated_after_the_depthwise_conv_too():
    model = mobilenet_v2(width_mult=0.5).eval()
    analysis = analyse(model, SHAPE, round_to=8)
    sites, _ = gate_sites(model, SHAPE, analysis)
    expand = [s for s in sites if len(s.modules) == 2 and all(".conv." in m for m in s.modules)]
    assert expand  # the expansion BN and the depthwise BN carry the same channels


def test_folded_gates_equal_the_gated_model_and_zero_gates_prune_exactly():
    model = tiny_resnet()
    analysis = analyse(model, SHAPE, round_to=8)
    sites, _ = gate_sites(model, SHAPE, analysis)
    work = copy_model(model)
    gates = Gates(work, sites)
    torch.manual_seed(0)
    x = torch.randn(8, *SHAPE)
    with torch.no_grad():
        for k, t in enumerate(gates.theta):
            t.copy_(torch.rand_like(t) * 2)
            t[: t.numel() // 2] = 0.0  # half the gates exactly 0
        gated = work(x)
        assert not torch.allclose(gated, model(x))  # the gates do act
        widths = gate_widths(gates, analysis, 0.0)
        scores = {s.name: gates.value(k).clone() for k, s in enumerate(sites)}
    fold(work, gates)
    with torch.no_grad():
        assert torch.allclose(work(x), gated, atol=1e-5)
    pruned, _ = prune(work, SHAPE, analysis, tuple(widths), scores=scores)
    with torch.no_grad():
        assert torch.allclose(pruned(x), gated, atol=1e-4)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_polarisation_drives_some_gates_to_zero_and_keeps_the_rest_far_from_it():
    """Gates under the cost-weighted regulariser and a task term that wants the cheap ones: they split into
    0 and ~1, the costly channels going to 0."""
    theta = torch.nn.Parameter(torch.linspace(0.5, 1.5, 40))
    weights = [torch.cat([torch.full((20,), 1.5), torch.full((20,), 0.5)])]
    opt = torch.optim.Adam([theta], lr=0.02)
    for _ in range(600):
        g = theta * theta / (theta * theta + 0.01)
        loss = polarization([g], weights, t=1.0) + 0.3 * ((g - 1) ** 2)[20:].mean()  # a task that wants the cheap ones
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = (theta * theta / (theta * theta + 0.01)).detach()
    assert ((g < 0.05) | (g > 0.9)).float().mean() >= 0.9  # polarised: (nearly) every gate near 0 or near 1
    assert (g[:20] < 0.05).sum() >= 10 and (g[20:] > 0.5).all()  # the costly ones go, the cheap ones stay


@pytest.mark.slow
def test_gdp_meets_the_predicted_target_and_the_pruned_model_is_the_gated_one(tmp_path):
    """A short gated training of the tiny ResNet on digits with a synthetic kernel table: the widths meet
    the predicted target and the pruned model equals the gated one; the checkpoint lets it resume."""
    model = tiny_resnet()
    analysis = analyse(model, SHAPE, round_to=8)
    pred = synthetic_predictor(model, analysis, tmp_path)
    data = load_data("digits")
    small = dataclasses.replace(data, train=(data.train[0][:256], data.train[1][:256]))
    ckpt = tmp_path / "gdp.pt"
    r = run_gdp(model, SHAPE, analysis, small, pred, 0.9, GdpConfig(epochs=2, check_every=2, batch_size=64),
                checkpoint=ckpt, calib=data.calib[0][:16])
    assert ckpt.is_file() and r.predicted_ratio <= 0.9
    assert r.max_fold_error <= 1e-4 and len(r.trace) > 0
    assert list(r.widths) != [g.full for g in analysis.groups]
    again = run_gdp(model, SHAPE, analysis, small, pred, 0.9, GdpConfig(epochs=2, check_every=2, batch_size=64),
                    checkpoint=ckpt, calib=data.calib[0][:16])
    assert again.widths == r.widths  # resumed after the last epoch: nothing trained again
