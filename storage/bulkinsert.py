"""Rows inserted on the driver's cursor, for the paths that write many.

Intake writes a group of sessions' messages, and the batch a group's
tickets and ticket messages, many rows of a few tables at a time. Through
SQLAlchemy's statement execution (cache look-up, parameter processing,
result objects), or its multi-row ``INSERT … VALUES (…), (…) RETURNING``,
which psycopg parses anew on every call (it caches no query over 4 KiB),
that cost more CPU than the database's own work for the rows. Here each
table's ``INSERT`` is compiled once per dialect and run with ``executemany``;
PostgreSQL hands back every row's id from the one pipelined call
(``returning=True``), SQLite from each row's ``lastrowid``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel


def new_row(model: type[SQLModel], **values: Any) -> dict[str, Any]:
    """Column values for a new row of ``model``, with the model's defaults for the rest."""
    defaults = _DEFAULTS.get(model)
    if defaults is None:
        fields = [(key, info) for key, info in model.model_fields.items() if key != "id"]
        defaults = _DEFAULTS[model] = _Defaults(
            {key for key, _ in fields},
            {key: info.default for key, info in fields if info.default_factory is None},
            [(key, info.default_factory) for key, info in fields if info.default_factory],
        )
    unknown = values.keys() - defaults.columns
    if unknown:
        raise TypeError(f"not columns of {model.__name__}: {', '.join(sorted(unknown))}")
    row = {**defaults.constant, **values}
    for key, factory in defaults.made:
        if key not in values:
            row[key] = factory()
    return row


@dataclass(frozen=True)
class _Defaults:
    """A model's columns, its constant defaults, and the defaults made per row."""

    columns: set[str]
    constant: dict[str, Any]
    made: list[tuple[str, Callable[..., Any]]]


_DEFAULTS: dict[type[SQLModel], _Defaults] = {}


def row_of(model: SQLModel) -> dict[str, Any]:
    """The column values of a model instance (for callers that have one)."""
    return {c.key: getattr(model, c.key) for c in model.__table__.columns if c.key != "id"}  # type: ignore[attr-defined]


class CompiledInsert:
    """One table's ``INSERT``, compiled once for the dialect. Values still go
    through each column type's bind processor, so they are stored exactly as
    SQLAlchemy stores them."""

    def __init__(self, model: type[SQLModel], dialect: Dialect) -> None:
        table = model.__table__  # type: ignore[attr-defined]
        columns = [column for column in table.columns if column.key != "id"]
        # PostgreSQL hands back each row's id from executemany; SQLite tells the
        # last row id after each execute, which needs no RETURNING.
        self._returning = dialect.name == "postgresql"
        statement = table.insert()
        if self._returning:
            statement = statement.returning(table.c.id)
        compiled = statement.compile(dialect=dialect, column_keys=[c.key for c in columns])
        self._sql = str(compiled)
        self._keys: list[str] = (
            list(compiled.positiontup or []) if compiled.positional else [c.key for c in columns]
        )
        self._positional = compiled.positional
        types = {column.key: column.type for column in columns}
        processors = [types[k].dialect_impl(dialect).bind_processor(dialect) for k in self._keys]
        # Only the values whose type converts them are touched (five or six of a
        # row's sixteen to twenty): a pass over every value cost more than the
        # conversions.
        self._converted = [(n, process) for n, process in enumerate(processors) if process]

    def run(self, cursor: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert ``rows`` and return their new ids, in order."""
        if not rows:
            return []
        values = [self._values(row) for row in rows]
        if self._returning:
            cursor.executemany(self._sql, values, returning=True)
            ids = []
            while True:
                ids.append(cursor.fetchone()[0])
                if not cursor.nextset():
                    return ids
        ids = []
        for value in values:
            cursor.execute(self._sql, value)
            ids.append(cursor.lastrowid)
        return ids

    def _values(self, row: dict[str, Any]) -> list[Any] | dict[str, Any]:
        values = list(map(row.__getitem__, self._keys))
        for n, process in self._converted:
            values[n] = process(values[n])
        if self._positional:
            return values
        return dict(zip(self._keys, values, strict=True))


_INSERTS: dict[tuple[str, type[SQLModel]], CompiledInsert] = {}


def compiled_insert(connection: Connection, model: type[SQLModel]) -> CompiledInsert:
    """The compiled ``INSERT`` of ``model``'s table, for this connection's dialect."""
    key = (connection.dialect.name, model)
    found = _INSERTS.get(key)
    if found is None:
        found = _INSERTS[key] = CompiledInsert(model, connection.dialect)
    return found


@contextlib.contextmanager
def driver_cursor(connection: Connection) -> Iterator[Any]:
    """The driver's cursor of ``connection``, its errors raised as SQLAlchemy
    raises them for the statements it runs itself (so that
    :func:`storage.engine.classify` reads both alike), and a connection the
    driver says is broken discarded."""
    pooled = connection.connection
    dialect = connection.dialect
    cursor = pooled.cursor()
    try:
        yield cursor
    except dialect.loaded_dbapi.Error as exc:
        broken = dialect.is_disconnect(exc, pooled.dbapi_connection, cursor)
        if broken:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            None, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=broken,
            dialect=dialect,
        ) from exc  # fmt: skip
    finally:
        cursor.close()
