"""History across runs: every evaluated candidate of every run, with what makes it comparable, so later
runs start from what earlier ones learnt (``--history``; the ``rl`` and ``bo`` agents take it as ``prior``).

One SQLite file (``--history PATH``, else ``$EDGEPRUNE_HISTORY``, else ``~/.cache/edgeprune/history.sqlite``),
one row per evaluation: the run, the model (its file's SHA-256 and the data it was evaluated on), its
architecture and group structure (per group: channels, depthwise, a removable block, mean importance — the
``rl`` agent's state), the target profile and the measurement conditions (runtime, version, threads, where),
the latency target as a ratio, and the per-group keep fractions, widths, measured ratio to the baseline and
search accuracy. ``edgeprune history list|export|import`` shows it and moves it between machines as JSON lines
(a file a CI job can cache); importing skips rows already there.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

from edgeprune.errors import EdgePruneError

ENV = "EDGEPRUNE_HISTORY"
COLUMNS = ("run_id", "idx", "model", "arch", "groups", "target", "conditions", "latency_target", "keep", "widths",
           "ratio", "accuracy", "feasible", "created")
JSON_COLUMNS = ("groups", "conditions", "keep", "widths")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS evaluations ({", ".join(COLUMNS)}, PRIMARY KEY (run_id, idx));
"""


class HistoryError(EdgePruneError):
    """The history file cannot be read or written, or an import file is not history."""


def history_path(setting: str | None) -> Path | None:
    """Where history lives for ``--history`` ``setting``: None for "off"; "auto" (or None):
    ``$EDGEPRUNE_HISTORY`` (which may itself say "off") or ``~/.cache/edgeprune/history.sqlite``; anything
    else is a path."""
    if setting == "off":
        return None
    if setting in (None, "", "auto"):
        env = os.environ.get(ENV)
        if env == "off":
            return None
        return Path(env) if env else Path.home() / ".cache" / "edgeprune" / "history.sqlite"
    return Path(setting)


class History:
    """The history file at ``path`` (created if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.DatabaseError) as e:
            raise HistoryError(f"cannot open the history file {self.path}: {e}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert rows (dicts with ``COLUMNS``); those already there (same run and index) are kept as they
        were. Returns how many were new."""
        before = self.db.total_changes
        with self.db:
            for r in rows:
                missing = [c for c in ("run_id", "idx", "keep", "ratio", "accuracy") if c not in r]
                if missing:
                    raise HistoryError(f"a history row lacks {', '.join(missing)}: {str(r)[:200]}")
                vals = [json.dumps(r.get(c)) if c in JSON_COLUMNS else r.get(c) for c in COLUMNS]
                vals[COLUMNS.index("created")] = r.get("created") or time.time()
                self.db.execute(f"INSERT OR IGNORE INTO evaluations VALUES ({', '.join('?' * len(COLUMNS))})", vals)
        return self.db.total_changes - before

    def rows(self, *, exclude_run: str | None = None, keys: list | None = None) -> list[dict[str, Any]]:
        """Every row (oldest first), without ``exclude_run``'s; or exactly the rows ``keys`` ([run, idx])."""
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM evaluations ORDER BY created, run_id, idx")
        out = []
        want = {(str(k[0]), int(k[1])) for k in keys} if keys is not None else None
        for v in cur.fetchall():
            r = dict(zip(COLUMNS, v))
            if r["run_id"] == exclude_run or (want is not None and (r["run_id"], r["idx"]) not in want):
                continue
            for c in JSON_COLUMNS:
                r[c] = json.loads(r[c]) if r[c] is not None else None
            out.append(r)
        return out

    def runs(self) -> list[dict[str, Any]]:
        """One summary per run: evaluations, model, architecture, target, latency target, best feasible."""
        q = ("SELECT run_id, COUNT(*), model, arch, target, latency_target, MAX(CASE WHEN feasible THEN accuracy END), "
             "MIN(created) FROM evaluations GROUP BY run_id ORDER BY MIN(created)")
        keys = ("run_id", "evaluations", "model", "arch", "target", "latency_target", "best_feasible", "created")
        return [dict(zip(keys, v)) for v in self.db.execute(q).fetchall()]

    def export(self, path: str | Path) -> int:
        """Write every row as JSON lines to ``path``; returns the number of rows."""
        rows = self.rows()
        Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return len(rows)

    def import_(self, path: str | Path) -> tuple[int, int]:
        """Add the rows of a JSON-lines export; returns (rows read, rows new)."""
        try:
            lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
            rows = [json.loads(ln) for ln in lines]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HistoryError(f"{path} is not a history export (JSON lines): {e}") from None
        if not all(isinstance(r, dict) for r in rows):
            raise HistoryError(f"{path} is not a history export: every line must be a JSON object")
        return len(rows), self.add(rows)


def rows_of_run(run_id: str, context: dict[str, Any], evaluations) -> list[dict[str, Any]]:
    """History rows for a run's evaluations (``search.loop`` Evaluations); ``context`` holds model, arch,
    groups, target, conditions and latency_target."""
    out = []
    for e in evaluations:
        m = e.result.measurement
        out.append(dict(context, run_id=run_id, idx=e.index, keep=list(e.candidate.keep) or None,
                        widths=list(e.candidate.widths), ratio=m.ratio_to_baseline, accuracy=e.result.accuracy,
                        feasible=bool(e.result.feasible)))
    return [r for r in out if r["keep"] is not None and r["ratio"] is not None]


def annotate(rows: list[dict[str, Any]], *, model: str, target: str, conditions: dict) -> list[dict[str, Any]]:
    """Mark each row ``same_model`` (this model file on this data: its accuracies hold here) and
    ``same_conditions`` (also this target and measurement conditions: its latency ratios hold here)."""
    out = []
    for r in rows:
        same_model = r.get("model") == model
        out.append(dict(r, same_model=same_model,
                        same_conditions=same_model and r.get("target") == target and r.get("conditions") == conditions))
    return out
