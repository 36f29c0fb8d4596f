"""Tuning databases: list, export, import (merge without duplicates), and clear errors for bad files.

The files here follow MetaSchedule's JSONDatabase layout (one workload line, records naming it by line
index); tests/compile/test_tune.py checks, with real tuning, that an imported database is what a later
run uses."""

from __future__ import annotations

import json

import pytest

from edgeprune.compile.tuning_db import RECORDS, WORKLOADS, TuningDbError, databases, export, import_
from tests.conftest import run_cli

KEY, OTHER = "ce444e254e80a270", "0123456789abcdef"
TARGET = {"kind": "llvm", "mcpu": "znver5", "num-cores": 1}


def _db(base, key, tasks: int, per_task: int, salt: str = ""):
    d = base / key
    d.mkdir(parents=True)
    (d / WORKLOADS).write_text("".join(json.dumps([str(1000 + t), f"task{t}"]) + "\n" for t in range(tasks)))
    (d / RECORDS).write_text("".join(
        json.dumps([t, [[["GetSBlock", [], [f"b{t}{salt}{r}", "main"], ["b0"]]], [1e-4 * (r + 1)], TARGET, []]]) + "\n"
        for t in range(tasks) for r in range(per_task)))
    return d


def test_export_then_import_into_an_empty_folder_gives_the_same_databases(tmp_path):
    _db(tmp_path / "a", KEY, tasks=3, per_task=2)
    _db(tmp_path / "a", OTHER, tasks=1, per_task=1)
    listed = {d.key: d for d in databases(tmp_path / "a")}
    assert listed[KEY].workloads == 3 and listed[KEY].records == 6 and '"znver5"' in listed[KEY].target
    assert export(tmp_path / "t.jsonl", tmp_path / "a") == 7
    assert import_(tmp_path / "t.jsonl", tmp_path / "b") == (7, 7)
    for key in (KEY, OTHER):
        for name in (WORKLOADS, RECORDS):
            assert (tmp_path / "b" / key / name).read_text() == (tmp_path / "a" / key / name).read_text()
    assert import_(tmp_path / "t.jsonl", tmp_path / "b") == (7, 0)  # nothing twice


def test_import_merges_renumbering_workloads_for_the_destination(tmp_path):
    _db(tmp_path / "a", KEY, tasks=2, per_task=1, salt="x")
    dest = _db(tmp_path / "b", KEY, tasks=1, per_task=1)  # holds task0 with another record
    export(tmp_path / "t.jsonl", tmp_path / "a")
    assert import_(tmp_path / "t.jsonl", tmp_path / "b") == (2, 2)
    workloads = [json.loads(x) for x in (dest / WORKLOADS).read_text().splitlines()]
    assert [w[1] for w in workloads] == ["task0", "task1"]  # task0 kept once, task1 appended
    recs = [json.loads(x) for x in (dest / RECORDS).read_text().splitlines()]
    assert [r[0] for r in recs] == [0, 0, 1] and workloads[recs[2][0]][1] == "task1"


@pytest.mark.parametrize("line", ['{"format": "edgeprune-tuning/1", "key": "../../etc", "workload": ["1", "x"], '
                                  '"record": []}', "not json", '{"format": "other"}'],
                         ids=["path-escape", "not-json", "other-format"])
def test_a_bad_export_is_refused_and_nothing_is_written(tmp_path, line):
    good = json.dumps({"format": "edgeprune-tuning/1", "key": KEY, "workload": ["1", "t"], "record": [[], [1e-4]]})
    (tmp_path / "t.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(TuningDbError, match=r"t.jsonl:2"):
        import_(tmp_path / "t.jsonl", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_record_naming_a_missing_workload_is_a_damaged_database(tmp_path):
    d = _db(tmp_path / "a", KEY, tasks=1, per_task=1)
    with open(d / RECORDS, "a") as f:
        f.write(json.dumps([5, [[], [1e-4], TARGET, []]]) + "\n")
    with pytest.raises(TuningDbError, match="does not have: the database is damaged"):
        export(tmp_path / "t.jsonl", tmp_path / "a")
    assert not (tmp_path / "t.jsonl").exists()


def test_the_cli_lists_exports_and_imports(tmp_path):
    _db(tmp_path / "a", KEY, tasks=2, per_task=2)
    r = run_cli("tuning", "list", "--db", str(tmp_path / "a"))
    assert r.returncode == 0 and KEY in r.stdout and "2 tasks" in r.stdout and "4 records" in r.stdout
    r = run_cli("tuning", "export", str(tmp_path / "t.jsonl"), "--db", str(tmp_path / "a"))
    assert r.returncode == 0 and "4 tuning records" in r.stdout
    r = run_cli("tuning", "import", str(tmp_path / "t.jsonl"), "--db", str(tmp_path / "b"))
    assert r.returncode == 0 and "4 new" in r.stdout
    (tmp_path / "bad.jsonl").write_text("nope\n")
    r = run_cli("tuning", "import", str(tmp_path / "bad.jsonl"), "--db", str(tmp_path / "b"))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "edgeprune: error:" in r.stderr
