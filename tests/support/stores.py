"""Shared fixtures: configurations, stores on SQLite and PostgreSQL, running servers.

Storage-touching tests run against both databases through the ``db_url``
fixture. PostgreSQL comes from ``FIRSTLINE_TEST_POSTGRES_URL`` (default: the
server development and CI machines provide at 127.0.0.1:5432); each test gets
its own schema. Locally a missing server skips those tests with the reason;
under CI (``CI=true``) it fails them, so PostgreSQL can never silently stop
being tested.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import yaml
from hypothesis import settings

from policy.config.loading import parse_config
from policy.config.model import Config
from tests.support.server import ServerThread, running

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# Property tests (Hypothesis, schemathesis) draw the same examples on every run
# and machine, CI or not: a failure in `make test` fails again when rerun, and
# a run passes or fails by the code, never by the draw. No example database, so
# a failure found once does not haunt later runs from .hypothesis/. To search
# at random instead: `pytest --hypothesis-profile=explore` (prints the blob that
# reproduces any failure it finds).
settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile("repeatable")


def postgres_url() -> str:
    return os.environ.get("FIRSTLINE_TEST_POSTGRES_URL", DEFAULT_PG)


def _postgres_or_skip() -> str:
    url = postgres_url()
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # not reachable: skip locally, fail under CI
        message = f"PostgreSQL at {url} is not reachable ({exc.__class__.__name__}); " \
                  "set FIRSTLINE_TEST_POSTGRES_URL to test against PostgreSQL"  # fmt: skip
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " — under CI this is a failure, not a skip")
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    url = _postgres_or_skip()
    schema = f"t_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in url else "?"
    yield f"{url}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        # A failed test can leave a transaction open (its traceback keeps the
        # connection alive); its locks would make DROP SCHEMA wait forever.
        connection.exec_driver_sql(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l "
            "JOIN pg_class c ON c.oid = l.relation "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(schema)s AND l.pid <> pg_backend_pid()",
            {"schema": schema},
        )
        connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/firstline.db"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


# For tests of what the database plays no part in (SMTP replies and limits, a
# reload, a hostile header refused at DATA, bytes stored as they came): both
# databases would only repeat the same server start-up. Whatever a store does
# its own way (transactions, locks, leases, queries, NUL bytes, NULL versus
# empty) keeps both.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


BASE_CONFIG: dict[str, Any] = {
    "server": {
        "hostname": "mx.firstline.test",
        "smtp": {"listen": "127.0.0.1:0"},
        "lmtp": {"listen": "127.0.0.1:0"},
        "max_message_size": 1024 * 1024,
        "max_recipients": 5,
    },
    "batch": {"interval": 3600},
    "channels": [{"name": "helpdesk"}, {"name": "sales-desk"}],
    "mailboxes": [
        {"channel": "helpdesk", "name": "Example Support", "address": "support@example.com"},
        {"channel": "helpdesk", "name": "Example Billing", "address": "billing@example.com"},
        {"channel": "sales-desk", "name": "Sales", "address": "sales@example.org"},
    ],
}


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        out[key] = (
            merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


@pytest.fixture
def make_config(db_url: str) -> Callable[..., Config]:
    """Build a validated Config from BASE_CONFIG plus overrides, on the test's database."""

    def make(**changes: Any) -> Config:
        data = merge(merge(BASE_CONFIG, {"storage": {"url": db_url}}), changes)
        return parse_config(yaml.safe_dump(data), "test.yaml")

    return make


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.fixture
def server(config: Config) -> Iterator[ServerThread]:
    with running(config) as started:
        yield started
