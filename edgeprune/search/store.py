"""Append-only SQLite run store: every evaluated candidate is committed as soon as it completes, so a
run killed at any point resumes without re-evaluating anything stored."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

from edgeprune.errors import RunStoreError
from edgeprune.types import Candidate, EvalResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, created REAL, config TEXT, status TEXT);
CREATE TABLE IF NOT EXISTS meta (run_id TEXT, key TEXT, value TEXT, PRIMARY KEY (run_id, key));
CREATE TABLE IF NOT EXISTS evaluations (
    run_id TEXT, idx INTEGER, key TEXT, candidate TEXT, result TEXT, created REAL,
    PRIMARY KEY (run_id, idx));
CREATE TABLE IF NOT EXISTS screened (
    run_id TEXT, seq INTEGER, pos INTEGER, key TEXT, candidate TEXT, predicted REAL, created REAL,
    PRIMARY KEY (run_id, seq, pos));
"""


class RunStore:
    """One SQLite file holding many runs. ``path`` is created if missing."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise RunStoreError(f"cannot open run store {self.path}: {e}") from None

    def close(self) -> None:
        self.db.close()

    def new_run(self, config: dict[str, Any]) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        with self.db:
            self.db.execute("INSERT INTO runs VALUES (?, ?, ?, ?)", (run_id, time.time(), json.dumps(config), "running"))
        return run_id

    def config(self, run_id: str) -> dict[str, Any]:
        row = self.db.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            known = [r[0] for r in self.db.execute("SELECT run_id FROM runs ORDER BY created DESC LIMIT 5")]
            raise RunStoreError(f"no run {run_id!r} in {self.path} (latest: {', '.join(known) or 'none'})")
        return json.loads(row[0])

    def status(self, run_id: str) -> str:
        """"running", "done", "infeasible" or "failed"."""
        self.config(run_id)  # a clear error for an unknown run
        return self.db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]

    def set_status(self, run_id: str, status: str) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET status = ? WHERE run_id = ?", (status, run_id))

    def put_meta(self, run_id: str, key: str, value: Any) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?, ?)", (run_id, key, json.dumps(value)))

    def get_meta(self, run_id: str, key: str) -> Any | None:
        row = self.db.execute("SELECT value FROM meta WHERE run_id = ? AND key = ?", (run_id, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def append(self, run_id: str, idx: int, candidate: Candidate, result: EvalResult) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?, ?, ?)",
                            (run_id, idx, candidate.key, json.dumps(candidate.to_dict()),
                             json.dumps(result.to_dict()), time.time()))

    def evaluations(self, run_id: str) -> list[tuple[int, Candidate, EvalResult]]:
        rows = self.db.execute("SELECT idx, candidate, result FROM evaluations WHERE run_id = ? ORDER BY idx",
                               (run_id,)).fetchall()
        return [(i, Candidate.from_dict(json.loads(c)), EvalResult.from_dict(json.loads(r))) for i, c, r in rows]

    def append_screened(self, run_id: str, seq: int, candidate: Candidate, predicted: float) -> None:
        """A proposal the latency screen rejected after ``seq`` evaluations (``predicted``: its ratio)."""
        with self.db:
            pos = self.db.execute("SELECT COUNT(*) FROM screened WHERE run_id = ? AND seq = ?",
                                  (run_id, seq)).fetchone()[0]
            self.db.execute("INSERT INTO screened VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (run_id, seq, pos, candidate.key, json.dumps(candidate.to_dict()), predicted,
                             time.time()))

    def screened(self, run_id: str) -> list[tuple[int, Candidate, float]]:
        """The screened proposals in the order they came: (evaluations before it, candidate, predicted)."""
        rows = self.db.execute("SELECT seq, candidate, predicted FROM screened WHERE run_id = ? ORDER BY seq, pos",
                               (run_id,)).fetchall()
        return [(q, Candidate.from_dict(json.loads(c)), float(p)) for q, c, p in rows]
