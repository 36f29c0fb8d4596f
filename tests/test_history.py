"""History across runs (edgeprune.history): recorded by compile, given to rl and bo, kept exactly on resume,
and moved between machines with `edgeprune history export|import`."""

from __future__ import annotations

import json

import pytest

from edgeprune.history import History, HistoryError, annotate, history_path
from edgeprune.pipeline import compile_model
from tests.conftest import run_cli
from tests.test_pipeline import Opener, cfg, profile  # noqa: F401 - the profile fixture


def _row(run="r1", idx=0, **kw):
    return dict({"run_id": run, "idx": idx, "model": "m", "arch": "a", "groups": [[16, 0, 0, 0.5]], "target": "host",
                 "conditions": {"runtime": "onnxruntime"}, "latency_target": 0.5, "keep": [0.5], "widths": [8],
                 "ratio": 0.45, "accuracy": 0.9, "feasible": True}, **kw)


def test_history_round_trip_export_import_and_duplicates(tmp_path):
    with History(tmp_path / "a.sqlite") as h:
        assert h.add([_row(idx=0), _row(idx=1, accuracy=0.8)]) == 2
        assert h.add([_row(idx=0, accuracy=0.1)]) == 0  # already there: kept as it was
        assert [r["accuracy"] for r in h.rows()] == [0.9, 0.8] and h.rows()[0]["keep"] == [0.5]
        assert h.runs()[0]["evaluations"] == 2 and h.runs()[0]["best_feasible"] == 0.9
        assert h.export(tmp_path / "x.jsonl") == 2
    with History(tmp_path / "b.sqlite") as h2:
        h2.add([_row(run="r2")])
        assert h2.import_(tmp_path / "x.jsonl") == (2, 2)
        assert h2.import_(tmp_path / "x.jsonl") == (2, 0)
        assert {r["run_id"] for r in h2.rows()} == {"r1", "r2"} and len(h2.rows(exclude_run="r1")) == 1
        assert len(h2.rows(keys=[["r1", 1]])) == 1
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with History(tmp_path / "b.sqlite") as h2, pytest.raises(HistoryError, match="not a history export"):
        h2.import_(tmp_path / "bad.jsonl")
    (tmp_path / "corrupt.sqlite").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(HistoryError, match="cannot open"):
        History(tmp_path / "corrupt.sqlite").rows()


def test_history_path_and_annotation(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_HISTORY", str(tmp_path / "h.sqlite"))
    assert history_path("auto") == tmp_path / "h.sqlite" and history_path("off") is None
    assert history_path(str(tmp_path / "x")) == tmp_path / "x"
    monkeypatch.setenv("EDGEPRUNE_HISTORY", "off")
    assert history_path("auto") is None
    rows = annotate([_row(), _row(model="other"), _row(target="rpi4")], model="m", target="host",
                    conditions={"runtime": "onnxruntime"})
    assert [(r["same_model"], r["same_conditions"]) for r in rows] == [(True, True), (False, False), (True, False)]


def test_compile_records_history_and_rl_and_bo_start_from_it_and_resume_with_the_same_rows(tiny_ckpt, profile,
                                                                                            tmp_path):
    hist = tmp_path / "team.sqlite"
    out = tmp_path / "out"
    first = compile_model(cfg(tiny_ckpt, profile, out, agent="random", budget=5, history=str(hist)), opener=Opener())
    assert first.report["search"]["history"]["recorded"] == 5
    with History(hist) as h:
        rows = h.rows()
    assert len(rows) == 5 and rows[0]["run_id"] == first.run_id and rows[0]["groups"] and rows[0]["conditions"]

    rl = compile_model(cfg(tiny_ckpt, profile, out, agent="rl", budget=4, history=str(hist)), opener=Opener())
    info = rl.report["search"]["history"]
    assert info["rows"] == 5 and info["same_model"] == 5 and info["same_model_and_conditions"] == 5
    assert rl.report["search"]["agent_info"]["history"]["rows"] == 5
    with History(hist) as h:
        assert len(h.rows()) == 9
    more = compile_model(cfg(tiny_ckpt, profile, out, agent="rl", budget=6, history=str(hist), resume=rl.run_id,
                             overwrite=True), opener=Opener())
    assert more.report["search"]["evaluations"] == 6 and more.report["search"]["evaluated_this_session"] == 2
    assert more.report["search"]["history"]["rows"] == 5  # the rows its first session started from
    assert [c["widths"] for c in more.report["candidates"][:4]] == [c["widths"] for c in rl.report["candidates"]]

    bo = compile_model(cfg(tiny_ckpt, profile, out, agent="bo", budget=4, history=str(hist)), opener=Opener())
    bo_info = bo.report["search"]["agent_info"]["history"]
    assert bo_info["accuracy_observations"] == 11 and bo_info["n_init"] == bo_info["uniform_init"]
    origins = [c["origin"] for c in bo.report["candidates"]]
    assert not any(o.startswith("sobol") for o in origins), origins  # warm: no Sobol design

    # A resumed run gets the rows its first session got, not the ones added since.
    with History(hist) as h:
        h.add([dict(rows[0], run_id="later", idx=i) for i in range(3)])
    again = compile_model(cfg(tiny_ckpt, profile, out, agent="bo", budget=5, history=str(hist), resume=bo.run_id,
                              overwrite=True), opener=Opener())
    assert again.report["search"]["history"]["rows"] == 11

    off = compile_model(cfg(tiny_ckpt, profile, out, agent="bo", budget=4, history="off"), opener=Opener())
    assert off.report["search"]["history"]["rows"] == 0


def test_history_cli_list_export_import(tmp_path):
    src = tmp_path / "h.sqlite"
    with History(src) as h:
        h.add([_row(idx=i) for i in range(3)])
    r = run_cli("history", "list", "--history", str(src))
    assert r.returncode == 0 and "r1" in r.stdout and "3" in r.stdout, r.stderr
    r = run_cli("history", "export", str(tmp_path / "x.jsonl"), "--history", str(src))
    assert r.returncode == 0 and len((tmp_path / "x.jsonl").read_text().splitlines()) == 3
    r = run_cli("history", "import", str(tmp_path / "x.jsonl"), "--history", str(tmp_path / "new.sqlite"))
    assert r.returncode == 0 and "3 new" in r.stdout, r.stderr
    r = run_cli("history", "list", "--history", str(tmp_path / "new.sqlite"), "--json")
    assert json.loads(r.stdout)[0]["evaluations"] == 3
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    r = run_cli("history", "import", str(tmp_path / "bad.jsonl"), "--history", str(tmp_path / "new.sqlite"))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "not a history export" in r.stderr
