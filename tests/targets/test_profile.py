import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from edgeprune.errors import TargetError
from edgeprune.targets import list_targets, load_target, targets_dir
from tests.conftest import ROOT


def test_host_profile_loads():
    t = load_target("host")
    assert "host" in list_targets()
    assert t.backend == "auto" and t.round_to == 8 and t.measurement.threads == 1
    assert t.is_local and t.tvm.target["kind"] == "llvm"


@pytest.mark.parametrize("name, arch, kind, cc", [
    ("rpi4", "aarch64", "llvm", "aarch64-linux-gnu-g++"), ("rpi5", "aarch64", "llvm", "aarch64-linux-gnu-g++"),
    ("arm64-linux", "aarch64", "llvm", "aarch64-linux-gnu-g++"),
    ("jetson-orin-nano", "aarch64", "cuda", "aarch64-linux-gnu-g++"),
    ("jetson-nano", "aarch64", "cuda", "aarch64-linux-gnu-g++"),
])
def test_device_profiles(name, arch, kind, cc):
    t = load_target(name)
    assert t.arch == arch and t.tvm.target["kind"] == kind and t.tvm.cc == cc and not t.is_local
    assert t.connection.kind == "rpc" and t.connection.key == name and t.cpu
    assert bool(t.unsupported) == (name == "jetson-nano")


def test_unreachable_target_needs_a_stand_in():
    from edgeprune.latency.where import measurement_plan as measuring_profile

    remote = measuring_profile(load_target("rpi4"), None)  # its profile names a tracker and key
    assert remote.remote.key == "rpi4" and remote.remote.tracker == "127.0.0.1:9190" and not remote.stand_in
    over = measuring_profile(load_target("rpi4"), None, tracker="10.0.0.5:9000", device_key="pi-farm")
    assert over.remote.tracker == "10.0.0.5:9000" and over.remote.key == "pi-farm"
    board = load_target("rpi4")
    import dataclasses

    from edgeprune.targets.profile import Connection

    with pytest.raises(TargetError, match="--measure-on host"):
        measuring_profile(dataclasses.replace(board, connection=Connection()), None)
    plan = measuring_profile(load_target("rpi4"), "host")
    assert plan.stand_in and plan.profile.name == "host" and "STAND-IN" in plan.where and "rpi4" in plan.where
    with pytest.raises(TargetError, match="not this machine"):
        measuring_profile(load_target("host"), "rpi5")
    assert not measuring_profile(load_target("host"), None).stand_in


@pytest.mark.parametrize("body, match", [
    ('name = "x"\narch = "x86_64"\nbogus = 1\n', "unknown keys"),
    ('arch = "x86_64"\n', "'name'"),
    ('name = "x"\narch = "x86_64"\n[pruning]\nround_to = 0\n', "round_to"),
    ('name = "x"\narch = "x86_64"\n[measurement]\nrounds = -1\n', "measurement"),
    ('name = "x"\narch = "x86_64"\n[measurement]\nfoo = 1\n', "measurement"),
    ('name = "x"\narch = = \n', "invalid TOML"),
    ('name = "x"\narch = "x86_64"\ndevice = "tpu"\n', "device"),
    ('name = "x"\narch = "x86_64"\n[runtime]\nbackend = "Tensor Flow"\n', "backend must be 'auto' or"),
    ('name = "x"\narch = "x86_64"\n[runtime]\nbackend = "tvm"\n', "needs a \\[tvm\\] section"),
    ('name = "x"\narch = "x86_64"\n[tvm]\ntarget = "llvm -mcpu=x"\n', "must be a table"),
    ('name = "x"\narch = "x86_64"\n[tvm]\ntarget = { kind = "llvm" }\nflags = 1\n', "unknown keys"),
    ('name = "x"\narch = "x86_64"\n[connection]\nkind = "rpc"\n', "tracker"),
    ('name = "x"\narch = "x86_64"\n[connection]\nkind = "ssh"\n', "kind must be"),
    ('name = "x"\narch = "x86_64"\n[runtime]\nproviders = []\n', "providers"),
])
def test_invalid_profiles_are_clear_errors(tmp_path, body, match):
    p = tmp_path / "t.toml"
    p.write_text(body)
    with pytest.raises(TargetError, match=match):
        load_target(str(p))


def test_unknown_target_lists_known_ones():
    with pytest.raises(TargetError, match="host"):
        load_target("no-such-board")


def test_every_listed_profile_loads_from_the_package_resources(monkeypatch):
    monkeypatch.delenv("EDGEPRUNE_TARGETS", raising=False)
    shipped = resources.files("edgeprune.targets").joinpath("profiles")
    assert Path(str(targets_dir())) == Path(str(shipped))
    names = list_targets()
    assert {"host", "rpi4", "rpi5", "arm64-linux", "jetson-orin-nano", "jetson-nano"} <= set(names)
    for name in names:
        t = load_target(name)
        assert t.name == name and Path(t.source) == Path(str(shipped.joinpath(f"{name}.toml")))
    # The top-level targets/ the README names is the same folder.
    assert (ROOT / "targets").resolve() == Path(str(shipped)).resolve()


def test_edgeprune_targets_names_another_folder(monkeypatch, tmp_path):
    (tmp_path / "board.toml").write_text('name = "board"\narch = "aarch64"\n')
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(tmp_path))
    assert list_targets() == ["board"]
    assert load_target("board").arch == "aarch64"
    with pytest.raises(TargetError, match="known: board"):
        load_target("host")
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(tmp_path / "missing"))
    assert list_targets() == []


def test_a_path_to_a_toml_file_loads(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('name = "mine"\narch = "x86_64"\n')
    assert load_target(str(p)).name == "mine" and load_target(str(p)).source == str(p)


def test_a_non_editable_install_ships_the_profiles(tmp_path):
    """pip install (not -e) of a copy of the source: the installed package finds its profiles."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "edgeprune", src / "edgeprune", ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(src)], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "EDGEPRUNE_TARGETS"}
    env["PYTHONPATH"] = str(site)
    r = subprocess.run([sys.executable, "-c", "import edgeprune; from edgeprune.targets import list_targets, "
                        "load_target; print(edgeprune.__file__); print(list_targets()); print(load_target('host').source)"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    where, names, source = r.stdout.splitlines()
    assert where.startswith(str(site)) and "'host'" in names and "'rpi4'" in names
    assert source == str(site / "edgeprune" / "targets" / "profiles" / "host.toml")
