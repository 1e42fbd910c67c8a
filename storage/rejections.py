"""Searching the rejection log: the CLI's ``rejections`` and the HTTP API share this.

Operators arrive with what a customer told them — an address, a domain, a
Message-ID, "yesterday afternoon" — so every filter is optional and they
combine. Addresses are compared case-insensitively; a sender given without
``@`` is a domain and matches the envelope sender or the header From in that
domain. Message-IDs are stored without angle brackets, and accepted with or
without them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, func, or_, select
from sqlalchemy.orm import Session
from sqlmodel import col

from policy.message.ids import shown_message_id
from policy.verify.verdict import original_sender
from storage.documents import RejectionOut
from storage.models import Rejection, aware

_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``24h``, ``30m``, ``7d``, ``2w`` (that long ago) or an ISO date/time (UTC if no zone).

    Raises :class:`ValueError` with a message fit for the command line.
    """
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        try:
            return now - timedelta(**{_UNITS[unit]: amount})
        except OverflowError:
            raise ValueError(f"{text!r} reaches back before the year 1") from None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 24h, 7d) nor a date (2026-11-24 or "
            "2026-11-24T14:05)"
        ) from None
    return aware(value)


# The stable reason codes of docs/operators.md (tests/test_rejections_follow.py
# holds the two lists together): a filter on anything else can match nothing.
REASON_CODES = (
    "unknown_mailbox",
    "alias_not_supported",
    "relay_denied",
    "too_many_recipients",
    "policy_split",
    "insufficient_storage",
    "message_too_big",
    "invalid_helo",
    "invalid_sender",
    "invalid_recipient",
    "too_many_header_fields",
    "header_field_too_large",
    "header_too_large",
    "too_many_addresses",
    "mime_too_deep",
    "too_many_mime_parts",
    "dmarc_reject",
    "manual_forward",
    "from_malformed",
    "dns_tempfail",
    "virus",
    "blocked_attachment",
    "macro_document",
    "encrypted_archive",
    "archive_limits",
    "unscannable",
    "scan_size_limit",
    "processing_failed",
)


def unknown_reason(reason: str | None) -> str | None:
    """The refusal for a ``--reason``/``?reason=`` that names no code, or None if it is one."""
    if reason is None or reason.strip() in REASON_CODES:
        return None
    return f"{reason!r} is not a reason code; the codes are: {', '.join(REASON_CODES)}"


def bare_message_id(value: str) -> str:
    """The Message-ID as we store it: no surrounding whitespace or angle brackets."""
    return value.strip().removeprefix("<").removesuffix(">").strip()


@dataclass(frozen=True)
class RejectionFilter:
    since: datetime | None = None
    until: datetime | None = None
    message_id: str | None = None
    sender: str | None = None
    mailbox: str | None = None
    reason: str | None = None
    client_ip: str | None = None


def like_literal(value: str) -> str:
    """``value`` as a literal inside a LIKE pattern (escape character ``\\``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(query: RejectionFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.since is not None:
        conditions.append(col(Rejection.created_at) >= query.since)
    if query.until is not None:
        conditions.append(col(Rejection.created_at) <= query.until)
    if query.message_id:
        conditions.append(col(Rejection.message_id) == bare_message_id(query.message_id))
    if query.reason:
        conditions.append(col(Rejection.reason) == query.reason.strip())
    if query.client_ip:
        conditions.append(col(Rejection.client_ip) == query.client_ip.strip())
    if query.sender:
        sender = query.sender.strip().lower().lstrip("@")
        header_from = func.lower(func.coalesce(col(Rejection.header_from), ""))
        if "@" in sender:
            conditions.append(
                or_(
                    func.lower(col(Rejection.mail_from)) == sender,
                    header_from.like(f"%{like_literal(sender)}%", escape="\\"),
                )
            )
        else:
            domain = like_literal(sender)
            conditions.append(
                or_(
                    func.lower(col(Rejection.mail_from)).like(f"%@{domain}", escape="\\"),
                    header_from.like(f"%@{domain}%", escape="\\"),
                )
            )
    if query.mailbox:
        mailbox = query.mailbox.strip().lower()
        # rcpt_to is a JSON list; its text holds each address as a JSON string.
        needle = like_literal(json.dumps(mailbox))
        conditions.append(
            or_(
                func.lower(col(Rejection.mailbox)) == mailbox,
                func.lower(cast(col(Rejection.rcpt_to), Text)).like(f"%{needle}%", escape="\\"),
            )
        )
    return conditions


def rejection_view(rejection: Rejection, *, headers: bool = False) -> RejectionOut:
    """The public shape of one record (add keys, never rename)."""
    return RejectionOut(
        id=rejection.id,
        created_at=aware(rejection.created_at).isoformat(),
        stage=rejection.stage,
        reason=rejection.reason,
        reply=rejection.reply,
        client_ip=rejection.client_ip,
        client_name=rejection.client_name,
        helo=rejection.helo,
        proto=rejection.proto,
        mail_from=rejection.mail_from,
        rcpt_to=rejection.rcpt_to,
        mailbox=rejection.mailbox,
        header_from=rejection.header_from,
        subject=rejection.subject,
        message_id=shown_message_id(rejection.message_id),
        trace_id=rejection.trace_id,
        # What verification recorded: the same object as a message's verdict.
        verdict=rejection.authentication,
        forwarded_from=original_sender(rejection.authentication),
        **({"headers": rejection.headers} if headers else {}),
    )


def search(session: Session, query: RejectionFilter, *, limit: int = 100) -> list[dict[str, Any]]:
    """Matching records, newest first."""
    rows = session.scalars(
        select(Rejection)
        .where(*_conditions(query))
        .order_by(col(Rejection.created_at).desc(), col(Rejection.id).desc())
        .limit(limit)
    ).all()
    return [rejection_view(r).dump() for r in rows]


def newer_than(
    session: Session, query: RejectionFilter, after_id: int, *, limit: int = 1000
) -> list[dict[str, Any]]:
    """Matching records written after record ``after_id``, oldest first (for following)."""
    rows = session.scalars(
        select(Rejection)
        .where(col(Rejection.id) > after_id, *_conditions(query))
        .order_by(col(Rejection.id))
        .limit(limit)
    ).all()
    return [rejection_view(r).dump() for r in rows]


def last_id(session: Session) -> int:
    """The newest record's id (0 when there is none): where following starts."""
    return int(session.scalar(select(func.max(col(Rejection.id)))) or 0)


def detail(session: Session, rejection_id: int) -> dict[str, Any] | None:
    """One record with its full header block."""
    rejection = session.get(Rejection, rejection_id)
    return rejection_view(rejection, headers=True).dump() if rejection is not None else None


def ids_named(session: Session, ref: int | str) -> list[int]:
    """A record's number as it is, or every record of the message with queue ID ``ref``."""
    if isinstance(ref, int):
        return [ref]
    return list(
        session.scalars(
            select(col(Rejection.id))
            .where(col(Rejection.trace_id) == ref.upper())
            .order_by(col(Rejection.id))
        )
    )
