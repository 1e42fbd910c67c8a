"""Retention: evidence older than ``retention.days`` goes; newer evidence and tickets stay."""

from __future__ import annotations

import json
import smtplib
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from policy.config.loading import parse_config
from policy.config.model import Config
from storage.bulkinsert import new_row
from storage.engine import make_engine
from storage.models import (
    BatchRun,
    QuarantineAction,
    QueueEntry,
    Rejection,
    StoredMessage,
    Ticket,
    TicketMessage,
    utcnow,
)
from storage.retention import purge
from storage.schema import prepare
from tests.support.cli import run, write_config
from tests.support.server import ServerThread, running
from tests.support.signing import message
from tests.support.stores import BASE_CONFIG, merge

DAY = timedelta(days=1)


def deliver(
    server: ServerThread, subject: str, rcpts: tuple[str, ...] = ("support@example.com",)
) -> int:
    raw = message(sender="Alice <alice@fine.example>", to=", ".join(rcpts), subject=subject)
    with server.smtp() as client:
        client.sendmail("alice@fine.example", list(rcpts), raw)
    with Session(server.engine) as session:
        return session.scalars(
            select(StoredMessage.id).where(StoredMessage.subject == subject)  # type: ignore[arg-type]
        ).one()


def age(server: ServerThread, stored_id: int, when: datetime, **entry_values: object) -> None:
    """Move a message (and its entries) back in time, as if it had arrived at ``when``."""
    with Session(server.engine) as session, session.begin():
        session.execute(update(StoredMessage).where(StoredMessage.id == stored_id)  # type: ignore[arg-type]
                        .values(received_at=when))  # fmt: skip
        session.execute(
            update(QueueEntry)
            .where(QueueEntry.message_id == stored_id)  # type: ignore[arg-type]
            .values(state_changed_at=when, created_at=when, **entry_values)
        )


def raw_kept(server: ServerThread, stored_id: int) -> bool:
    with Session(server.engine) as session:
        stored = session.get(StoredMessage, stored_id)
        assert stored is not None
        return stored.raw is not None


def count(server: ServerThread, model: type) -> int:
    with Session(server.engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_purge_removes_only_what_is_older_than_the_window(
    server: ServerThread, tmp_path: Path, db_url: str
) -> None:
    now = utcnow()
    old, recent = now - 31 * DAY, now - 29 * DAY
    done_old = deliver(server, "done long ago")
    done_recent = deliver(server, "done recently")
    split = deliver(
        server, "one mailbox still waiting", ("support@example.com", "billing@example.com")
    )
    server.process()
    age(server, done_old, old)
    age(server, done_recent, recent)
    age(server, split, old)
    with Session(server.engine) as session, session.begin():  # billing's copy is not done yet
        session.execute(update(QueueEntry).where(QueueEntry.message_id == split,  # type: ignore[arg-type]
                                                 QueueEntry.mailbox == "billing@example.com")
                        .values(state="queued"))  # fmt: skip
    failed_old = deliver(server, "failed long ago")
    age(server, failed_old, old, state="failed", last_error="boom")
    held_old = deliver(server, "held long ago")
    age(server, held_old, old, state="quarantined", last_error="virus: EICAR")
    held_recent = deliver(server, "held recently")
    age(server, held_recent, recent, state="quarantined", last_error="virus: EICAR")
    with Session(server.engine) as session, session.begin():
        session.add_all([
            Rejection(created_at=old, stage="RCPT", reason="unknown_mailbox", reply="550"),
            Rejection(created_at=recent, stage="RCPT", reason="unknown_mailbox", reply="550"),
        ])  # fmt: skip
    tickets_before = (count(server, Ticket), count(server, TicketMessage))

    config_path = write_config(tmp_path / "firstline.yaml", db_url)
    dry = run("purge", "--dry-run", "--json", config=config_path)
    assert dry.exit_code == 0, dry.output
    shown = json.loads(dry.stdout)
    assert (len(shown["raw_messages"]), shown["rejections"], len(shown["quarantined"])) == (1, 1, 1)
    assert raw_kept(server, done_old) and count(server, Rejection) == 2  # nothing changed

    report = purge(server.engine, days=30, now=now)
    done = report.as_dict()
    assert [done[k] for k in ("raw_messages", "rejections", "quarantined")] == [
        shown[k] for k in ("raw_messages", "rejections", "quarantined")
    ]
    assert not raw_kept(server, done_old)
    assert raw_kept(server, done_recent)
    assert raw_kept(server, split)  # one of its entries is unfinished
    assert raw_kept(server, failed_old)  # work not done is never purged
    with Session(server.engine) as session:
        purged = session.get(StoredMessage, done_old)
        assert purged is not None and purged.purged_at is not None
        assert session.scalars(select(Rejection.created_at)).one() is not None  # type: ignore[arg-type]
        held = session.scalars(
            select(QueueEntry.message_id).where(QueueEntry.state == "quarantined")
        ).all()  # type: ignore[arg-type]
        assert held == [held_recent]
        assert session.get(StoredMessage, held_old) is None
        [audit] = session.scalars(select(QuarantineAction)).all()
        assert (audit.action, audit.by, audit.reason) == ("purged", "retention", "virus: EICAR")
    assert count(server, Rejection) == 1
    assert (count(server, Ticket), count(server, TicketMessage)) == tickets_before

    again = run("purge", config=config_path)
    assert again.exit_code == 0
    assert "purged the raw bytes of 0 finished message(s)" in again.stdout


def test_the_worker_purges_by_itself(make_config: Callable[..., Config], db_url: str) -> None:
    config = make_config(batch={"interval": 3600})
    engine = make_engine(db_url)
    prepare(engine)
    with Session(engine) as session, session.begin():
        session.add(
            Rejection(created_at=utcnow() - 40 * DAY, stage="RCPT", reason="x", reply="550")
        )
    engine.dispose()
    with running(config, worker=True) as server:
        deadline = time.monotonic() + 20
        while (count(server, Rejection) or not count(server, BatchRun)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert count(server, Rejection) == 0
        # …and records its batches for `firstline status`.
        with Session(server.engine) as session:
            [batch_run] = session.scalars(select(BatchRun)).all()
        assert batch_run.owner == server.app.worker.batch.owner and batch_run.error is None


def test_raw_bytes_stay_until_the_work_itself_is_old(server: ServerThread) -> None:
    """Received long ago but finished yesterday (a failed message an operator retried):
    its raw bytes are evidence for a month from the finish, not from the arrival."""
    now = utcnow()
    stored_id = deliver(server, "retried yesterday")
    server.process()
    with Session(server.engine) as session, session.begin():
        session.execute(update(StoredMessage).where(StoredMessage.id == stored_id)  # type: ignore[arg-type]
                        .values(received_at=now - 40 * DAY))  # fmt: skip
        session.execute(update(QueueEntry).where(QueueEntry.message_id == stored_id)  # type: ignore[arg-type]
                        .values(state_changed_at=now - DAY))  # fmt: skip
    report = purge(server.engine, days=30, now=now)
    assert report.raw_messages == []
    assert raw_kept(server, stored_id)
    later = purge(server.engine, days=30, now=now + 30 * DAY)
    assert len(later.raw_messages) == 1 and not raw_kept(server, stored_id)


def test_a_big_purge_never_blocks_intake(tmp_path: Path) -> None:
    """50,000 expired messages purged while a sender keeps sending: every message
    gets its 250 (none waits out the purge into a 451); p99 DATA-to-250 printed."""
    expired = 50_000
    config = parse_config(yaml.safe_dump(merge(
        BASE_CONFIG, {"storage": {"url": f"sqlite:///{tmp_path}/firstline.db"}}
    )), "test.yaml")  # fmt: skip
    long_ago = utcnow() - 40 * DAY
    engine = make_engine(config.storage.url)
    prepare(engine)
    raw = message(sender="alice@fine.example", to="support@example.com", subject="old")
    with engine.begin() as connection:  # bulk SQL: SMTP would take minutes for 50,000
        connection.execute(StoredMessage.__table__.insert(), [  # type: ignore[attr-defined]
            new_row(StoredMessage, received_at=long_ago, trace_id=f"{n:012X}", digest=f"{n:064x}",
                    size=len(raw), raw=raw, proto="SMTP", client_ip="192.0.2.1")
            for n in range(1, expired + 1)
        ])  # fmt: skip
        connection.execute(QueueEntry.__table__.insert(), [  # type: ignore[attr-defined]
            new_row(QueueEntry, message_id=n, mailbox="support@example.com", digest=f"{n:064x}",
                    state="done", created_at=long_ago, state_changed_at=long_ago)
            for n in range(1, expired + 1)
        ])  # fmt: skip
    engine.dispose()

    replies: list[int] = []
    seconds: list[float] = []
    purging = threading.Event()
    done = threading.Event()

    def send(server: ServerThread) -> None:
        try:
            n = 0
            while not done.is_set():
                with server.smtp() as client:  # a session may repeat a command 100 times
                    client.ehlo()
                    for _ in range(50):
                        n += 1
                        body = message(sender="alice@fine.example", to="support@example.com",
                                       subject=f"during the purge {n}")  # fmt: skip
                        client.mail("alice@fine.example")
                        client.rcpt("support@example.com")
                        started = time.monotonic()
                        code, _ = client.data(body)
                        seconds.append(time.monotonic() - started)
                        replies.append(code)
                        purging.set()
                        if done.is_set():
                            break
        except smtplib.SMTPResponseException as exc:
            replies.append(exc.smtp_code)
        finally:
            purging.set()

    with running(config) as server:
        sender = threading.Thread(target=send, args=(server,), daemon=True)
        sender.start()
        assert purging.wait(30), "the sender never got its first reply"
        sent_before = len(replies)
        report = purge(server.engine, days=30)
        sent_during = len(replies) - sent_before
        done.set()
        sender.join(60)
    assert len(report.raw_messages) == expired
    assert sent_during > 0
    assert set(replies) == {250}, f"not all answered 250: {sorted(set(replies))}"
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"\npurge of {expired} expired messages: {len(replies)} messages sent meanwhile, "
          f"DATA-to-250 p50 {ordered[len(ordered) // 2] * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms")  # fmt: skip
