"""Intake against a store that already holds a million messages, beside an empty one.

Intake only inserts, and its indexes are B-trees, so its cost should grow with
the log of the tables, not with them; this section checks that claim. The big
store is filled with bulk SQL (``INSERT … SELECT`` over a generated series,
no SMTP): ``FIRSTLINE_BENCH_STORED`` stored messages (1,000,000 unless set,
scaled by ``FIRSTLINE_BENCH_SCALE``) as the batch leaves them — each with its
raw bytes, a done queue entry, a ticket message, a known Message-ID, four
messages to a ticket. Then the load generator of ``bench/ingest.py`` runs
against a real ``firstline serve`` on the big store and on an empty one,
interleaved; the figures are messages/s, the server's CPU per message and
their ratios, big to empty.

Last, the batch files a small mixed backlog (the test corpus, and replies to
filled messages so that the Message-ID look-ups find rows) on the big store
while every statement it sends is recorded, and the plan of each (``EXPLAIN
QUERY PLAN`` on SQLite, ``EXPLAIN`` on PostgreSQL) is printed, with intake's
own statements; a plan that scans a table is marked.

``FIRSTLINE_BENCH_BIGSTORE_URL`` (a PostgreSQL URL) runs it on PostgreSQL in a
schema of its own instead of on SQLite.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sqlite3
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import yaml
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url

from bench.harness import bench_config, cpu_seconds, firstline_cmd, free_port, process, workdir
from bench.load import LoadResult, make_message, run_load
from ingest.work.batch import Batch
from ingest.work.reading import reading_pool
from ingest.work.tickets import file_message
from policy.config.loading import load_config
from storage.bulkinsert import row_of
from storage.engine import make_engine
from storage.intake import GroupCommitWriter, Incoming
from storage.schema import prepare
from tests.support.corpus.cases import CASES
from tests.support.mailflow import stored_message

SCALE = float(os.environ.get("FIRSTLINE_BENCH_SCALE", "1"))
STORED = int(int(os.environ.get("FIRSTLINE_BENCH_STORED", "1000000")) * SCALE)
POSTGRES = os.environ.get("FIRSTLINE_BENCH_BIGSTORE_URL", "")
ROUNDS = 3
CHUNK = 100_000  # rows per filling statement
PER_TICKET = 4
MAILBOX = "support@example.com"


def _series(dialect: str) -> str:
    if dialect == "sqlite":
        return (
            "WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last)"
        )
    # bigint: psycopg sends a small number as a smallint, and generate_series is ambiguous then.
    return "WITH n(i) AS (SELECT generate_series(CAST(:first AS bigint), CAST(:last AS bigint)))"


_SCATTER = 2654435761  # Knuth's multiplicative hash: i -> a well-spread 32-bit prefix


def fill_id(i: int) -> str:
    """The Message-ID (without brackets) the fill gave message ``i``."""
    return f"{(i * _SCATTER) % 2**32:08x}.fill-{i}@customer.example"


def _fill_statements(dialect: str) -> list[str]:
    """One statement per table; ``i`` is the message's number (its ids are ``i``)."""
    if dialect == "sqlite":
        when = "strftime('%Y-%m-%d %H:%M:%S', 'now', '-' || (:last - i) || ' seconds') || '.000000'"
        digest = "lower(hex(randomblob(32)))"
        trace = "upper(hex(randomblob(6)))"
    else:
        when = "now() - (:last - i) * interval '1 second'"
        digest = "md5(i::text) || md5((i + 7)::text)"
        trace = "upper(substr(md5(i::text), 1, 12))"
    ticket = f"(i - 1) / {PER_TICKET} + 1"
    # Scattered over the key space, as real Message-IDs are (a serial prefix
    # would put every new one in the index's last leaf); fill_id() in Python.
    scatter = f"(i * {_SCATTER}) % 4294967296"
    if dialect == "sqlite":
        msgid = f"printf('%08x', {scatter}) || '.fill-' || i || '@customer.example'"
    else:
        msgid = f"lpad(to_hex({scatter}), 8, '0') || '.fill-' || i || '@customer.example'"
    series = _series(dialect)
    verdict = '{"action": "accept", "reason": "accepted"}'
    return [
        f"{series} INSERT INTO tickets (id, mailbox, subject, requester, status, created_at, "
        f"updated_at) SELECT {ticket}, '{MAILBOX}', 'Printer ' || i, 'c' || i || "
        f"'@customer.example', 'closed', {when}, {when} FROM n WHERE i % {PER_TICKET} = 1",
        f"{series} INSERT INTO stored_messages (id, received_at, trace_id, digest, size, raw, "
        "proto, client_ip, client_name, helo, mail_from, rcpt_tos, header_message_id, "
        "header_from, subject, forwarding, authentication_results, verdict) "
        f"SELECT i, {when}, {trace}, {digest}, length(:raw), :raw, 'ESMTP', '192.0.2.7', "
        f"'mx.customer.example', 'mx.customer.example', 'c' || i || '@customer.example', "
        f"'[\"{MAILBOX}\"]', {msgid}, 'c' || i || '@customer.example', 'Printer ' || i, "
        f"'direct', NULL, '{verdict}' FROM n",
        f"{series} INSERT INTO queue (id, message_id, mailbox, digest, state, attempts, "
        "available_at, created_at, state_changed_at, ticket_message_id, outcome) "
        f"SELECT i, i, '{MAILBOX}', {digest}, 'DONE', 1, {when}, {when}, {when}, i, 'filed' "
        "FROM n",
        f"{series} INSERT INTO ticket_messages (id, ticket_id, stored_message_id, "
        'queue_entry_id, message_id, digest, from_addr, from_name, "to", cc, date, subject, '
        "text, html, auto_reply, charset_repaired, forwarding, authentication_results, "
        f"details, created_at) SELECT i, {ticket}, i, i, {msgid}, {digest}, "
        f"'c' || i || '@customer.example', 'Customer', '[\"{MAILBOX}\"]', '[]', {when}, "
        "'Printer ' || i, :text, NULL, false, false, 'direct', NULL, '{}', "
        f"{when} FROM n",
        f"{series} INSERT INTO known_message_ids (id, mailbox, message_id, ticket_id, "
        f"direction, created_at) SELECT i, '{MAILBOX}', {msgid}, {ticket}, 'in', {when} FROM n",
    ]


def fill(engine: Engine, count: int) -> float:
    """``count`` filed messages, in chunks of bulk SQL; returns the seconds it took.

    On SQLite through a connection of its own, without foreign-key checks or
    fsyncs and with a large cache (one fsync at the end): the rows are
    consistent by construction, and a fill is not what is measured.
    """
    started = time.perf_counter()
    dialect = engine.dialect.name
    raw = make_message(0, 1024)
    values = {"raw": raw, "text": raw.split(b"\r\n\r\n", 1)[1].decode()}
    statements = _fill_statements(dialect)
    if dialect == "sqlite":
        database = sqlite3.connect(engine.url.database or "", isolation_level=None)
        database.execute("PRAGMA foreign_keys = OFF")
        database.execute("PRAGMA synchronous = OFF")
        database.execute("PRAGMA cache_size = -1000000")
        # Indexes built once at the end: sorting is far cheaper than random inserts.
        indexes = [sql for (sql,) in database.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")]  # fmt: skip
        for sql in indexes:
            database.execute("DROP INDEX " + sql.split()[2])
        for first in range(1, count + 1, CHUNK):
            chunk = {**values, "first": first, "last": min(first + CHUNK - 1, count)}
            database.execute("BEGIN")
            for statement in statements:
                database.execute(statement, chunk)
            database.execute("COMMIT")
        for sql in indexes:
            database.execute(sql)
        database.close()
        # On disk before the rounds: a store of a million rows was written over
        # months, not left as gigabytes of dirty pages that the first commits'
        # checkpoint fsync would have to write back for the fill.
        with open(engine.url.database or "", "rb+") as written:
            os.fsync(written.fileno())
        return time.perf_counter() - started
    for first in range(1, count + 1, CHUNK):
        chunk = {**values, "first": first, "last": min(first + CHUNK - 1, count)}
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement), chunk)
    with engine.begin() as connection:
        for table in ("tickets", "stored_messages", "queue", "ticket_messages",
                      "known_message_ids"):  # fmt: skip
            connection.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
            connection.exec_driver_sql(f"ANALYZE {table}")  # as autovacuum would soon
    return time.perf_counter() - started


@contextmanager
def _store(tmp: Path, url: str | None) -> Iterator[str]:
    """A store URL: a SQLite file in ``tmp``, or a fresh schema of ``url``."""
    if not url:
        yield f"sqlite:///{tmp}/bench.db"
        return
    schema = f"bench_{secrets.token_hex(4)}"
    admin = make_engine(url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    parsed = make_url(url)
    options = f"-csearch_path={schema}"
    try:
        yield parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def _intake(tmp: Path, url: str) -> tuple[LoadResult, float]:
    """One load against ``firstline serve`` on ``url``: the result, CPU ms per message."""
    smtp, lmtp = free_port(), free_port()
    config = bench_config(tmp, smtp, lmtp)
    data = yaml.safe_load(config.read_text())
    data["storage"]["url"] = url
    config.write_text(yaml.safe_dump(data))
    with process(firstline_cmd("serve", "--no-worker", "-c", str(config)), smtp) as proc:
        asyncio.run(run_load("127.0.0.1", smtp, sessions=10, per_session=10))  # warm-up
        before = cpu_seconds([proc.pid])
        result = asyncio.run(run_load("127.0.0.1", smtp))
        cpu = cpu_seconds([proc.pid]) - before
    return result, cpu * 1000 / max(result.accepted, 1)


def _replies(count: int) -> list[bytes]:
    """The corpus with its own Message-IDs, and replies to filled messages."""
    raws = [
        CASES[n % len(CASES)].raw.replace(b"Message-ID: <", b"Message-ID: <big%d." % n, 1)
        for n in range(count)
    ]
    for n in range(count // 2):
        original = 1 + (n * 7919) % max(STORED, 1)
        parent = fill_id(original).encode()
        raws.append(
            b"From: c%d@customer.example\r\nTo: %s\r\nSubject: Re: Printer %d\r\n"
            b"Message-ID: <reply-%d@customer.example>\r\n"
            b"In-Reply-To: <%s>\r\nReferences: <%s>\r\n\r\nStill broken.\r\n"
            % (original, MAILBOX.encode(), original, n, parent, parent)
        )
    return raws


async def _enqueue(engine: Engine, raws: list[bytes]) -> None:
    writer = GroupCommitWriter(engine)
    writer.start()
    try:
        await asyncio.gather(
            *(writer.submit(Incoming(row_of(stored_message(raw)), [MAILBOX])) for raw in raws)
        )
    finally:
        await writer.close()


def _captured_batch(tmp: Path, url: str) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """The plan of every distinct statement the batch sends while filing a small
    backlog; and, on SQLite, the plans that change once ``ANALYZE`` has run
    (firstline never runs it, an operator might)."""
    engine = make_engine(url)
    with engine.begin() as connection:  # the loads' messages are not this step's backlog
        connection.exec_driver_sql("UPDATE queue SET state = 'DONE' WHERE state = 'QUEUED'")
    asyncio.run(_enqueue(engine, _replies(len(CASES) * 2)))
    seen: dict[str, Any] = {}

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_c: Any, _cur: Any, statement: str, parameters: Any, _x: Any, many: bool) -> None:
        seen.setdefault(statement, parameters[0] if isinstance(parameters, list) else parameters)

    config = load_config(str(bench_config(tmp, 0, 0)))
    batch = Batch(engine, file_message, executor=reading_pool(), new_executor=reading_pool)
    try:
        result = asyncio.run(batch.drain(config))
    finally:
        batch.close()
    assert result.failed == 0, result
    statements = _distinct(list(seen.items()))
    plans = _plans(engine, statements)
    changed = []
    if engine.dialect.name == "sqlite":
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
        analyzed = _plans(engine, statements)
        changed = [after for before, after in zip(plans, analyzed, strict=True) if before != after]
        with engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM sqlite_stat1")
    engine.dispose()
    return plans, changed


def _intake_statements(engine: Engine) -> list[tuple[str, Any]]:
    """What intake's writer sends. It inserts on the driver's cursor, past
    SQLAlchemy's statement events, so the driver itself is asked: SQLite's trace
    (each statement with its values in place, one per table), psycopg's cursor
    class."""
    seen: dict[str, Any] = {}
    traced: dict[str, str] = {}
    engine.dispose()  # the connections made from here on are watched

    class _Recording(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            seen.setdefault(str(query), params)
            return super().execute(query, params, **kwargs)

        def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
            params = list(params_seq)
            seen.setdefault(str(query), params[0] if params else None)
            super().executemany(query, params, **kwargs)

    @event.listens_for(engine, "connect")
    def _watch(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(
                lambda sql: traced.setdefault(sql.partition(" VALUES ")[0], sql)
            )
        else:
            dbapi_connection.cursor_factory = _Recording

    asyncio.run(_enqueue(engine, [make_message(n) for n in range(3)]))
    event.remove(engine, "connect", _watch)
    engine.dispose()
    seen.update((sql, ()) for sql in traced.values())
    return list(seen.items())


def _plans(engine: Engine, statements: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """(statement, plan lines) for each statement a plan can be asked of."""
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    plans = []
    with engine.connect() as connection:
        cursor = connection.connection.cursor()  # the driver's, to pass what it was passed
        for statement, parameters in statements:
            if not re.match(r"\s*(SELECT|UPDATE|DELETE|INSERT|WITH)", statement, re.I):
                continue
            cursor.execute(explain + statement, parameters)
            plans.append((statement, [str(row[-1]) for row in cursor.fetchall()]))
        cursor.close()
        connection.rollback()
    return plans


def _shown(statement: str) -> str:
    return " ".join(statement.split())[:150]


def _distinct(statements: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """One of each statement, whatever the length of its ``IN`` lists."""
    seen: dict[str, tuple[str, Any]] = {}
    for statement, parameters in statements:
        key = re.sub(r"\((?:(?:\?|%\(\w+\)s)(?:, )?)+\)", "(…)", statement)
        seen.setdefault(key, (statement, parameters))
    return list(seen.values())


def _scans(line: str) -> bool:
    """A plan line that reads a whole table (SQLite's SCAN, PostgreSQL's Seq Scan)."""
    return bool(re.search(r"^\s*SCAN (?!.*USING (COVERING )?INDEX)|Seq Scan", line))


def run() -> list[str]:
    load = os.getloadavg()[0]
    rows: dict[str, list[tuple[LoadResult, float]]] = {"empty": [], "big": []}
    with workdir() as big_dir, _store(big_dir, POSTGRES) as big_url:
        big = make_engine(big_url)
        prepare(big)
        seconds = fill(big, STORED)
        intake_plans = _plans(big, _intake_statements(big))
        big.dispose()
        for _ in range(ROUNDS):  # interleaved, so drift on the machine hits both alike
            with workdir() as tmp, _store(tmp, POSTGRES) as empty_url:
                rows["empty"].append(_intake(tmp, empty_url))
            rows["big"].append(_intake(big_dir, big_url))
        batch_plans, analyzed_plans = _captured_batch(big_dir, big_url)
    empty_rate = statistics.median(r.rate for r, _ in rows["empty"])
    empty_cpu = statistics.median(c for _, c in rows["empty"])
    database = "PostgreSQL" if POSTGRES else "SQLite"
    lines = [
        f"bigstore: intake on {database} holding {STORED:,} filed messages (filled in "
        f"{seconds:.0f} s) against an empty one, 50 sessions x 40 messages of 4 KiB, "
        f"median of {ROUNDS} interleaved rounds, load average {load:.2f} before",
    ]
    for name, results in rows.items():
        rate = statistics.median(r.rate for r, _ in results)
        cpu = statistics.median(c for _, c in results)
        best = sorted(results, key=lambda r: r[0].rate)[len(results) // 2][0]
        lines.append(
            f"  {name:<6} {best.summary()}  serve CPU {cpu:5.2f} ms/msg  "
            f"rate ratio {rate / empty_rate:4.2f}  CPU ratio {cpu / empty_cpu:4.2f}"
        )
    lines.append(f"  load average after {os.getloadavg()[0]:.2f}")
    for title, plans in (
        ("intake's statements", intake_plans),
        ("the batch's statements", batch_plans),
        ("the batch's statements that change after ANALYZE", analyzed_plans),
    ):
        lines.append(f"  plans of {title} on the big store:")
        for statement, plan in plans:
            marked = any(_scans(line) for line in plan)
            lines.append(f"    {'SCAN! ' if marked else ''}{_shown(statement)}")
            lines.extend(f"        {line}" for line in plan)
    return lines
