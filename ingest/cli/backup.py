"""``firstline backup PATH``: a verified copy of the SQLite store, taken while it serves."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ingest.cli.common import config_option, echo_json, json_option, load
from storage.backup import BackupError
from storage.backup import backup as copy_store


@click.command()
@config_option
@json_option
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def backup(config_path: str, as_json: bool, path: Path) -> None:
    """Copy the SQLite database to PATH (a new file), consistent and checked.

    Safe while `serve` and workers run; restore: docs/operators.md, Backups.
    """
    config = load(config_path)
    try:
        report = copy_store(config.storage.url, path)
    except BackupError as exc:
        click.echo(f"firstline: {exc}", err=True)
        sys.exit(1)
    if as_json:
        echo_json(report.__dict__)
    else:
        click.echo(f"backup written to {report.path} ({report.size} bytes), "
                   f"integrity check: {report.integrity}")  # fmt: skip
