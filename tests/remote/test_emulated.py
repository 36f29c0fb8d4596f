"""An emulated aarch64 device (qemu-user, aarch64 Python and TVM from the registries) verifies a
cross-compiled rpi4 library end to end. Slow (TVM imports in ~15-25 s under emulation), run in CI; skipped,
saying why, where qemu-aarch64 or the cross compiler is missing. A missing qemu-user is never installed
behind the user's back: it is an error naming the apt command, unless --install-deps asks for it."""

from __future__ import annotations

import sys

import pytest
import torch

from edgeprune.deploy.stage import build_artifact
from edgeprune.errors import DeviceError
from edgeprune.export.onnx import export, simplify
from edgeprune.latency import Artifact, MeasureSettings
from edgeprune.latency.remote import RemoteMeter
from edgeprune.latency.rpc import DevicePool, RetryPolicy
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
@pytest.mark.needs_qemu
@pytest.mark.needs_cross
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
@pytest.mark.needs_qemu
def test_emulated_device_is_never_a_latency_source(emulated_farm):
    proto, _ = simplify(export(tiny_resnet(), (3, 32, 32)))
    pool = DevicePool(emulated_farm.tracker, "rpi4-emu", session_timeout_s=600, retry=RetryPolicy(retries=0))
    with pytest.raises(DeviceError, match="emulated"):
        RemoteMeter(pool, "tvm", Artifact(proto.SerializeToString()), (1, 3, 32, 32), MeasureSettings(), "x")


def _no_qemu(monkeypatch, *, sudo: bool = True, euid: int = 1000):
    """This machine as one without qemu-user (and with or without sudo), whatever is really installed."""
    import edgeprune.remote.emulate as emulate

    real = emulate.shutil.which

    def which(cmd, *a, **k):
        if cmd == "sudo":
            return "/usr/bin/sudo" if sudo else None
        return None if cmd.startswith("qemu-") else real(cmd, *a, **k)

    monkeypatch.setattr(emulate.shutil, "which", which)
    monkeypatch.setattr(emulate.os, "geteuid", lambda: euid)
    ran = []
    monkeypatch.setattr(emulate, "_run", lambda cmd, what, env=None: ran.append(cmd))
    return emulate, ran


@pytest.mark.parametrize("euid, said", [(1000, "`sudo apt-get update && sudo apt-get install -y qemu-user`"),
                                        (0, "`apt-get update && apt-get install -y qemu-user`")])
def test_missing_qemu_is_an_error_naming_the_apt_command(monkeypatch, tmp_path, euid, said):
    emulate, ran = _no_qemu(monkeypatch, euid=euid)
    with pytest.raises(DeviceError, match="qemu-aarch64 is missing") as e:
        emulate.prepare("aarch64", root=tmp_path)
    assert said in str(e.value) and "--install-deps" in str(e.value)
    assert ran == [] and not list(tmp_path.iterdir())  # nothing run, nothing downloaded


def test_device_emulate_without_qemu_says_the_command_in_one_line(monkeypatch, capsys, tmp_path):
    from edgeprune import cli

    _, ran = _no_qemu(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["edgeprune", "device", "emulate", "--prepare-only"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and ran == []
    assert err == ["edgeprune: error: qemu-aarch64 is missing: install Debian's qemu-user with "
                   "`sudo apt-get update && sudo apt-get install -y qemu-user`, or pass --install-deps to have "
                   "edgeprune run it"]


@pytest.mark.parametrize("euid, prefix", [(1000, ["sudo"]), (0, [])])
def test_install_deps_runs_apt_get_with_sudo_only_when_not_root(monkeypatch, euid, prefix):
    emulate, ran = _no_qemu(monkeypatch, euid=euid)
    with pytest.raises(DeviceError, match="still missing"):  # which() keeps saying missing here
        emulate._ensure_qemu("qemu-aarch64", lambda m: None, install_deps=True)
    assert ran == [prefix + ["apt-get", "update"], prefix + ["apt-get", "install", "-y", "qemu-user"]]


def test_install_deps_without_sudo_says_to_run_it_as_root(monkeypatch):
    emulate, ran = _no_qemu(monkeypatch, sudo=False)
    with pytest.raises(DeviceError, match="no sudo: as root, run `apt-get update && apt-get install -y qemu-user`"):
        emulate._ensure_qemu("qemu-aarch64", lambda m: None, install_deps=True)
    assert ran == []


@pytest.mark.slow
@pytest.mark.needs_qemu
@pytest.mark.needs_cross
def test_tuning_over_rpc_on_the_emulated_device(emulated_farm, tmp_path):
    """Last in this module: tuning holds the farm's one device for minutes.

    --tune-trials for a device: trials built here for aarch64, timed on the device through MetaSchedule's
    RPC runner, records in the target's database; the tuned library computes what ONNX Runtime computes,
    run on the device. The emulated device's timings are not latency: tuning needs allow_emulated."""
    from edgeprune.compile.tune import tune
    from edgeprune.compile.tune_remote import RemoteTuning
    from edgeprune.compile.tuning_db import databases
    from edgeprune.compile.tvm import export_library
    from edgeprune.data import load_data
    from edgeprune.deploy.stage import check_tuning_device
    from edgeprune.deploy.verify import verify_on_device
    from edgeprune.latency.remote import EmulatedDeviceError

    proto, _ = simplify(export(tiny_resnet(), (3, 32, 32)))
    settings = load_target("rpi4").tvm
    remote = RemoteTuning(emulated_farm.tracker, "rpi4-emu", session_timeout_s=300)
    with pytest.raises(EmulatedDeviceError, match="emulated"):
        check_tuning_device(remote)  # what build_artifact asks before tuning on devices
    remote = RemoteTuning(emulated_farm.tracker, "rpi4-emu", session_timeout_s=300, allow_emulated=True)
    assert check_tuning_device(remote)["emulated"]
    ex, result = tune(proto, (3, 32, 32), settings, 4, db_dir=tmp_path / "db" / "0123456789abcdef", remote=remote)
    assert result.timed_on == {"tracker": emulated_farm.tracker, "key": "rpi4-emu"}
    assert result.tasks >= 3 and result.seeded == result.tasks and result.tasks_from_database == 0
    (db,) = databases(tmp_path / "db")
    assert db.records >= result.tasks and '"aarch64-linux-gnu"' in db.target
    lib = export_library(ex, tmp_path / "tuned.so", settings)
    pool = DevicePool(emulated_farm.tracker, "rpi4-emu", session_timeout_s=600, retry=RetryPolicy(retries=1))
    try:
        v = verify_on_device(pool, lib, proto.SerializeToString(), load_data("shapes").calib[0][:2].numpy())
    finally:
        pool.close()  # the farm has one device: the next test needs it free
    assert v.ok and v.max_abs_diff < 1e-4, v
