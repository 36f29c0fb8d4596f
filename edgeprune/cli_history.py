"""``edgeprune history list|export|import``: the evaluations of earlier runs (``edgeprune.history``)."""

from __future__ import annotations

import json
import time

import click

HISTORY_OPTION = click.option("--history", "setting", default="auto", show_default=True, metavar="auto|PATH",
                              help="History file (auto: $EDGEPRUNE_HISTORY, else ~/.cache/edgeprune/history.sqlite).")


def _open(setting: str):
    from edgeprune.history import History, HistoryError, history_path

    path = history_path(setting)
    if path is None:
        raise HistoryError("history is off ($EDGEPRUNE_HISTORY=off or --history off): name a file with --history PATH")
    return History(path)


@click.group("history")
def history_group() -> None:
    """Evaluations of earlier runs, which the rl and bo agents start from."""


@history_group.command("list")
@HISTORY_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def list_cmd(setting, as_json) -> None:
    """One line per run: evaluations, model, target, latency target, best feasible search accuracy."""
    with _open(setting) as h:
        runs = h.runs()
        if as_json:
            click.echo(json.dumps(runs, indent=2))
            return
        click.echo(f"{h.path}: {sum(r['evaluations'] for r in runs)} evaluations of {len(runs)} runs")
        for r in runs:
            best = f"{r['best_feasible']:.3f}" if r["best_feasible"] is not None else "-"
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])) if r["created"] else "?"
            lt = f"{r['latency_target']:.3f}x" if r["latency_target"] is not None else "?"
            click.echo(f"{r['run_id']:24s} {when}  {r['evaluations']:4d} evaluations  {r['arch'] or '?':24s} "
                       f"{r['target'] or '?':12s} target {lt}  best feasible {best}  model {r['model']}")


@history_group.command("export")
@click.argument("path", type=click.Path(dir_okay=False))
@HISTORY_OPTION
def export_cmd(path, setting) -> None:
    """Write every evaluation to PATH as JSON lines (for a team or a CI cache)."""
    with _open(setting) as h:
        n = h.export(path)
        click.echo(f"{n} evaluations written to {path}")


@history_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@HISTORY_OPTION
def import_cmd(path, setting) -> None:
    """Add the evaluations of a JSON-lines export (those already there are skipped)."""
    with _open(setting) as h:
        read, new = h.import_(path)
        click.echo(f"{read} evaluations read from {path}, {new} new, in {h.path}")
