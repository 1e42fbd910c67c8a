"""Replies from queue to the customer: compose once, then send until it is decided.

``queue_reply`` composes the reply in the same transaction that stores it and
records its Message-ID for threading, so the customer's answer finds the
ticket even before the reply has left. The worker (``send_due_replies``,
looped by :class:`Outbox` inside ``firstline serve``) claims due replies like
the batch claims mail, sends each through its mailbox's relay, and records
the outcome with the claim's token: ``sent`` with the server's answer;
``retrying`` with exponential backoff for temporary failures (4xx, timeouts,
connection refused); ``held`` for a refused login (password, OAuth client,
token), until the mailbox's credentials change or an operator retries;
``failed`` at once for other permanent ones (5xx, TLS) — classified by
:mod:`ingest.outbound.smtpfail`, as the send test shows them. OAuth 2.0 access tokens
come from :class:`ingest.outbound.oauth.Tokens`, one cache for the whole process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from sqlmodel import col

from ingest.channels import emit as events
from ingest.ops.metrics import OUTBOUND
from ingest.outbound.compose import (
    Draft,
    InvalidReply,
    Sender,
    compose,
    new_message_id,
    recipients,
    to_bytes,
)
from ingest.outbound.oauth import Tokens
from ingest.outbound.relay import Delivered, deliver
from ingest.outbound.smtpfail import Kind, SmtpFailure, Step
from ingest.work.runner import Runner
from policy.config.model import Config
from policy.errors import PermFail
from storage import lease, outbox
from storage.lease import LeaseLost
from storage.models import KnownMessageId, Reply, ReplyState, Ticket, TicketMessage, utcnow

log = logging.getLogger("mail.outbound")

# References grows with every message; a long thread keeps its first and its
# latest IDs, which is what mail clients thread by.
_MAX_REFERENCES = 20


@dataclass(frozen=True)
class QueuedReply:
    reply_id: int
    message_id: str
    recipients: tuple[str, ...]


@dataclass
class OutboxResult:
    taken: int = 0
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    held: int = 0


def _thread(session: Session, ticket_id: int) -> tuple[list[str], str | None]:
    """The conversation's Message-IDs in order, and the customer's latest one.

    Auto-replies and bounces on the ticket are left out: the customer's mail
    client never saw them, and answering "in reply to" an out-of-office
    notice threads the answer under the wrong message.
    """
    automatic = select(col(TicketMessage.message_id)).where(
        col(TicketMessage.ticket_id) == ticket_id, col(TicketMessage.auto_reply)
    )
    known = session.scalars(
        select(KnownMessageId)
        .where(
            col(KnownMessageId.ticket_id) == ticket_id,
            col(KnownMessageId.message_id).not_in(automatic),
        )
        .order_by(col(KnownMessageId.id))
    ).all()
    ids = list(dict.fromkeys(k.message_id for k in known))
    if len(ids) > _MAX_REFERENCES:
        ids = [ids[0], *ids[-(_MAX_REFERENCES - 1) :]]
    inbound = [k.message_id for k in known if k.direction == "in"]
    return ids, inbound[-1] if inbound else None


def queue_reply(
    session: Session,
    config: Config,
    ticket_id: int,
    *,
    text: str,
    html: str | None = None,
    cc: Sequence[str] = (),
    now: datetime | None = None,
) -> QueuedReply:
    """Compose and queue a reply in the caller's transaction, or raise :class:`InvalidReply`."""
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise InvalidReply(f"there is no ticket {ticket_id}")
    mailbox = config.mailbox(ticket.mailbox)
    if mailbox is None:
        raise InvalidReply(f"ticket {ticket_id}'s mailbox {ticket.mailbox} is no longer configured")
    if mailbox.smtp is None:
        raise InvalidReply(f"mailbox {mailbox.address} has no smtp section to send replies through")
    references, answered = _thread(session, ticket_id)
    reply = Reply(ticket_id=ticket_id, mailbox=ticket.mailbox, message_id="", raw=b"")
    session.add(reply)
    session.flush()  # the reply's id goes into its Message-ID
    assert reply.id is not None
    message_id = new_message_id(ticket_id, reply.id, config.server.hostname)
    draft = Draft(
        ticket_id=ticket_id,
        message_id=message_id,
        subject=ticket.subject,
        to=(ticket.requester,),
        cc=tuple(cc),
        text=text,
        html=html,
        references=tuple(references),
        in_reply_to=answered,
    )
    message = compose(draft, Sender(mailbox.name, mailbox.address), now or utcnow())
    reply.message_id = message_id
    reply.raw = to_bytes(message)
    reply.recipients = list(recipients(message))
    session.add(
        KnownMessageId(
            mailbox=ticket.mailbox, message_id=message_id, ticket_id=ticket_id, direction="out"
        )
    )
    session.flush()
    return QueuedReply(reply.id, message_id, tuple(reply.recipients))


@dataclass(frozen=True)
class _Failed:
    """How an attempt failed, as the outbox records it."""

    error: str
    error_class: str
    temporary: bool
    diagnosis: dict[str, Any] | None = None
    # A refused login: the digest of the credentials it was refused with.
    hold_for: str | None = None


async def _attempt(
    engine: Engine,
    config: Config,
    claim: outbox.ReplyClaim,
    tokens: Tokens | None,
    now: datetime | None,
) -> Delivered | _Failed:
    mailbox = config.mailbox(claim.mailbox)
    if mailbox is None or mailbox.smtp is None:
        reason = f"mailbox {claim.mailbox} is no longer configured for sending"
        return _Failed(reason, "configuration", temporary=False)
    smtp = mailbox.smtp
    token = None
    if smtp.oauth:
        token = (tokens or Tokens.shared(engine)).source(mailbox.address, smtp, now)
    try:
        return await deliver(
            mailbox, smtp, config.server.hostname, claim.raw, claim.recipients, token=token
        )
    except SmtpFailure as exc:
        d = exc.diagnosis
        refused = d.kind is Kind.AUTHENTICATION and d.step in (Step.TOKEN, Step.LOGIN)
        return _Failed(
            str(d),
            str(d.kind),
            temporary=d.temporary,
            diagnosis=d.as_dict(),
            hold_for=smtp.credentials() if refused else None,
        )
    except PermFail as exc:  # a DKIM key that cannot be used: an admin must act
        return _Failed(str(exc), "configuration", temporary=False)
    except Exception as exc:  # a bug must not stop the other replies; try again later
        log.exception("reply %d: unexpected failure", claim.reply_id)
        return _Failed(f"{exc.__class__.__name__}: {exc}", "internal", temporary=True)


def _record(
    engine: Engine,
    config: Config,
    claim: outbox.ReplyClaim,
    result: Delivered | _Failed,
    now: datetime | None,
) -> ReplyState | None:
    try:
        with Session(engine) as session, session.begin():
            if isinstance(result, Delivered):
                outbox.mark_sent(
                    session, claim, server_reply=result.reply, queue_id=result.queue_id
                )
                events.reply_settled(session, config, claim.reply_id)
                return ReplyState.SENT
            settings = config.outbox
            state = outbox.mark_attempt_failed(
                session,
                claim,
                error=result.error,
                error_class=result.error_class,
                diagnosis=result.diagnosis,
                temporary=result.temporary,
                max_attempts=settings.max_attempts,
                retry_after=lease.retry_delay(
                    claim.attempts, settings.retry_seconds, settings.max_retry_seconds
                ),
                now=now,
                hold_for=result.hold_for,
            )
            events.reply_settled(session, config, claim.reply_id)  # if it failed for good
            return state
    except LeaseLost:
        log.warning("reply %d: lease lost while sending; another worker owns it", claim.reply_id)
        return None


def _claim(
    engine: Engine, config: Config, owner: str, now: datetime | None
) -> list[outbox.ReplyClaim]:
    with Session(engine) as session, session.begin():
        return outbox.claim(
            session,
            owner=owner,
            limit=config.batch.size,
            lease_seconds=config.outbox.lease_seconds,
            max_attempts=config.outbox.max_attempts,
            now=now,
            on_abandoned=lambda reply_id: events.reply_settled(session, config, reply_id),
        )


def _renew(engine: Engine, config: Config, claim: outbox.ReplyClaim) -> None:
    with Session(engine) as session, session.begin():
        outbox.renew(session, claim, lease_seconds=config.outbox.lease_seconds)


async def _send(
    engine: Engine,
    config: Config,
    claim: outbox.ReplyClaim,
    now: datetime | None,
    tokens: Tokens | None = None,
) -> ReplyState | None:
    try:
        await asyncio.to_thread(_renew, engine, config, claim)
    except LeaseLost:
        log.warning("reply %d: lease lost before sending; another worker owns it", claim.reply_id)
        return None
    outcome = await _attempt(engine, config, claim, tokens, now)
    state = await asyncio.to_thread(_record, engine, config, claim, outcome, now)
    if state is not None:
        OUTBOUND.labels(state.value).inc()
    if isinstance(outcome, Delivered):
        log.info("reply %d (ticket %d) sent: %s", claim.reply_id, claim.ticket_id, outcome.reply)
    else:
        log.warning(
            "reply %d (ticket %d) attempt %d: %s → %s",
            claim.reply_id, claim.ticket_id, claim.attempts, outcome.error,
            state.value if state else "lease lost",
        )  # fmt: skip
    return state


def _release(engine: Engine, config: Config, now: datetime | None) -> None:
    """Requeue held replies of mailboxes whose credentials changed since they were refused."""
    with Session(engine) as session, session.begin():
        for mailbox in config.mailboxes:
            if mailbox.smtp is None:
                continue
            released = outbox.release_held(
                session, mailbox.address, mailbox.smtp.credentials(), now
            )
            if released:
                log.info(
                    "%s: credentials changed; %d held repl%s queued again",
                    mailbox.address, len(released), "y" if len(released) == 1 else "ies",
                )  # fmt: skip


async def send_due_replies(
    engine: Engine,
    config: Config,
    *,
    owner: str,
    now: datetime | None = None,
    tokens: Tokens | None = None,
) -> OutboxResult:
    """Send every reply that is due (up to ``batch.size``) and record each outcome.

    Mailboxes are served side by side, each one's replies in order: a relay
    that hangs until its timeout delays only its own mailbox.
    """
    await asyncio.to_thread(_release, engine, config, now)
    claims = await asyncio.to_thread(_claim, engine, config, owner, now)
    by_mailbox: dict[str, list[outbox.ReplyClaim]] = {}
    for claim in claims:
        by_mailbox.setdefault(claim.mailbox, []).append(claim)

    async def in_order(group: list[outbox.ReplyClaim]) -> list[ReplyState | None]:
        return [await _send(engine, config, claim, now, tokens) for claim in group]

    states = [
        state
        for group in await asyncio.gather(*(in_order(g) for g in by_mailbox.values()))
        for state in group
    ]
    return OutboxResult(
        taken=len(claims),
        sent=states.count(ReplyState.SENT),
        retrying=states.count(ReplyState.RETRYING),
        failed=states.count(ReplyState.FAILED),
        held=states.count(ReplyState.HELD),
    )


class Outbox(Runner):
    """Sends due replies every ``outbox.interval`` seconds, for ``firstline serve``."""

    name = "outbox"

    def __init__(self, current: Callable[[], Config], engine: Engine, owner: str) -> None:
        super().__init__()
        self.current = current
        self.engine = engine
        self.owner = owner

    def interval(self) -> float:
        return self.current().outbox.interval

    async def handle_once(self) -> bool:
        config = self.current()
        result = await send_due_replies(self.engine, config, owner=self.owner)
        return result.taken >= config.batch.size  # more is waiting

    def handle_error(self, error: Exception) -> None:
        log.error("outbox run failed; retrying in %gs", self.delay(), exc_info=error)
