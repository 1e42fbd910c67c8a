"""Alembic's entry point: migrate the connection :mod:`storage.schema` hands over.

Running ``alembic`` from the command line with a URL is deliberately not
supported: the upgrade must run under the schema lock that
:func:`storage.schema.upgrade` takes, or two processes starting at once on
an empty PostgreSQL would both try to create the tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from storage.schema import load_models

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise SystemExit("run migrations with `firstline db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=load_models(),
    # SQLite cannot ALTER most things; batch mode copies the table instead,
    # and the same generated code works on PostgreSQL.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
