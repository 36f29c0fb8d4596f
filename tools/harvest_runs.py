"""Best-feasible-so-far curves of search runs still in progress (or stopped), read from their run stores.

    python tools/harvest_runs.py /tmp/tmp*/runs.sqlite --results docs/bench_data/partial.jsonl

``tools/bench_search.py`` writes a run's row when the run ends; a benchmark stopped half-way (a session
that ran out of time) loses the runs in progress. This reads each store's evaluations (read-only, while
the run goes on) and appends one row per run with ``"partial": true``, its agent, seed, budget and curve,
in the format of bench_search's rows, so the curves of stopped runs can be plotted and tabulated beside
finished ones. A partial row is never a finished run's result: bench_search's resume ignores it.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path


def harvest(store: Path) -> list[dict]:
    c = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    out = []
    for run_id, config in c.execute("select run_id, config from runs").fetchall():
        cfg = json.loads(config)
        best, curve = -1.0, []
        for (res,) in c.execute("select result from evaluations where run_id = ? order by idx", (run_id,)):
            r = json.loads(res)
            if r.get("feasible"):
                best = max(best, r["accuracy"])
            curve.append(best if best >= 0 else None)
        out.append({"model": Path(cfg["model"]).stem, "agent": cfg["agent"], "seed": cfg["seed"],
                    "budget": cfg["budget"], "target": cfg["latency_target"], "finetune_epochs": cfg["finetune_epochs"],
                    "data": cfg["data"], "depth": cfg.get("depth", False), "partial": True, "evaluations": len(curve),
                    "feasible": best >= 0, "best": best if best >= 0 else None, "curve": curve, "run_id": run_id})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stores", nargs="+", type=Path)
    ap.add_argument("--results", type=Path, help="append the rows to this JSON-lines file (else print them)")
    a = ap.parse_args()
    for store in a.stores:
        for row in harvest(store):
            line = json.dumps(row)
            print(f"{store}: {row['model']} {row['agent']} seed {row['seed']}: {row['evaluations']} evaluations, "
                  f"best feasible {row['best']}")
            if a.results:
                with open(a.results, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
