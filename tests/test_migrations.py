"""The schema comes from Alembic migrations, on SQLite and PostgreSQL alike.

``test_migrations_match_the_models`` is what keeps model edits honest: a
column added to ``storage/models.py`` without a migration fails it (write one
with ``firstline db revision -m "…"``).
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import Engine, Table, inspect, text
from sqlmodel import SQLModel

import storage
from ingest.cli import main
from ingest.ops.app import App
from policy.config.loading import parse_config
from storage import models, schema
from storage.engine import make_engine
from tests.support.stores import BASE_CONFIG, merge

UNKNOWN = "ffffffffffff"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def config_file(db_url: str, tmp_path: Path) -> Path:
    path = tmp_path / "firstline.yaml"
    path.write_text(yaml.safe_dump(merge(BASE_CONFIG, {"storage": {"url": db_url}})))
    return path


def _stamp(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_migrations_match_the_models(engine: Engine) -> None:
    schema.prepare(engine)
    metadata = schema.load_models()
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == [], "models changed without a migration: firstline db revision -m …"
    assert set(inspect(engine).get_table_names()) == set(metadata.tables) | {schema.VERSION_TABLE}


def test_every_table_is_defined_in_models() -> None:
    """``schema.load_models`` imports only ``storage/models.py``: a table defined in
    another module would escape the migrations and the comparison above."""
    defined_in = {}
    for module in pkgutil.walk_packages(storage.__path__, "storage."):
        if not module.name.startswith("storage.migrations"):
            for value in vars(importlib.import_module(module.name)).values():
                if isinstance(table := getattr(value, "__table__", None), Table):
                    defined_in[table.name] = value.__module__
    assert set(defined_in.values()) == {models.__name__}
    assert set(defined_in) == set(schema.load_models().tables)


def test_migrations_form_one_line() -> None:
    """Two migrations written from the same head must be chained, not left as two heads."""
    scripts = ScriptDirectory.from_config(schema.alembic_config())
    heads = scripts.get_heads()
    assert len(heads) == 1, f"several heads {heads}: point one's down_revision at the other"
    assert [r.down_revision for r in scripts.walk_revisions()][-1] is None


def test_prepare_creates_an_empty_database_once_and_then_does_nothing(engine: Engine) -> None:
    assert schema.status(engine).empty
    schema.prepare(engine)
    found = schema.status(engine)
    assert found.up_to_date and found.current == (found.head,)
    schema.prepare(engine)  # idempotent
    assert schema.status(engine) == found


def test_processes_starting_together_create_the_schema_exactly_once(engine: Engine) -> None:
    """Five processes starting at once on an empty database must not race on CREATE TABLE."""
    start = threading.Barrier(5)
    errors: list[BaseException] = []

    def boot() -> None:
        start.wait()
        try:
            schema.prepare(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=boot) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert versions == [(schema.head_revision(),)]


def test_a_database_newer_than_the_code_is_refused(engine: Engine) -> None:
    schema.prepare(engine)
    _stamp(engine, UNKNOWN)
    for action in (schema.prepare, schema.upgrade):
        with pytest.raises(schema.SchemaMismatch, match=f"revision {UNKNOWN}.*newer release"):
            action(engine)
    assert schema.status(engine).unknown == (UNKNOWN,)


async def test_serve_refuses_to_start_on_a_newer_database(engine: Engine, db_url: str) -> None:
    schema.prepare(engine)
    _stamp(engine, UNKNOWN)
    config = parse_config(
        yaml.safe_dump(merge(BASE_CONFIG, {"storage": {"url": db_url}})), "test.yaml"
    )
    app = App(config)
    with pytest.raises(schema.SchemaMismatch, match="does not know"):
        await app.start()
    assert app.servers == {}  # nothing listening: no mail accepted into a schema we misread
    app.engine.dispose()


NEXT_MIGRATION = """
import sqlalchemy as sa
from alembic import op

revision = "0000000000aa"
down_revision = {head!r}


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), nullable=True))
"""


def test_a_database_behind_the_code_waits_for_db_upgrade(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next release's migration: start-up refuses, ``upgrade`` applies it in place."""
    schema.prepare(engine)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO tickets (mailbox, subject, requester, status, "
                                "created_at, updated_at) VALUES ('m', 's', 'r', 'open', "
                                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))  # fmt: skip
    newer = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, newer, ignore=shutil.ignore_patterns("__pycache__"))
    head = schema.head_revision()
    (newer / "versions" / "0000000000aa_priority.py").write_text(NEXT_MIGRATION.format(head=head))
    monkeypatch.setattr(schema, "MIGRATIONS", newer)

    with pytest.raises(schema.SchemaMismatch, match=f"at schema revision {head}.*db upgrade"):
        schema.prepare(engine)
    assert schema.upgrade(engine).current == ("0000000000aa",)
    schema.prepare(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT subject, priority FROM tickets")).all() == [
            ("s", None)
        ]


def test_tables_without_a_revision_are_not_touched(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)
    for action in (schema.prepare, schema.upgrade):
        with pytest.raises(schema.SchemaMismatch, match="no schema revision"):
            action(engine)
    assert schema.VERSION_TABLE not in inspect(engine).get_table_names()


def test_cli_upgrade_and_current(engine: Engine, config_file: Path) -> None:
    runner = CliRunner()
    before = runner.invoke(main, ["db", "current", "-c", str(config_file)])
    assert before.exit_code == 1
    assert "database: empty" in before.output

    upgraded = runner.invoke(main, ["db", "upgrade", "-c", str(config_file)])
    assert upgraded.exit_code == 0, upgraded.output
    head = schema.head_revision()
    assert upgraded.output == f"upgraded from empty to {head}\n"
    again = runner.invoke(main, ["db", "upgrade", "-c", str(config_file)])
    assert again.output == f"already at {head}\n"

    current = runner.invoke(main, ["db", "current", "--json", "-c", str(config_file)])
    assert current.exit_code == 0
    assert yaml.safe_load(current.output) == {
        "current": [head],
        "head": head,
        "unknown": [],
        "up_to_date": True,
    }

    _stamp(engine, UNKNOWN)
    for command in (["db", "upgrade"], ["worker"], ["serve", "--no-worker"]):
        refused = runner.invoke(main, [*command, "-c", str(config_file)])
        assert refused.exit_code == 1, command
        assert f"revision {UNKNOWN}" in refused.output
        assert "Traceback" not in refused.output
