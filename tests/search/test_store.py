import pytest

from edgeprune.errors import RunStoreError
from edgeprune.search.store import RunStore
from edgeprune.types import Candidate, EvalResult, Measurement


def _result(acc):
    m = Measurement(1.0, 0.9, 1.2, 0.8, 0.3, 100, 10, 4, 1, "onnxruntime", "1", "host", 0.5, 0.5)
    return EvalResult(acc, 0.45, m, 1000, 10, True, {"prune": 0.1})


def test_append_and_read_back_across_connections(tmp_path):
    s = RunStore(tmp_path / "runs.sqlite")
    run = s.new_run({"seed": 3})
    s.append(run, 0, Candidate((8, 16), (0.1, 0.2), "x"), _result(0.7))
    s.append(run, 1, Candidate((16, 16)), _result(0.8))
    s.put_meta(run, "baseline_reference", {"a": 1})
    s.close()
    s2 = RunStore(tmp_path / "runs.sqlite")
    rows = s2.evaluations(run)
    assert [i for i, _, _ in rows] == [0, 1]
    assert rows[0][1] == Candidate((8, 16), (0.1, 0.2), "x") and rows[1][2] == _result(0.8)
    assert s2.config(run) == {"seed": 3} and s2.get_meta(run, "baseline_reference") == {"a": 1}


def test_unknown_run_is_a_clear_error(tmp_path):
    s = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(RunStoreError, match="no run"):
        s.config("nope")


def test_corrupt_store_is_a_clear_error(tmp_path):
    (tmp_path / "runs.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(RunStoreError, match="cannot open"):
        RunStore(tmp_path / "runs.sqlite")
