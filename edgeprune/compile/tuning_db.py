"""The persistent MetaSchedule databases: list them, export them to one file, import such a file.

``compile.tune`` keeps one MetaSchedule ``JSONDatabase`` per TVM target in ``<root>/<key>/`` (root:
``$EDGEPRUNE_TUNING_DB``, else ``~/.cache/edgeprune/tuning``; key: a hash of the target). A database is two
JSON-lines files: ``database_workload.json`` (one ``[structural hash, serialised task]`` per line) and
``database_tuning_record.json`` (one ``[workload line index, record]`` per line; the record holds the
schedule trace, its measured run times and the target). MetaSchedule looks records up by the task's
structural hash, so a layer tuned once is reused by every later model and run with the same shapes.

An export is JSON lines, one tuning record per line with its workload inlined
(``{"format": "edgeprune-tuning/1", "key", "workload", "record"}``), so a team or a CI cache can share
and merge databases; an import appends the records it does not already have (workload indices
renumbered for the destination) and never rewrites what is there.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import EdgePruneError

WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"
FORMAT = "edgeprune-tuning/1"
_KEY = re.compile(r"^[0-9a-f]{16}$")  # a folder name: nothing else may come in from a file


class TuningDbError(EdgePruneError):
    """A tuning database or export file that cannot be read."""


def root() -> Path:
    """Where the databases live: ``$EDGEPRUNE_TUNING_DB``, else ``~/.cache/edgeprune/tuning``."""
    return Path(os.environ.get("EDGEPRUNE_TUNING_DB", Path.home() / ".cache" / "edgeprune" / "tuning"))


@dataclass(frozen=True)
class TuningDatabase:
    key: str
    path: Path
    workloads: int
    records: int
    target: str  # the target of its records, as TVM wrote it ("?" when it has none)

    def to_dict(self) -> dict:
        return {"key": self.key, "path": str(self.path), "workloads": self.workloads, "records": self.records,
                "target": self.target}


def _lines(path: Path) -> list:
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise TuningDbError(f"{path}:{n} is not JSON ({e.msg}): the database is damaged") from None
    return out


def _target_of(record) -> str:
    try:
        t = record[2]
        return json.dumps(t, sort_keys=True) if isinstance(t, dict) else str(t)
    except (IndexError, TypeError):
        return "?"


def _folders(base: Path | None) -> list[Path]:
    """The database folders under ``base`` (default ``root()``), by key."""
    base = base or root()
    return sorted(p for p in base.iterdir() if p.is_dir() and _KEY.match(p.name)) if base.is_dir() else []


def databases(base: Path | None = None) -> list[TuningDatabase]:
    """Every database under ``base`` (default ``root()``), by key."""
    out = []
    for d in _folders(base):
        records = _lines(d / RECORDS)
        out.append(TuningDatabase(d.name, d, len(_lines(d / WORKLOADS)), len(records),
                                  _target_of(records[0][1]) if records else "?"))
    return out


def export(dest: str | Path, base: Path | None = None) -> int:
    """Write every record of every database under ``base`` to ``dest`` (JSON lines). Returns the count."""
    lines = []
    for d in _folders(base):  # each file read once (databases() would parse them for counts first)
        workloads = _lines(d / WORKLOADS)
        for rec in _lines(d / RECORDS):
            try:
                workload = workloads[rec[0]]
            except (IndexError, TypeError):
                raise TuningDbError(f"{d / RECORDS} names workload {rec[0]!r}, which "
                                    f"{d / WORKLOADS} does not have: the database is damaged") from None
            lines.append(json.dumps({"format": FORMAT, "key": d.name, "workload": workload, "record": rec[1]}))
    tmp = Path(dest).with_name(f".{Path(dest).name}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(dest)
    return len(lines)


def _read_export(src: Path) -> list[dict]:
    entries = []
    for n, e in enumerate(_lines(src), 1):
        ok = (isinstance(e, dict) and e.get("format") == FORMAT and isinstance(e.get("key"), str)
              and _KEY.match(e["key"]) and isinstance(e.get("workload"), list) and len(e["workload"]) == 2
              and all(isinstance(w, str) for w in e["workload"]) and isinstance(e.get("record"), list))
        if not ok:
            raise TuningDbError(f"{src}:{n} is not an edgeprune tuning record ({FORMAT}); nothing was imported")
        entries.append(e)
    return entries


def import_(src: str | Path, base: Path | None = None) -> tuple[int, int]:
    """Add the records of the export ``src`` that the databases under ``base`` lack. Every line is
    checked before anything is written. Returns (records read, records added)."""
    base = base or root()
    entries = _read_export(Path(src))
    added = 0
    by_key: dict[str, list[dict]] = {}
    for e in entries:
        by_key.setdefault(e["key"], []).append(e)
    for key, group in by_key.items():
        d = base / key
        d.mkdir(parents=True, exist_ok=True)
        workloads = _lines(d / WORKLOADS)
        index = {json.dumps(w): i for i, w in enumerate(workloads)}
        have = {json.dumps([r[0], r[1]], sort_keys=True) for r in _lines(d / RECORDS)}
        new_w, new_r = [], []
        for e in group:
            w = json.dumps(e["workload"])
            if w not in index:
                index[w] = len(workloads) + len(new_w)
                new_w.append(w)
            line = [index[w], e["record"]]
            if json.dumps(line, sort_keys=True) not in have:
                have.add(json.dumps(line, sort_keys=True))
                new_r.append(json.dumps(line))
        # Workloads first: a record never names a workload line that is not there yet.
        for name, lines in ((WORKLOADS, new_w), (RECORDS, new_r)):
            if lines:
                with open(d / name, "a") as f:
                    f.write("".join(line + "\n" for line in lines))
        added += len(new_r)
    return len(entries), added
