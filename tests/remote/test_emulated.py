"""An emulated aarch64 device (qemu-user, aarch64 Python and TVM from the registries) verifies a
cross-compiled rpi4 library end to end. Slow (TVM imports in ~15-25 s under emulation), run in CI."""

from __future__ import annotations

import pytest
import torch

from edgeprune.deploy.stage import build_artifact
from edgeprune.errors import DeviceError
from edgeprune.export.onnx import export, simplify
from edgeprune.latency.meter import MeasureSettings
from edgeprune.remote.client import DevicePool, RemoteMeter, RetryPolicy
from edgeprune.targets import load_target
from tests.conftest import tiny_resnet
from tests.remote.farm import Farm


@pytest.fixture(scope="module")
def emulated_farm():
    from edgeprune.remote.emulate import prepare

    emu = prepare("aarch64")
    f = Farm()
    f.add_emulated_device("emu-a64", "rpi4-emu", emu)
    yield f
    f.close()


@pytest.mark.slow
def test_emulated_device_verifies_an_rpi4_library(emulated_farm, tmp_path):
    from edgeprune.data import load_data

    proto, _ = simplify(export(tiny_resnet(), (3, 32, 32)))
    inputs = load_data("shapes").calib[0][:4].numpy()
    pool = DevicePool(emulated_farm.tracker, "rpi4-emu", session_timeout_s=600, retry=RetryPolicy(retries=1))
    art = build_artifact(proto, (3, 32, 32), proto.SerializeToString(), load_target("rpi4"), inputs, tmp_path,
                         device_pool=pool)
    v = art.verification
    assert art.info["arch"] == "aarch64"
    assert v["ok"] and v["samples"] == 4 and v["max_abs_diff"] < 1e-4 and "EMULATED device emu-a64 (aarch64)" in v["method"]


@pytest.mark.slow
def test_emulated_device_is_never_a_latency_source(emulated_farm):
    proto, _ = simplify(export(tiny_resnet(), (3, 32, 32)))
    pool = DevicePool(emulated_farm.tracker, "rpi4-emu", session_timeout_s=600, retry=RetryPolicy(retries=0))
    with pytest.raises(DeviceError, match="emulated"):
        RemoteMeter(pool, "tvm", proto.SerializeToString(), (1, 3, 32, 32), MeasureSettings(), "x",
                    to_payload=lambda b: b)
