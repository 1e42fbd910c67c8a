"""Cheap, crash-proof reads of a raw message's header block.

The listener and the rejection log need From, Subject and Message-ID of mail
they may be about to refuse; hostile bytes must never turn that into an
exception, so every read here degrades to ``None`` instead of raising.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policy.message import headerblock
from policy.message.charsets import decode_words

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def one_line(value: object, limit: int = 998) -> str:
    """Fold anything into one printable line: no CR, LF, NUL or other controls."""
    return _CONTROL.sub(" ", str(value)).strip()[:limit]


@dataclass(frozen=True)
class HeaderSummary:
    header_from: str | None
    subject: str | None
    message_id: str | None
    block: str
    date: str | None = None
    # (name, raw value) of every field in the block, in order (for the DATA limits)
    fields: tuple[tuple[str, str], ...] = ()


def header_block(raw: bytes, limit: int = 256 * 1024) -> bytes:
    match = _HEADER_END.search(raw, 0, limit)
    return raw[: match.start()] if match else raw[:limit]


def summarize(raw: bytes) -> HeaderSummary:
    """From, Subject and Message-ID of a raw message, for logs and records."""
    try:
        return summary_of(headerblock.read(raw))
    except headerblock.HeaderTooLarge:
        return HeaderSummary(None, None, None, _text(header_block(raw)))


def summary_of(block: headerblock.HeaderBlock) -> HeaderSummary:
    """The summary of a header block already read (the listener reads each message once).

    Taken from the fields of the one header reader (``policy/message/headerblock.py``)
    in the shape the ``compat32`` parser gave them (value after the colon, leading
    blanks and the final line break removed): a parse of its own cost the listener
    as much as the rest of DATA handling, and could see other fields.
    """
    fields = tuple(
        (_text(name), _text(value.lstrip(b" \t")).rstrip("\r\n")) for name, value in block.fields
    )
    first: dict[str, str] = {}
    for name, value in fields:
        first.setdefault(name.lower(), value)

    def get(name: str) -> str | None:
        value = first.get(name.lower())
        return one_line(decode_words(value)) if value is not None else None

    # Message-IDs are kept without their angle brackets in stored messages and
    # rejection records (ticket messages keep the bracketed form; trace accepts both).
    message_id = get("Message-ID")
    return HeaderSummary(
        header_from=get("From"),
        subject=get("Subject"),
        message_id=message_id.strip("<>") if message_id else None,
        block=_text(header_block(block.raw)),
        date=get("Date"),
        fields=fields,
    )


def _text(value: bytes) -> str:
    # 8-bit headers are UTF-8 (RFC 6532); PostgreSQL text cannot hold a NUL.
    return value.decode("utf-8", "replace").replace("\x00", "\ufffd")
