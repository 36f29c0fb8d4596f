"""``edgeprune tuning list|export|import``: the MetaSchedule databases ``--tune-trials`` fills
(``edgeprune.compile.tuning_db``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

ROOT_OPTION = click.option("--db", "db", default=None, metavar="DIR",
                           help="Database folder (default: $EDGEPRUNE_TUNING_DB, else ~/.cache/edgeprune/tuning).")


def _base(db: str | None) -> Path:
    from edgeprune.compile.tuning_db import root

    return Path(db) if db else root()


@click.group("tuning")
def tuning_group() -> None:
    """Tuned TVM schedules, kept per target and reused by every later run."""


@tuning_group.command("list")
@ROOT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the databases as JSON.")
def list_cmd(db, as_json) -> None:
    """One line per target database: tasks, records, target."""
    from edgeprune.compile.tuning_db import databases

    dbs = databases(_base(db))
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in dbs], indent=2))
        return
    click.echo(f"{_base(db)}: {len(dbs)} target database(s)")
    for d in dbs:
        click.echo(f"{d.key}  {d.workloads:4d} tasks  {d.records:5d} records  target {d.target}")


@tuning_group.command("export")
@click.argument("path", type=click.Path(dir_okay=False))
@ROOT_OPTION
def export_cmd(path, db) -> None:
    """Write every tuning record to PATH as JSON lines (for a team or a CI cache)."""
    from edgeprune.compile.tuning_db import export

    n = export(path, _base(db))
    click.echo(f"{n} tuning records written to {path}")


@tuning_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@ROOT_OPTION
def import_cmd(path, db) -> None:
    """Add the records of an export (those already there are skipped)."""
    from edgeprune.compile.tuning_db import import_

    read, new = import_(path, _base(db))
    click.echo(f"{read} tuning records read from {path}, {new} new, in {_base(db)}")
