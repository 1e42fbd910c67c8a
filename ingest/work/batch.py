"""The batch: turn queued mail into tickets, one message's failure at a time.

Each claimed entry is read, scanned and parsed with no transaction open, then
filed in one short transaction that also finishes the queue entry with its
lease token, so a ticket message exists if and only if its queue entry is
done — even when two workers race or one dies half-way — and a message that
is slow to parse holds no lock that intake or the API needs (on SQLite every
write transaction is ``BEGIN IMMEDIATE``). An exception in one message marks
that entry and the batch goes on.

Only the entry being worked on spends an attempt (counted when its lease is
renewed to start it): entries claimed with it but not started cost nothing
when the worker dies, and a batch stopped on purpose gives them back due at
once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ingest.channels import emit as events
from ingest.smtp.refusals import record_batch_rejection
from ingest.work.scanning import scan_message
from policy.antivirus import ScanResult
from policy.config.model import Config
from policy.errors import ScannerUnavailable, TempFail
from policy.message.mime import parse_message
from policy.message.parsed import ParsedMessage
from storage import mailqueue as queue
from storage import quarantine
from storage.engine import classify
from storage.models import QueueState, StoredMessage

log = logging.getLogger("mail.batch")

# (session, claim, stored message, its parse, config) -> id of the ticket message created
FileMessage = Callable[[Session, queue.Claim, StoredMessage, ParsedMessage, Config], int | None]


@dataclass
class BatchResult:
    taken: int = 0
    tickets: int = 0
    failed: int = 0
    deferred: int = 0
    quarantined: int = 0

    def count(self, outcome: QueueState | None) -> None:
        if outcome == QueueState.DONE:
            self.tickets += 1
        elif outcome == QueueState.FAILED:
            self.failed += 1
        elif outcome == QueueState.QUARANTINED:
            self.quarantined += 1
        elif outcome == QueueState.QUEUED:
            self.deferred += 1

    def add(self, other: BatchResult) -> None:
        self.taken += other.taken
        self.tickets += other.tickets
        self.failed += other.failed
        self.deferred += other.deferred
        self.quarantined += other.quarantined


def _finding(scan: ScanResult) -> str:
    """The scanner's finding as the queue, quarantine and rejection log show it."""
    where = f" in {scan.filename}" if scan.filename else ""
    return f"{scan.reason}: {scan.signature or scan.detail}{where} ({scan.scanner})"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Batch:
    def __init__(
        self, engine: Engine, file_message: FileMessage, *, owner: str | None = None
    ) -> None:
        self.engine = engine
        self.file_message = file_message
        self.owner = owner or worker_id()

    async def run(self, config: Config) -> BatchResult:
        """Take what is due, up to ``batch.size``, and process it.

        Whatever happens to one entry stays with that entry. If the batch
        itself is interrupted (shutdown, the database gone), the entries not
        yet started go back to the queue due at once, without spending an
        attempt, so an interrupted batch can never be mistaken for a message
        that kills its worker.
        """
        claims = await asyncio.to_thread(self._claim, config)
        result = BatchResult(taken=len(claims))
        pending = list(claims)
        scanner_away: str | None = None
        try:
            while pending:
                if scanner_away is None:
                    try:
                        pending[0] = await asyncio.to_thread(self._start, pending[0], config)
                    except queue.LeaseLost:
                        pending.pop(0)
                        continue
                    try:
                        outcome = await self._handle(pending[0], config)
                    except ScannerUnavailable as exc:  # the entry waits; so do the others
                        scanner_away = f"temporary: {exc}"
                        outcome = await asyncio.to_thread(
                            self._fail, pending[0], config, scanner_away, temporary=True
                        )
                else:  # don't wait out the scanner's timeout once per message
                    outcome = await asyncio.to_thread(
                        self._fail, pending[0], config, scanner_away, temporary=True
                    )
                pending.pop(0)
                result.count(outcome)
        finally:
            if pending:
                await asyncio.shield(asyncio.to_thread(self._give_back, pending, config))
        return result

    async def _handle(self, claim: queue.Claim, config: Config) -> QueueState | None:
        """One started entry, to its end; raises only :class:`ScannerUnavailable`."""
        try:
            return await self._scan_then_process(claim, config)
        except ScannerUnavailable:
            raise
        except Exception as exc:  # outside filing: a scanner bug, the database away …
            log.exception("entry %d failed", claim.entry_id)
            error = f"{exc.__class__.__name__}: {exc}"[:2000]
            return await asyncio.to_thread(
                self._fail, claim, config, error, temporary=isinstance(classify(exc), TempFail)
            )

    def _start(self, claim: queue.Claim, config: Config) -> queue.Claim:
        with Session(self.engine) as session, session.begin():
            return queue.start(session, claim, lease_seconds=config.batch.lease_seconds)

    def _give_back(self, claims: list[queue.Claim], config: Config) -> None:
        """Entries of an interrupted batch go back unspent and due at once (best
        effort: the lease expiring does the same, later)."""
        for claim in claims:
            try:
                self._fail(
                    claim, config, "batch interrupted before this entry", temporary=True,
                    retry_after=0,
                )  # fmt: skip
            except Exception:
                log.warning("entry %d: left to its lease's expiry", claim.entry_id)
                return

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

    async def _scan_then_process(self, claim: queue.Claim, config: Config) -> QueueState | None:
        """Antivirus first: a finding never becomes a ticket; a scanner away means wait.

        Scanning and parsing happen before the filing transaction opens.
        """
        raw = await asyncio.to_thread(self._raw, claim)
        if raw is None:
            return await asyncio.to_thread(self._process, claim, config, None)
        scan = await scan_message(raw[0], config.antivirus)
        if not scan.passes:
            finding = _finding(scan)
            if not await asyncio.to_thread(self._overruled, claim, finding):
                return await asyncio.to_thread(self._refuse, claim, config, scan, finding)
        parsed = await asyncio.to_thread(
            parse_message, raw[0], mail_from=raw[1], limits=config.limits
        )
        return await asyncio.to_thread(self._process, claim, config, parsed)

    def _raw(self, claim: queue.Claim) -> tuple[bytes, str | None] | None:
        """The raw bytes and envelope sender, read outside any write transaction."""
        with Session(self.engine) as session:
            stored = session.get(StoredMessage, claim.message_id)
            if stored is None or stored.raw is None:
                return None
            return stored.raw, stored.mail_from

    def _overruled(self, claim: queue.Claim, finding: str) -> bool:
        """Whether an operator already released this message despite this very finding."""
        with Session(self.engine) as session:
            if quarantine.released_reason(session, claim.entry_id) != finding:
                return False
        log.info("entry %d: %s, released by an operator: filing it", claim.entry_id, finding)
        return True

    def _refuse(
        self, claim: queue.Claim, config: Config, scan: ScanResult, finding: str
    ) -> QueueState | None:
        """Quarantine or fail per ``antivirus.action``, with its rejection record."""
        try:
            with Session(self.engine) as session, session.begin():
                if config.antivirus.action == "quarantine":
                    queue.quarantine(session, claim, reason=finding)
                    quarantine.record_quarantined(session, claim.entry_id, by="batch")
                    state = QueueState.QUARANTINED
                else:
                    # A finding is final: no attempts left to retry it with.
                    state = queue.fail(session, claim, error=finding, max_attempts=0)
                stored = session.get(StoredMessage, claim.message_id)
                if stored is not None:
                    rejection = record_batch_rejection(
                        session,
                        stored,
                        mailbox=claim.mailbox,
                        reason=scan.reason,
                        outcome=f"{state.value}: {finding}",
                    )
                    events.rejected(session, config, rejection)
                if state == QueueState.QUARANTINED:
                    events.quarantined(session, config, claim.entry_id)
        except queue.LeaseLost:
            return None
        log.warning("entry %d: %s → %s", claim.entry_id, finding, state.value)
        return state

    @staticmethod
    def _record_failure(session: Session, claim: queue.Claim, config: Config, error: str) -> None:
        """Given up on: no ticket unless an operator retries it, so it is a batch refusal."""
        stored = session.get(StoredMessage, claim.message_id)
        if stored is not None:
            rejection = record_batch_rejection(
                session, stored, mailbox=claim.mailbox, reason="processing_failed",
                outcome=f"failed after {claim.attempts} attempt(s): {error}",
            )  # fmt: skip
            events.rejected(session, config, rejection)

    def _process(
        self, claim: queue.Claim, config: Config, parsed: ParsedMessage | None
    ) -> QueueState | None:
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                stored = session.get(StoredMessage, claim.message_id)
                if stored is None or stored.raw is None or parsed is None:
                    raise LookupError("the raw message is gone (purged?)")
                ticket_message_id = self.file_message(session, claim, stored, parsed, config)
                queue.finish(session, claim, ticket_message_id=ticket_message_id)
            return QueueState.DONE
        except queue.LeaseLost:
            log.warning("entry %d: lease lost; another worker owns it now", claim.entry_id)
            return None
        except Exception as exc:
            temporary = isinstance(classify(exc), TempFail)  # ours: spends no attempt
            if not temporary:
                log.exception("entry %d failed", claim.entry_id)
            prefix = "temporary: " if temporary else f"{exc.__class__.__name__}: "
            return self._fail(claim, config, f"{prefix}{exc}"[:2000], temporary=temporary)

    def _fail(
        self,
        claim: queue.Claim,
        config: Config,
        error: str,
        *,
        temporary: bool = False,
        retry_after: float | None = None,
    ) -> QueueState | None:
        if retry_after is None:
            retry_after = config.batch.interval if temporary else 0
        try:
            with Session(self.engine) as session, session.begin():
                state = queue.fail(
                    session,
                    claim,
                    error=error,
                    max_attempts=config.batch.max_attempts,
                    temporary=temporary,
                    retry_after=retry_after,
                )
                if state == QueueState.FAILED:
                    self._record_failure(session, claim, config, error)
        except queue.LeaseLost:
            return None
        log.warning("entry %d: %s (%s)", claim.entry_id, error, state.value)
        return state
