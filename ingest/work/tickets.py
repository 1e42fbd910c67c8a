"""File one queued message onto a ticket.

Runs inside the batch's transaction (see ``ingest/work/batch.py``): whatever it
writes commits together with the queue entry's ``done``, or not at all. The
batch has parsed the message (:mod:`policy.message.mime`) before that transaction
began, so a slow message holds no write lock; what runs here is recognise
what must not become a ticket → thread (:mod:`ingest.work.threads`) → store the
ticket message, its attachments and its Message-ID.

Not every message becomes a new ticket message:

* the same mail delivered again (same mailbox, Message-ID and content
  digest) resolves to the ticket message it already made; the same
  Message-ID with other content is a different message and is kept;
* our own mail coming back (a Message-ID we sent, our ``X-Loop`` marker, a
  Message-ID in our server's domain) is dropped from ticketing — its raw
  bytes stay in the store;
* a bounce joins the ticket of the message it reports on, flagged, with the
  delivery status in ``details["bounce"]``; when that message is a reply we
  sent, the reply's delivery state becomes failed with the bounce's status
  (:func:`storage.outbox.mark_reply_bounced`); a bounce of mail we do not know
  opens nothing — unless a postmaster-like From is all that makes it look like
  one, since postmasters are people who write to helpdesks too. A message
  whose From names no address at all (``<>``, ``MAILER-DAEMON``) is always
  such a bounce;
* a message without a trustworthy author (:mod:`policy.message.author`; the listener
  refuses those when it verifies senders) makes no ticket and is recorded as
  a batch refusal: the requester is the author DMARC judged or nobody, never
  the envelope sender.

Why an entry made no new ticket message is recorded with it
(:func:`storage.mailqueue.note_outcomes`), for ``trace``.

A reply whose original still waits in the queue (several workers can take
them out of order) is deferred with a :class:`~policy.errors.TempFail` until
the original is filed, rather than opening a ticket of its own.

Auto-replies are filed like any message, flagged ``auto_reply`` so that
nothing ever answers them automatically.

A new ticket message is also where the helpdesk hears of it: a customer
writing again (not an auto-reply, not a bounce) reopens a pending or closed
ticket, and the ``ticket.created`` / ``ticket.message_added`` event
(:mod:`ingest.channels.emit`) is queued in the same transaction. So every
batch, whoever builds it, files the same way.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from ingest.channels import emit as events
from ingest.smtp.refusals import record_batch_rejection
from ingest.work.lookups import GroupLookups
from ingest.work.threads import ThreadMatch, find_ticket
from policy.config.model import Config
from policy.errors import TempFail
from policy.message.autoreply import is_own_mail
from policy.message.parsed import ParsedMessage
from storage.lease import table_of
from storage.mailqueue import Claim
from storage.models import StoredMessage, Ticket, TicketStatus, utcnow
from storage.outbox import mark_reply_bounced

log = logging.getLogger("mail.tickets")

# Read and touched with Core statements built once and given their values as
# parameters; what the batch writes waits in the group's rows
# (:mod:`ingest.work.grouprows`), written one statement per table.
_TICKETS = table_of(Ticket)
_STATUS = select(_TICKETS.c.status).where(_TICKETS.c.id == bindparam("b_id"))
_TOUCH = update(_TICKETS).where(_TICKETS.c.id == bindparam("b_id"))  # SET: the parameters
# A customer writing again means the ticket needs an agent again.
_REOPENED_BY_CUSTOMER = (TicketStatus.CLOSED, TicketStatus.PENDING)


def file_message(
    session: Session,
    claim: Claim,
    stored: StoredMessage,
    parsed: ParsedMessage,
    config: Config,
    lookups: GroupLookups,
) -> int | None:
    """File ``parsed`` (the parse of ``stored``); the ticket message's id, or None.

    ``lookups`` holds what the database said for the whole group this message
    is filed with (:meth:`GroupLookups.fetch`, run in the same transaction).
    """
    assert stored.id is not None
    mailbox = claim.mailbox
    duplicate = lookups.duplicate(mailbox, parsed.message_id, parsed.content_digest)
    if duplicate is not None:
        duplicate = lookups.rows.message_id(session, duplicate)
        return _no_new_message(
            lookups, claim, f"duplicate of ticket message {duplicate}", duplicate
        )
    if _is_own(lookups, mailbox, parsed, config):
        return _no_new_message(lookups, claim, f"our own mail {parsed.message_id} came back")
    sender = parsed.from_.address if parsed.from_ else None
    null_author = parsed.author_problem == "null_author"
    original = (
        lookups.known_message(mailbox, parsed.bounce.original_message_ids)
        if parsed.bounce.is_bounce or null_author
        else None
    )
    if original is not None:
        if original.direction == "out" and mark_reply_bounced(
            session, original.message_id, _bounce_reason(parsed)
        ):
            # Only the bounce that turned the reply failed says so to the helpdesk,
            # with its ticket as the group has filed it so far.
            lookups.rows.flush(session)
            events.reply_bounced(session, config, original.message_id)
        match: ThreadMatch | None = ThreadMatch(original.ticket_id, "bounce", original.message_id)
    elif parsed.bounce.is_certain or null_author:
        return _no_new_message(lookups, claim, "a bounce of mail we never sent")
    elif sender is None:
        _no_author(session, lookups, claim, stored, config, parsed.author_problem or "from_missing")
        return None
    else:
        waiting_for = lookups.earlier_unfiled(mailbox, claim.entry_id, parsed.reply_ids)
        if waiting_for is not None:
            raise TempFail(f"answers queue entry {waiting_for}, which is not filed yet")
        match = find_ticket(session, lookups, mailbox, parsed.reply_ids, parsed.subject, sender)
    ticket_id, new = _ticket(session, lookups, mailbox, match, parsed, sender or "")
    ticket_message_id = _store(lookups, claim, stored, ticket_id, parsed, match)
    lookups.filed(claim, parsed, ticket_id, ticket_message_id)
    if events.wants_filed(config, mailbox, created=new):  # the snapshot reads the rows back
        rows = lookups.rows
        events.message_filed(
            session, config, mailbox, rows.ticket_id(session, ticket_id),
            rows.message_id(session, ticket_message_id), created=new,
        )  # fmt: skip
    return ticket_message_id


def _no_new_message(
    lookups: GroupLookups, claim: Claim, why: str, ticket_message_id: int | None = None
) -> int | None:
    log.info("entry %d: %s; no new ticket message", claim.entry_id, why)
    lookups.rows.notes.append((claim, why))
    return ticket_message_id


def _no_author(
    session: Session,
    lookups: GroupLookups,
    claim: Claim,
    stored: StoredMessage,
    config: Config,
    problem: str,
) -> None:
    """No ticket for a message without a trustworthy author, and a record saying so."""
    why = f"no trustworthy author ({problem})"
    rejection = record_batch_rejection(
        session, stored, mailbox=claim.mailbox, reason="from_malformed", outcome=f"done: {why}"
    )
    events.rejected(session, config, rejection)
    _no_new_message(lookups, claim, why)


def _bounce_reason(parsed: ParsedMessage) -> str:
    bounce = parsed.bounce
    return " ".join(filter(None, [bounce.status, bounce.diagnostic])) or "; ".join(bounce.reasons)


def _is_own(lookups: GroupLookups, mailbox: str, parsed: ParsedMessage, config: Config) -> bool:
    if lookups.known_message(mailbox, [parsed.message_id], direction="out") is not None:
        return True
    return is_own_mail(parsed.headers, parsed.message_id, [mailbox], [config.server.hostname])


def _ticket(
    session: Session,
    lookups: GroupLookups,
    mailbox: str,
    match: ThreadMatch | None,
    parsed: ParsedMessage,
    requester: str,
) -> tuple[int, bool]:
    """The id of the ticket the message goes to, touched (and reopened if need be)
    or made now, and whether made. The id is the one the group knows it by:
    provisional for a ticket the group opened (:mod:`ingest.work.grouprows`),
    even once written, so that the group's answers keep meeting it."""
    now = utcnow()
    if match is not None:
        unwritten = lookups.rows.unwritten_ticket(match.ticket_id)
        if unwritten is not None:
            unwritten["updated_at"] = now  # opened moments ago in this group: open already
            return match.ticket_id, False
        given = lookups.rows.ticket_id(session, match.ticket_id)
        status = session.execute(_STATUS, {"b_id": given}).scalar_one_or_none()
        if status is not None:
            changes: dict[str, object] = {"b_id": given, "updated_at": now}
            if status in _REOPENED_BY_CUSTOMER and not _automatic(parsed):
                log.info("ticket %d: %s → open (the customer wrote again)", given, status)
                changes["status"] = TicketStatus.OPEN
            session.execute(_TOUCH, changes)
            return match.ticket_id, False
    ticket_id = lookups.rows.new_ticket(
        {
            "mailbox": mailbox,
            "subject": parsed.subject,
            "requester": requester[:512],
            "status": TicketStatus.OPEN,
            "created_at": now,
            "updated_at": now,
        }
    )
    return ticket_id, True


def _automatic(parsed: ParsedMessage) -> bool:
    """An auto-reply or a bounce: filed, flagged, and never taken as the customer writing."""
    return parsed.is_auto_reply or parsed.bounce.is_bounce


def _details(parsed: ParsedMessage, match: ThreadMatch | None) -> dict[str, Any]:
    """The evidence behind the flags, for agents and for reprocessing decisions."""
    details: dict[str, Any] = {
        "content_digest": parsed.content_digest,
        "message_id_derived": parsed.message_id_derived,
        "in_reply_to": parsed.in_reply_to,
        "references": list(parsed.references),
        "reply_to": [a.address for a in parsed.reply_to],
        "charset_repairs": list(parsed.charset_repairs),
        "auto_reply_reasons": list(parsed.auto_reply.reasons),
        "bulk": parsed.auto_reply.is_bulk,
        "list_id": parsed.auto_reply.list_id,
        "remote_images": list(parsed.remote_images),
        "defects": list(parsed.defects),
        "thread": {"rule": match.rule, "evidence": match.evidence} if match else None,
    }
    bounce = parsed.bounce
    if bounce.is_bounce:
        details["bounce"] = {
            "reasons": list(bounce.reasons),
            "original_message_ids": list(bounce.original_message_ids),
            "status": bounce.status,
            "diagnostic": bounce.diagnostic,
            "recipients": [r.final_recipient for r in bounce.recipients],
        }
    return details


def _store(
    lookups: GroupLookups,
    claim: Claim,
    stored: StoredMessage,
    ticket_id: int,
    parsed: ParsedMessage,
    match: ThreadMatch | None,
) -> int:
    assert stored.id is not None
    now = utcnow()
    message_id = lookups.rows.new_message(
        {
            "ticket_id": ticket_id,
            "stored_message_id": stored.id,
            "queue_entry_id": claim.entry_id,
            "message_id": parsed.message_id,
            "digest": parsed.content_digest,
            "from_addr": (parsed.from_.address if parsed.from_ else "")[:998],
            "from_name": (parsed.from_.name if parsed.from_ else "")[:998],
            "to": [a.address for a in parsed.to],
            "cc": [a.address for a in parsed.cc],
            # In UTC: SQLite keeps no zone, and every stored time is UTC.
            "date": parsed.date.astimezone(UTC) if parsed.date else None,
            "subject": parsed.subject,
            "text": parsed.text,
            "html": parsed.html,
            "auto_reply": _automatic(parsed),
            "charset_repaired": parsed.charset_repaired,
            "forwarding": stored.forwarding,
            "authentication_results": stored.authentication_results,
            "details": _details(parsed, match),
            "created_at": now,
        }
    )
    lookups.rows.attachments.extend(
        {
            "ticket_message_id": message_id,
            "filename": part.filename,
            "content_type": part.content_type[:255],
            "size": part.size,
            "sha256": part.sha256,
            "inline": part.inline,
            "content_id": part.content_id[:998] if part.content_id else None,
            "data": part.data,
        }
        for part in parsed.attachments
    )
    if not lookups.recorded(claim.mailbox, parsed.message_id, ticket_id):
        lookups.rows.known.append(
            {
                "mailbox": claim.mailbox,
                "message_id": parsed.message_id,
                "ticket_id": ticket_id,
                "direction": "in",
                "created_at": now,
            }
        )
    return message_id
