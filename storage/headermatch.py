"""Which message a pasted header block is: "the original email with intact headers".

Support teams ask customers for the headers of the mail that went missing;
those headers are the customer's copy, so the Message-ID is usually ours to
find. A forwarder that rewrote the ID (some gateways do) leaves the author,
the date and the subject, which together still point at one message. The
rule that matched is part of the answer: an operator must know whether the
match is certain (the ID) or a likeness (sender, date and subject).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.models import Rejection, StoredMessage, TicketMessage, aware
from storage.rejections import bare_message_id, like_literal

# A Date header is the author's clock; mail arrives after it, sometimes a day later.
BEFORE = timedelta(hours=2)
AFTER = timedelta(days=3)
MAX_CANDIDATES = 200
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Clues:
    """What a header block tells about its message (already parsed by the caller)."""

    message_id: str | None
    sender: str | None  # the author's address
    date: datetime | None
    subject: str | None


@dataclass(frozen=True)
class HeaderMatch:
    rule: str | None  # "message-id", "sender+date+subject" or None
    message_id: str | None  # what to trace: a Message-ID, or our trace id
    candidates: int  # how many messages the likeness rule found (the nearest is taken)


def _subject_key(subject: str | None) -> str:
    return _SPACE.sub(" ", subject or "").strip().casefold()


def _known_id(session: Session, bare: str) -> bool:
    stored = select(col(StoredMessage.id)).where(col(StoredMessage.header_message_id) == bare)
    refused = select(col(Rejection.id)).where(col(Rejection.message_id) == bare)
    filed = select(col(TicketMessage.id)).where(
        col(TicketMessage.message_id).in_([bare, f"<{bare}>"])
    )
    return any(session.execute(q.limit(1)).first() is not None for q in (stored, refused, filed))


def match_headers(session: Session, clues: Clues) -> HeaderMatch:
    """The message the clues describe: by Message-ID first, then by sender, date and subject."""
    if clues.message_id and _known_id(session, bare_message_id(clues.message_id)):
        return HeaderMatch("message-id", bare_message_id(clues.message_id), 1)
    if not (clues.sender and clues.date and clues.subject):
        return HeaderMatch(None, None, 0)
    sender = like_literal(clues.sender.strip().lower())
    when = aware(clues.date)
    wanted = _subject_key(clues.subject)
    found: list[tuple[timedelta, str]] = []
    stored = session.execute(
        select(
            col(StoredMessage.header_message_id),
            col(StoredMessage.trace_id),
            col(StoredMessage.subject),
            col(StoredMessage.received_at),
        )
        .where(
            func.lower(func.coalesce(col(StoredMessage.header_from), "")).like(
                f"%{sender}%", escape="\\"
            ),
            col(StoredMessage.received_at).between(when - BEFORE, when + AFTER),
        )
        .limit(MAX_CANDIDATES)
    ).all()
    refused = session.execute(
        select(
            col(Rejection.message_id),
            col(Rejection.trace_id),
            col(Rejection.subject),
            col(Rejection.created_at),
        )
        .where(
            or_(
                func.lower(col(Rejection.mail_from)) == clues.sender.strip().lower(),
                func.lower(func.coalesce(col(Rejection.header_from), "")).like(
                    f"%{sender}%", escape="\\"
                ),
            ),
            col(Rejection.created_at).between(when - BEFORE, when + AFTER),
        )
        .limit(MAX_CANDIDATES)
    ).all()
    for message_id, trace_id, subject, at in [*stored, *refused]:
        key = _subject_key(subject)
        # A gateway may tag the subject ("[EXT] …"): containment either way counts.
        ref = message_id or trace_id
        if key and (wanted in key or key in wanted) and ref:
            found.append((abs(aware(at) - when), ref))
    if not found:
        return HeaderMatch(None, None, 0)
    found.sort()
    return HeaderMatch("sender+date+subject", found[0][1], len({ref for _, ref in found}))


def as_dict(found: HeaderMatch) -> dict[str, Any]:
    return {"rule": found.rule, "message_id": found.message_id, "candidates": found.candidates}
