""" "Where is my mail?" from whatever the support team was given: an ID or a header block.

``firstline trace`` (with ``--headers FILE``) and the console's search box
share this: a Message-ID (brackets optional) or our trace id goes straight
to :func:`storage.mailtrace.trace`; a pasted header block is read with the same
header reader the listener uses (:func:`policy.message.headers.summarize`) and
matched by :func:`storage.headermatch.match_headers`, which says which rule
matched.
"""

from __future__ import annotations

from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from sqlalchemy.orm import Session

from policy.message.headers import summarize
from storage.headermatch import Clues, as_dict, match_headers
from storage.mailtrace import trace

MAX_PASTE = 256 * 1024


def looks_like_headers(text: str) -> bool:
    """A header block has several lines, or at least a ``Message-ID:`` field name."""
    text = text.strip()
    return "\n" in text or text.lower().startswith("message-id:")


def clues(pasted: str) -> Clues:
    """What a pasted header block says about its message; unreadable parts are ``None``."""
    lines = pasted[:MAX_PASTE].strip("\r\n").splitlines()
    # Mail clients' "show original" windows indent or quote nothing; copies from
    # a ticket or a chat sometimes do ("> From: …"): drop a common quote prefix.
    if lines and all(line.startswith("> ") or not line for line in lines):
        lines = [line[2:] for line in lines]
    block = "\r\n".join(line.rstrip() for line in lines).encode("utf-8", "replace")
    summary = summarize(block + b"\r\n\r\n")
    date = None
    if summary.date:
        try:
            date = parsedate_to_datetime(summary.date)
        except (TypeError, ValueError, IndexError):
            date = None
    addresses = [a for _name, a in getaddresses([summary.header_from or ""]) if "@" in a]
    sender = addresses[0].lower() if len(addresses) == 1 else None
    return Clues(summary.message_id, sender, date, summary.subject)


def where_is(session: Session, query: str) -> dict[str, Any]:
    """``trace``'s answer plus ``match``: which rule found the message (and from what)."""
    if not looks_like_headers(query):
        found = trace(session, query)
        rule = "message-id" if found["found"] else None
        return {**found, "match": {"rule": rule, "message_id": found["message_id"],
                                   "candidates": int(found["found"])}}  # fmt: skip
    matched = match_headers(session, clues(query))
    if matched.message_id is None:
        return {"query": query, "message_id": None, "trace_ids": [], "found": False,
                "status": [], "events": [], "match": as_dict(matched)}  # fmt: skip
    return {**trace(session, matched.message_id), "match": as_dict(matched)}
