"""How a queue entry ends when the batch makes no ticket message of it.

Failed (attempts left or not), deferred, quarantined or given back: each in
a transaction of its own, fenced by the entry's lease token, with the
rejection record and the event an operator and the helpdesk see for it.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ingest.channels import emit as events
from ingest.smtp.refusals import record_batch_rejection
from policy.antivirus import ScanResult
from policy.config.model import Config
from storage import mailqueue as queue
from storage import quarantine
from storage.lease import LeaseLost
from storage.models import QueueState, StoredMessage

log = logging.getLogger("mail.batch")


def finding_of(scan: ScanResult) -> str:
    """The scanner's finding as the queue, quarantine and rejection log show it."""
    where = f" in {scan.filename}" if scan.filename else ""
    return f"{scan.reason}: {scan.signature or scan.detail}{where} ({scan.scanner})"


class Outcomes:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def give_back(self, claims: list[queue.Claim], config: Config) -> None:
        """Entries of an interrupted batch go back unspent and due at once (best
        effort: the lease expiring does the same, later)."""
        for claim in claims:
            try:
                self.fail(
                    claim, config, "batch interrupted before this entry", temporary=True,
                    retry_after=0,
                )  # fmt: skip
            except Exception:
                log.warning("entry %d: left to its lease's expiry", claim.entry_id)
                return

    def overruled(self, claim: queue.Claim, finding: str) -> bool:
        """Whether an operator already released this message despite this very finding."""
        with Session(self.engine) as session:
            if quarantine.released_reason(session, claim.entry_id) != finding:
                return False
        log.info("entry %d: %s, released by an operator: filing it", claim.entry_id, finding)
        return True

    def refuse(
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
        except LeaseLost:
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

    def fail(
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
        except LeaseLost:
            return None
        log.warning("entry %d: %s (%s)", claim.entry_id, error, state.value)
        return state
