"""The batch: turn queued mail into tickets, one message's failure at a time.

Claimed entries are worked on in groups: a group is started (its attempts
spent) in one statement, read in one query, scanned and parsed with no
transaction open — in a process pool when the batch has one
(:mod:`ingest.work.reading`), on every core — and then filed in one short
transaction in which each ticket message is written together with its own
queue entry's ``done``, checked against that entry's lease token (the group's
rows one statement per table, :mod:`ingest.work.grouprows`). So a ticket
message exists if and only if its queue entry is done — even when two
workers race or one dies half-way — a message that is slow to parse holds no
lock that intake or the API needs (on SQLite every write transaction is
``BEGIN IMMEDIATE``), and a group pays one commit (one fsync) for all its
messages. If anything goes wrong while filing a group, its transaction rolls
back and its messages are filed again one transaction each, so an exception
in one message marks that entry and the batch goes on.

Only the entries being worked on spend an attempt (counted when their leases
are renewed to start them): entries claimed with them but not started cost
nothing when the worker dies, and a batch stopped on purpose gives them back
due at once. A group holds at most :data:`~ingest.work.groups.GROUP_BYTES` of
mail (or one larger message) and :data:`~ingest.work.groups.GROUP_MESSAGES`
messages, and at most two groups are started at once (the next one is read
while this one is filed), so a worker that dies charges an attempt to twice
that much mail at most; an entry that was started before goes alone: a
message that kills its worker charges the others of its first groups once,
never again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, defer
from sqlmodel import col

from ingest.work.groups import BatchResult, group_size, worker_id
from ingest.work.lookups import GroupLookups
from ingest.work.outcomes import Outcomes, finding_of
from ingest.work.reading import Reading, chunks, examine_all
from ingest.work.scanning import scan_message
from policy.antivirus import ScanResult
from policy.config.model import Config
from policy.errors import ScannerUnavailable, TempFail
from policy.message.parsed import ParsedMessage
from storage import mailqueue as queue
from storage.engine import classify
from storage.lease import LeaseLost
from storage.models import QueueState, StoredMessage

log = logging.getLogger("mail.batch")

# (session, claim, stored message, its parse, config, the group's look-ups)
# -> id of the ticket message created
FileMessage = Callable[
    [Session, queue.Claim, StoredMessage, ParsedMessage, Config, GroupLookups], int | None
]


@dataclass
class _Examined:
    """A started group, scanned and parsed: what is ready to file, and whether
    the scanner was away (then the entries after the one that met it wait)."""

    group: list[queue.Claim]
    scanner_away: str | None
    to_file: list[tuple[queue.Claim, ParsedMessage]]

    def waiting(self, settled: dict[int, QueueState | None]) -> list[queue.Claim]:
        """The group's entries neither settled nor to be filed."""
        filing = {c.entry_id for c, _ in self.to_file}
        return [c for c in self.group if c.entry_id not in settled and c.entry_id not in filing]


class Batch:
    """``executor`` runs :func:`~ingest.work.reading.examine`; None means the
    loop's default thread pool (enough for tests; a process pool from
    :func:`~ingest.work.reading.reading_pool` uses every core). ``new_executor``
    replaces a process pool broken by a dying worker process."""

    def __init__(
        self,
        engine: Engine,
        file_message: FileMessage,
        *,
        owner: str | None = None,
        executor: Executor | None = None,
        new_executor: Callable[[], Executor] | None = None,
    ) -> None:
        self.engine = engine
        self.outcomes = Outcomes(engine)
        self.file_message = file_message
        self.owner = owner or worker_id()
        self.executor = executor
        self._new_executor = new_executor

    def close(self) -> None:
        """Stop the executor's processes (the batch is not used again)."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, config: Config) -> BatchResult:
        """Take what is due, up to ``batch.size``, and process it.

        Whatever happens to one entry stays with that entry. If the batch
        itself is interrupted (shutdown, the database gone), the entries not
        yet started go back to the queue due at once, without spending an
        attempt, so an interrupted batch can never be mistaken for a message
        that kills its worker; a group being filed finishes the message in
        hand, commits, and gives back the rest.

        The next group is scanned and parsed while this one is filed, so the
        pool and the writer work at the same time: at most two groups are
        started at once.
        """
        claims = await asyncio.to_thread(self._claim, config)
        if not claims:
            return BatchResult()
        sizes = await asyncio.to_thread(self._sizes, claims)
        unstarted = list(claims)
        settled: dict[int, QueueState | None] = {}  # entry id → outcome, set by the filer too
        stop = threading.Event()
        filing: asyncio.Future[None] | None = None
        reading: asyncio.Task[_Examined] | None = None
        try:
            group = await self._start_next(unstarted, sizes, config, settled)
            examined = await self._examine(group, config, settled) if group is not None else None
            while examined is not None:
                waiting = examined.waiting(settled)
                if examined.scanner_away is None and unstarted:
                    # Started before this group's filing takes the write lock
                    # (SQLite has one for the whole store), read while it is filed.
                    group = await self._start_next(unstarted, sizes, config, settled)
                    assert group is not None
                    reading = asyncio.ensure_future(self._examine(group, config, settled))
                if examined.to_file:
                    filing = asyncio.get_running_loop().run_in_executor(
                        None, self._file_group, examined.to_file, config, settled, stop
                    )
                    await asyncio.shield(filing)
                    filing = None
                if examined.scanner_away is not None:
                    # The entries after the one that met it wait too, without each
                    # waiting out the scanner's timeout.
                    for claim in [*waiting, *unstarted]:
                        settled[claim.entry_id] = await asyncio.to_thread(
                            self.outcomes.fail, claim, config, examined.scanner_away, temporary=True
                        )
                    unstarted.clear()
                examined, reading = (await reading if reading else None), None
        finally:
            stop.set()
            if reading is not None:
                reading.cancel()
            unfinished = [task for task in (reading, filing) if task is not None]
            if unfinished:
                await asyncio.wait(unfinished)
            left = [c for c in claims if c.entry_id not in settled]
            if left:
                await asyncio.shield(asyncio.to_thread(self.outcomes.give_back, left, config))
        result = BatchResult(taken=len(claims))
        for outcome in settled.values():
            result.count(outcome)
        return result

    async def _start_next(
        self,
        unstarted: list[queue.Claim],
        sizes: dict[int, int],
        config: Config,
        settled: dict[int, QueueState | None],
    ) -> list[queue.Claim] | None:
        """Start the next group: its attempts spent, the entries still ours."""
        if not unstarted:
            return None
        count = group_size(unstarted, sizes, config.batch.max_attempts)
        chosen = unstarted[:count]
        del unstarted[:count]
        group = await asyncio.to_thread(self._start, chosen, config)
        started = {c.entry_id for c in group}
        settled.update((c.entry_id, None) for c in chosen if c.entry_id not in started)
        return group

    async def _examine(
        self, group: list[queue.Claim], config: Config, settled: dict[int, QueueState | None]
    ) -> _Examined:
        """Scan and parse a started group; what is ready to file, in order.

        Entries that end here (a finding, the raw message gone, a parser that
        failed) are settled; a scanner away stops at the entry that met it and
        says why, for the rest to wait.
        """
        raws = await asyncio.to_thread(self._raws, group)
        loop = asyncio.get_running_loop()
        executor = self.executor
        present = [c for c in group if c.message_id in raws]
        count = chunks(len(present))
        calls = [present[n::count] for n in range(count)]

        async def readings_of(claims: list[queue.Claim]) -> list[Reading | Exception]:
            # In a coroutine, so that a broken pool refusing the submission is
            # these entries' exception, like a process dying under them.
            messages = [raws[c.message_id] for c in claims]
            return await loop.run_in_executor(executor, examine_all, messages, config.limits)

        answers = await asyncio.gather(*(readings_of(c) for c in calls), return_exceptions=True)
        readings: dict[int, Reading | BaseException] = {}
        for claims, answer in zip(calls, answers, strict=True):
            each = [answer] * len(claims) if isinstance(answer, BaseException) else answer
            readings.update(zip((c.entry_id for c in claims), each, strict=True))
        to_file: list[tuple[queue.Claim, ParsedMessage]] = []
        for claim in group:
            if claim.message_id not in raws:
                settled[claim.entry_id] = await asyncio.to_thread(
                    self._process, claim, config, None
                )
                continue
            reading = readings[claim.entry_id]
            try:
                if isinstance(reading, BaseException):
                    raise reading
                scan, parsed = reading
                refused, outcome = await self._screen(
                    claim, raws[claim.message_id][0], scan, config
                )
            except ScannerUnavailable as exc:  # the entry waits; so do the others
                scanner_away = f"temporary: {exc}"
                settled[claim.entry_id] = await asyncio.to_thread(
                    self.outcomes.fail, claim, config, scanner_away, temporary=True
                )
                return _Examined(group, scanner_away, to_file)
            except Exception as exc:  # outside filing: a scanner bug, a dead pool …
                settled[claim.entry_id] = await self._failed(claim, config, exc, executor)
                continue
            if refused:
                settled[claim.entry_id] = outcome
            else:
                to_file.append((claim, parsed))
        return _Examined(group, None, to_file)

    async def _failed(
        self, claim: queue.Claim, config: Config, exc: Exception, executor: Executor | None
    ) -> QueueState | None:
        log.error("entry %d failed", claim.entry_id, exc_info=exc)
        if (
            isinstance(exc, BrokenExecutor)
            and self._new_executor is not None
            and self.executor is executor
            and executor is not None
        ):
            # One worker process died (OOM, a crash in a C extension): every
            # reading in flight failed with it; the next group gets a fresh pool.
            self.executor = self._new_executor()
            executor.shutdown(wait=False, cancel_futures=True)
        error = f"{exc.__class__.__name__}: {exc}"[:2000]
        return await asyncio.to_thread(
            self.outcomes.fail, claim, config, error, temporary=isinstance(classify(exc), TempFail)
        )

    async def _screen(
        self, claim: queue.Claim, raw: bytes, builtin: ScanResult, config: Config
    ) -> tuple[bool, QueueState | None]:
        """Antivirus first: a finding never becomes a ticket; a scanner away means wait.

        Whether the message was refused, and the entry's outcome if so.
        """
        scan = await scan_message(raw, config.antivirus, builtin)
        if not scan.passes:
            finding = finding_of(scan)
            if not await asyncio.to_thread(self.outcomes.overruled, claim, finding):
                return True, await asyncio.to_thread(
                    self.outcomes.refuse, claim, config, scan, finding
                )
        return False, None

    def _start(self, claims: list[queue.Claim], config: Config) -> list[queue.Claim]:
        with Session(self.engine) as session, session.begin():
            return queue.start_group(session, claims, lease_seconds=config.batch.lease_seconds)

    async def drain(self, config: Config) -> BatchResult:
        """Run batches until nothing is due (``firstline process``)."""
        total = BatchResult()
        while True:
            result = await self.run(config)
            total.add(result)
            if result.taken < config.batch.size:
                return total

    def _claim(self, config: Config) -> list[queue.Claim]:
        with Session(self.engine) as session, session.begin():
            return queue.claim(
                session,
                owner=self.owner,
                limit=config.batch.size,
                lease_seconds=config.batch.lease_seconds,
                max_attempts=config.batch.max_attempts,
            )

    def _sizes(self, claims: list[queue.Claim]) -> dict[int, int]:
        """The stored size of each claimed message, to form groups by."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(col(StoredMessage.id), col(StoredMessage.size)).where(
                    col(StoredMessage.id).in_([c.message_id for c in claims])
                )
            )
            return {i: size for i, size in rows if i is not None}

    def _raws(self, claims: list[queue.Claim]) -> dict[int, tuple[bytes, str | None]]:
        """The raw bytes and envelope senders still stored, read outside any write transaction."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(
                    col(StoredMessage.id), col(StoredMessage.raw), col(StoredMessage.mail_from)
                ).where(
                    col(StoredMessage.id).in_([c.message_id for c in claims]),
                    col(StoredMessage.raw).is_not(None),
                )
            )
            return {
                i: (raw, sender) for i, raw, sender in rows if i is not None and raw is not None
            }

    def _file_group(
        self,
        items: list[tuple[queue.Claim, ParsedMessage]],
        config: Config,
        settled: dict[int, QueueState | None],
        stop: threading.Event,
    ) -> None:
        """File a group in one transaction; after any trouble, one transaction each.

        ``stop`` (the batch interrupted) ends the group after the message in
        hand: what is filed commits, the rest is given back.
        """
        filed: list[queue.Claim] = []
        if len(items) > 1:
            try:
                with Session(self.engine, expire_on_commit=False) as session, session.begin():
                    stored = self._stored(session, [c.message_id for c, _ in items])
                    lookups = GroupLookups.fetch(session, items)
                    for claim, parsed in items:
                        if stop.is_set():
                            break
                        message = stored.get(claim.message_id)
                        if message is None:
                            raise LookupError("the raw message is gone (purged?)")
                        ticket_message_id = self.file_message(
                            session, claim, message, parsed, config, lookups
                        )
                        lookups.rows.done.append((claim, ticket_message_id))
                        lookups.done(claim.entry_id)
                        filed.append(claim)
                    lookups.rows.flush(session)
            except Exception as exc:
                log.info("a group of %d: filing one by one (%r)", len(items), exc)
            else:
                settled.update((c.entry_id, QueueState.DONE) for c in filed)
        for claim, parsed in items:
            if stop.is_set():
                return
            if claim.entry_id not in settled:
                settled[claim.entry_id] = self._process(claim, config, parsed)

    @staticmethod
    def _stored(session: Session, ids: list[int]) -> dict[int, StoredMessage]:
        """The group's stored messages whose raw bytes are still there, in one query
        that leaves those bytes behind (the batch has them already)."""
        rows = session.execute(
            select(StoredMessage)
            .options(defer(StoredMessage.raw))  # type: ignore[arg-type]
            .where(col(StoredMessage.id).in_(ids), col(StoredMessage.raw).is_not(None))
        ).scalars()
        return {m.id: m for m in rows if m.id is not None}

    def _process(
        self, claim: queue.Claim, config: Config, parsed: ParsedMessage | None
    ) -> QueueState | None:
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                stored = session.get(StoredMessage, claim.message_id)
                if stored is None or stored.raw is None or parsed is None:
                    raise LookupError("the raw message is gone (purged?)")
                lookups = GroupLookups.fetch(session, [(claim, parsed)])
                ticket_message_id = self.file_message(
                    session, claim, stored, parsed, config, lookups
                )
                lookups.rows.done.append((claim, ticket_message_id))
                lookups.rows.flush(session)
            return QueueState.DONE
        except LeaseLost:
            log.warning("entry %d: lease lost; another worker owns it now", claim.entry_id)
            return None
        except Exception as exc:
            temporary = isinstance(classify(exc), TempFail)  # ours: spends no attempt
            if not temporary:
                log.exception("entry %d failed", claim.entry_id)
            prefix = "temporary: " if temporary else f"{exc.__class__.__name__}: "
            return self.outcomes.fail(claim, config, f"{prefix}{exc}"[:2000], temporary=temporary)
