import pytest

from edgeprune.errors import TargetError
from edgeprune.targets import list_targets, load_target


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
    from edgeprune.deploy.stage import measuring_profile

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
    ('name = "x"\narch = "x86_64"\n[runtime]\nbackend = "tensorflow"\n', "backend must be one of"),
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
