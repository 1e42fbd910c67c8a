"""``firstline db upgrade|current|revision``: the schema, under the operator's control."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
from alembic import command
from alembic.config import Config as AlembicConfig

from ingest.cli.common import config_option, echo_json, json_option, load
from storage import schema
from storage.engine import make_engine


@click.group()
def db() -> None:
    """Create or upgrade the database schema, or show its revision."""


@db.command()
@config_option
def upgrade(config_path: str) -> None:
    """Bring the database named by storage.url to this version's schema."""
    engine = make_engine(load(config_path, secrets=False).storage.url)
    try:
        before = schema.status(engine)
        after = schema.upgrade(engine)
    except schema.SchemaMismatch as exc:
        click.echo(f"firstline: {exc}", err=True)
        sys.exit(1)
    finally:
        engine.dispose()
    was = ", ".join(before.current) or "empty"
    if before.current == after.current:
        click.echo(f"already at {after.head}")
    else:
        click.echo(f"upgraded from {was} to {after.head}")


@db.command()
@config_option
@json_option
def current(config_path: str, as_json: bool) -> None:
    """Show the database's schema revision and this version's; exit 1 if they differ."""
    engine = make_engine(load(config_path, secrets=False).storage.url)
    try:
        found = schema.status(engine)
    finally:
        engine.dispose()
    if as_json:
        echo_json(
            {
                "current": list(found.current),
                "head": found.head,
                "unknown": list(found.unknown),
                "up_to_date": found.up_to_date,
            }
        )
    else:
        click.echo(f"database: {', '.join(found.current) or 'empty'}")
        click.echo(f"this version: {found.head}")
    sys.exit(0 if found.up_to_date else 1)


def _tidy_with_ruff(config: AlembicConfig) -> None:
    """Generated migrations pass the linters the rest of the tree passes."""
    section = "post_write_hooks"
    config.set_section_option(section, "hooks", "format, fix")
    for name, arguments in (("format", "format --quiet"), ("fix", "check --fix --quiet")):
        config.set_section_option(section, f"{name}.type", "exec")
        config.set_section_option(section, f"{name}.executable", sys.executable)
        config.set_section_option(
            section, f"{name}.options", f"-m ruff {arguments} REVISION_SCRIPT_FILENAME"
        )


@db.command()
@click.option("-m", "--message", required=True, help="what the migration changes")
def revision(message: str) -> None:
    """For developers: write a migration from the difference between the models and head."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            if schema.head_revision() is not None:
                schema.upgrade(engine)
            with engine.begin() as connection:
                config = schema.alembic_config(connection)
                _tidy_with_ruff(config)
                command.revision(config, message=message, autogenerate=True)
        finally:
            engine.dispose()
