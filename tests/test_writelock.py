"""Intake writers on one SQLite file take turns on its lock file, across processes.

The holder of a turn is another interpreter, as another intake process is:
while it holds the turn, a session's ``250`` waits; once it lets go (or dies),
the message is committed at once and is stored; a turn that never comes is
our trouble, bounded, never a hung writer.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from policy.config.model import Config
from policy.errors import StorageUnavailable
from storage.models import StoredMessage
from storage.writelock import lock_path, turn
from tests.support.server import running
from tests.support.signing import message
from tests.support.stores import SQLITE_ONLY

HOLDER = """
import sys
from storage.writelock import turn
with turn(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


@contextmanager
def held(path: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the turn of ``path`` until its stdin is closed."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    ) as holder:  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            yield holder
        finally:
            if holder.poll() is None:
                holder.kill()


def test_the_lock_file_sits_beside_a_file_database_only(tmp_path: Path) -> None:
    assert lock_path(create_engine(f"sqlite:///{tmp_path}/a.db")) == f"{tmp_path}/a.db-writers"
    assert lock_path(create_engine("sqlite://")) is None
    assert lock_path(create_engine("sqlite:///:memory:")) is None
    assert lock_path(create_engine("postgresql+psycopg://postgres@127.0.0.1/test")) is None
    with turn(None):  # nothing to take: PostgreSQL orders its own writers
        pass


def test_a_turn_another_process_holds_is_waited_for_then_given(tmp_path: Path) -> None:
    path = str(tmp_path / "mail.db-writers")
    with held(path) as holder:
        refused = pytest.raises(StorageUnavailable, match=r"no turn to write within 0\.2 seconds")
        with refused, turn(path, wait=0.2):
            pytest.fail("the turn was given while another process held it")
        assert holder.stdin is not None
        holder.stdin.close()  # lets go
        with turn(path, wait=10):
            pass
    with held(path) as holder:  # dying lets go as well
        holder.kill()
        holder.wait(10)
        with turn(path, wait=10):
            pass


def test_a_lock_file_that_cannot_be_opened_leaves_the_waiting_to_sqlite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unopenable = tmp_path / "mail.db-writers"
    unopenable.mkdir()  # as good as one another user made 0600
    with turn(str(unopenable)):
        pass
    with turn(str(unopenable)):
        pass
    warnings = [r for r in caplog.records if r.name == "mail.storage"]
    assert len(warnings) == 1 and "SQLite's own lock" in warnings[0].getMessage()


def test_two_turns_in_one_process_never_overlap(tmp_path: Path) -> None:
    path = str(tmp_path / "mail.db-writers")
    inside: list[int] = []
    overlaps: list[int] = []

    def write(n: int) -> None:
        for _ in range(200):
            with turn(path):
                inside.append(n)
                if len(inside) > 1:
                    overlaps.append(n)
                time.sleep(0)
                inside.remove(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []


@SQLITE_ONLY
def test_a_session_is_answered_once_the_other_writer_lets_go(
    make_config: Callable[..., Config], db_url: str
) -> None:
    config = make_config()
    path = lock_path(create_engine(db_url))
    assert path is not None
    with running(config) as server, server.smtp() as client:
        client.ehlo("mx.customer.example")
        with held(path) as holder:
            client.mail("alice@customer.example")
            client.rcpt("support@example.com")
            answered: list[tuple[int, bytes]] = []
            data = threading.Thread(
                target=lambda: answered.append(client.data(message(subject="Waits its turn")))
            )
            data.start()
            data.join(1.0)
            assert answered == [], "250 before the message could be committed"
            assert holder.stdin is not None
            holder.stdin.close()
            data.join(30)
        assert answered and answered[0][0] == 250, answered
        with server.engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(StoredMessage)).scalar() == 1
