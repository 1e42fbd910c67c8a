"""Bringing a database to the schema this code expects, through Alembic.

Several listeners and workers on several hosts may share one database, so
schema changes are an operator's decision (``firstline db upgrade``), with
one exception: an empty database is created on first start, because there
is nothing to protect yet. A database that is behind asks for the upgrade; a
database at a revision this code does not know (a newer release upgraded
it) refuses to start, because old code writing to a newer schema corrupts
data quietly.

Every check and upgrade runs in one transaction under a lock — a PostgreSQL
advisory lock, SQLite's ``BEGIN IMMEDIATE`` — so five processes starting at
once on an empty database create the tables exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, inspect

from policy.errors import PermFail
from storage.models import metadata

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
# pg_advisory_xact_lock key: "firstline" in ASCII, as a bigint.
_LOCK_KEY = int.from_bytes(b"frstline", "big") & 0x7FFF_FFFF_FFFF_FFFF


class SchemaMismatch(PermFail):
    """The database's schema is not the one this code was written for."""


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands against the migrations this code ships."""

    current: tuple[str, ...]
    head: str
    unknown: tuple[str, ...]
    has_tables: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == (self.head,)

    @property
    def empty(self) -> bool:
        return not self.current and not self.has_tables


def load_models() -> MetaData:
    """Every table, for the migrations and the test comparing them with the models.

    All are defined in ``storage/models.py``, so importing it registers them
    all; ``tests/test_migrations.py`` checks that no module defines one elsewhere.
    """
    return metadata


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration, built in code: there is no alembic.ini to ship."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("version_path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest migration this code ships (None only while writing the first one)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _head(scripts: ScriptDirectory) -> str:
    head = scripts.get_current_head()
    if head is None:
        raise SchemaMismatch("this build ships no migrations")
    return head


def _lock(connection: Connection) -> None:
    """Serialise schema work between processes for the rest of the transaction."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
    # SQLite: the engine began this transaction with BEGIN IMMEDIATE, which
    # already excludes every other writer.


def _status(connection: Connection, scripts: ScriptDirectory) -> SchemaStatus:
    current = tuple(sorted(MigrationContext.configure(connection).get_current_heads()))
    known = {rev.revision for rev in scripts.walk_revisions()}
    tables = set(inspect(connection).get_table_names()) - {VERSION_TABLE}
    return SchemaStatus(
        current=current,
        head=_head(scripts),
        unknown=tuple(rev for rev in current if rev not in known),
        has_tables=bool(tables),
    )


def status(engine: Engine) -> SchemaStatus:
    with engine.connect() as connection:
        return _status(connection, ScriptDirectory.from_config(alembic_config()))


def upgrade(engine: Engine) -> SchemaStatus:
    """``firstline db upgrade``: bring the database to this code's newest revision."""
    return _migrate(engine, only_if_empty=False)


def prepare(engine: Engine) -> None:
    """At start-up: create an empty database; refuse a database at another revision."""
    _migrate(engine, only_if_empty=True)


def _migrate(engine: Engine, *, only_if_empty: bool) -> SchemaStatus:
    scripts = ScriptDirectory.from_config(alembic_config())
    with engine.begin() as connection:
        _lock(connection)
        found = _status(connection, scripts)
        if found.unknown:
            raise SchemaMismatch(
                f"the database is at schema revision {', '.join(found.unknown)}, which this "
                f"version of firstline does not know (its newest is {found.head}): a newer "
                "release has upgraded it. Run that release, or restore a backup taken "
                "before the upgrade."
            )
        if found.up_to_date:
            return found
        if not found.current and found.has_tables:
            raise SchemaMismatch(
                "the database has tables but no schema revision (it was not created by "
                "`firstline db upgrade`); point storage.url at an empty database"
            )
        if only_if_empty and not found.empty:
            raise SchemaMismatch(
                f"the database is at schema revision {', '.join(found.current)} and this "
                f"version of firstline needs {found.head}: back it up, then run "
                "`firstline db upgrade`"
            )
        command.upgrade(alembic_config(connection), "head")
        return _status(connection, scripts)
