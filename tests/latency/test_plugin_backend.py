"""A new latency backend is one module: a plug-in package declares an entry point, nothing else changes."""

from __future__ import annotations

import textwrap

import pytest
import torch

from edgeprune.export.onnx import export_verified
from edgeprune.latency import Artifact, LocalMeter, MeasureSettings, base
from edgeprune.latency.where import measurement_plan, open_meters, runtimes_for
from edgeprune.targets import load_target
from tests.conftest import tiny_resnet

PLUGIN = '''
"""A latency backend in one module: ONNX Runtime with an artificial 1 ms floor per inference."""
import time

from edgeprune.latency.backends.onnxruntime import OnnxRuntimeBackend
from edgeprune.latency.base import register


class SlowOrt(OnnxRuntimeBackend):
    name = "slow-ort"

    def open(self, model, example, *, threads, device="cpu", providers=None):
        run = super().open(model, example, threads=threads)

        def once():
            run()
            time.sleep(0.001)

        return once


@register("slow-ort")
def factory(profile=None):
    return SlowOrt()
'''


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    (tmp_path / "slow_ort_backend.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "edgeprune_slow_ort-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edgeprune-slow-ort\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[edgeprune.latency_backends]\nslow-ort = slow_ort_backend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    base.discover(refresh=True)
    yield "slow-ort"
    base.BACKENDS.pop("slow-ort", None)
    base.discover(refresh=True)


def test_a_backend_added_by_one_module_is_measured_and_chosen_by_a_profile(plugin, tmp_path):
    assert plugin in base.backend_names()
    x = torch.randn(2, 3, 32, 32)
    onnx_bytes = export_verified(tiny_resnet(), (3, 32, 32), x)[0]
    meter = LocalMeter(base.get_backend(plugin), Artifact(onnx_bytes), x[:1].numpy(),
                       MeasureSettings(warmup=1, rounds=2, runs_per_round=3), "host")
    cand, _ = meter.measure(Artifact(onnx_bytes))
    assert cand.backend == "slow-ort" and cand.min_ms >= 1.0  # its floor shows: it really ran

    # A profile names it as its runtime; where-to-measure and the meters find it through the registry.
    toml = (tmp_path / "slowbox.toml")
    toml.write_text('name = "slowbox"\narch = "x86_64"\ndescription = "test"\n[runtime]\nbackend = "slow-ort"\n'
                    '[measurement]\nwarmup = 1\nrounds = 2\nruns_per_round = 3\n')
    profile = load_target(str(toml))
    plan = measurement_plan(profile, None)
    assert runtimes_for(profile) == ("slow-ort",)
    meters = open_meters(plan, runtimes_for(profile), Artifact(onnx_bytes), x[:1].numpy())
    assert meters.search_runtime == "slow-ort" and meters.search.baseline(rounds=2).min_ms >= 1.0
    meters.close()


def test_an_unknown_backend_in_a_profile_is_refused_when_measuring_starts(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text('name = "bad"\narch = "x86_64"\ndescription = "test"\n[runtime]\nbackend = "nosuch"\n')
    from edgeprune.errors import TargetError

    with pytest.raises(TargetError, match="nosuch.*available: auto, onnxruntime"):
        measurement_plan(load_target(str(toml)), None)


def test_a_broken_plugin_is_named(tmp_path, monkeypatch):
    dist = tmp_path / "edgeprune_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edgeprune-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[edgeprune.latency_backends]\nbroken = no_such_module_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from edgeprune.errors import TargetError

    try:
        with pytest.raises(TargetError, match="'broken'.*failed to load"):
            base.discover(refresh=True)
    finally:
        monkeypatch.undo()
        base.discover(refresh=True)
