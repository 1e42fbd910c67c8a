"""Every refusal, twice: a database record for search, a log line for grep.

The log line keeps Postfix's shape because fail2ban filters and operators'
muscle memory already speak it::

    reject: RCPT from mail.example.net[203.0.113.5]: 550 5.1.1 <x@y>: …; from=<a@b>
    to=<x@y> proto=ESMTP helo=<mail.example.net> msgid=<…> reason=unknown_mailbox

Reason codes are stable (documented in the README); the database record
additionally keeps the header block so that "where is my mail?" can be
answered for the retention period.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from ingest.ops.metrics import MESSAGES_REJECTED
from policy.message.headers import HeaderSummary, one_line, summarize
from storage.intake import GroupCommitWriter
from storage.models import Rejection, StoredMessage

log = logging.getLogger("mail.reject")


@dataclass(frozen=True)
class Peer:
    """Who is talking to us, as far as the rejection log is concerned."""

    ip: str
    name: str | None
    helo: str
    proto: str


def log_line(rejection: Rejection) -> str:
    host = one_line(rejection.client_name or "unknown")
    parts = [
        f"reject: {rejection.stage} from {host}[{one_line(rejection.client_ip)}]: "
        f"{one_line(rejection.reply)};",
        f"from=<{one_line(rejection.mail_from)}>",
    ]
    parts += [f"to=<{one_line(rcpt)}>" for rcpt in rejection.rcpt_to] or ["to=<>"]
    parts += [f"proto={rejection.proto}", f"helo=<{one_line(rejection.helo)}>"]
    if rejection.message_id:
        parts.append(f"msgid=<{one_line(rejection.message_id)}>")
    parts.append(f"reason={rejection.reason}")
    return " ".join(parts)


class RejectionLog:
    def __init__(self, writer: GroupCommitWriter) -> None:
        self._writer = writer

    def record(
        self,
        *,
        stage: str,
        reply: str,
        reason: str,
        peer: Peer,
        mail_from: str,
        rcpt_to: Sequence[str],
        mailbox: str | None = None,
        headers: HeaderSummary | None = None,
        authentication: dict[str, Any] | None = None,
    ) -> Rejection:
        rejection = Rejection(
            stage=stage,
            reason=reason,
            reply=reply,
            client_ip=peer.ip,
            client_name=peer.name,
            helo=one_line(peer.helo, 255),
            proto=peer.proto,
            mail_from=one_line(mail_from, 512),
            rcpt_to=[one_line(r, 512) for r in rcpt_to],
            mailbox=mailbox,
            header_from=headers.header_from if headers else None,
            subject=headers.subject if headers else None,
            message_id=headers.message_id if headers else None,
            headers=headers.block if headers else None,
            authentication=authentication or {},
        )
        _announce(rejection)
        self._writer.submit_nowait(rejection, self._lost)
        return rejection

    @staticmethod
    def _lost(error: BaseException) -> None:
        log.error("rejection record not stored: %s", error.__class__.__name__)


def _announce(rejection: Rejection) -> None:
    log.info(log_line(rejection), extra={"reason": rejection.reason, "stage": rejection.stage})
    MESSAGES_REJECTED.labels(rejection.stage, rejection.reason).inc()


def record_batch_rejection(
    session: Session,
    stored: StoredMessage,
    *,
    mailbox: str,
    reason: str,
    outcome: str,
    authentication: dict[str, Any] | None = None,
) -> Rejection:
    """A refusal decided in the batch (virus, processing failed), in the caller's transaction.

    ``outcome`` takes the place of the SMTP reply (``quarantined: virus
    EICAR-Test-File``); the record commits or rolls back with the queue
    transition it explains, so the log never claims what did not happen.
    """
    headers = summarize(stored.raw) if stored.raw is not None else None
    rejection = Rejection(
        stage="BATCH",
        reason=reason,
        reply=one_line(outcome, 2000),
        client_ip=stored.client_ip,
        client_name=stored.client_name,
        helo=stored.helo,
        proto=stored.proto,
        mail_from=stored.mail_from,
        rcpt_to=[mailbox],
        mailbox=mailbox,
        header_from=headers.header_from if headers else stored.header_from,
        subject=headers.subject if headers else stored.subject,
        message_id=stored.header_message_id,
        headers=headers.block if headers else None,
        authentication=authentication or {},
        trace_id=stored.trace_id,
    )
    session.add(rejection)
    event.listen(session, "after_commit", lambda _session: _announce(rejection), once=True)
    return rejection
