import pytest

from edgeprune.errors import TargetError
from edgeprune.targets import list_targets, load_target


def test_host_profile_loads():
    t = load_target("host")
    assert "host" in list_targets()
    assert t.backend == "onnxruntime" and t.round_to == 8 and t.measurement.threads == 1
    assert t.is_local


@pytest.mark.parametrize("body, match", [
    ('name = "x"\narch = "x86_64"\nbogus = 1\n', "unknown keys"),
    ('arch = "x86_64"\n', "'name'"),
    ('name = "x"\narch = "x86_64"\n[pruning]\nround_to = 0\n', "round_to"),
    ('name = "x"\narch = "x86_64"\n[measurement]\nrounds = -1\n', "measurement"),
    ('name = "x"\narch = "x86_64"\n[measurement]\nfoo = 1\n', "measurement"),
    ('name = "x"\narch = = \n', "invalid TOML"),
    ('name = "x"\narch = "x86_64"\ndevice = "tpu"\n', "device"),
])
def test_invalid_profiles_are_clear_errors(tmp_path, body, match):
    p = tmp_path / "t.toml"
    p.write_text(body)
    with pytest.raises(TargetError, match=match):
        load_target(str(p))


def test_unknown_target_lists_known_ones():
    with pytest.raises(TargetError, match="host"):
        load_target("no-such-board")
