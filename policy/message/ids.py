"""Message-IDs as threading compares them.

``Message-ID``, ``In-Reply-To`` and ``References`` are compared byte for byte
across mail clients that fold, comment and occasionally forget the angle
brackets, so every ID is reduced to one form: ``<left@right>`` with no
whitespace. IDs longer than a header line can be are not IDs.
"""

from __future__ import annotations

import re

_BRACKETED = re.compile(r"<([^<>]*)>")
_BARE = re.compile(r"[^\s<>(),;\"]+@[^\s<>(),;\"]+")
_MAX_ID = 996  # with the angle brackets, the 998 of a header line


def message_ids(value: str) -> list[str]:
    """Every Message-ID in a header value, in order, duplicates removed."""
    found = ["".join(m.split()) for m in _BRACKETED.findall(value)]
    if not found:
        found = _BARE.findall(value)
    ids = [f"<{m}>" for m in found if m and len(m) <= _MAX_ID]
    return list(dict.fromkeys(ids))


def shown_message_id(value: str | None) -> str | None:
    """A Message-ID as every output shows it: ``<left@right>``, as RFC 5322 writes it.

    Stored values come bare (rejections, the queue) or bracketed (tickets,
    replies); inputs may be either. Showing one form means a value copied
    from one command's output finds the same message in any other, and in a
    mail client's header view.
    """
    if value is None:
        return None
    bare = value.strip().removeprefix("<").removesuffix(">").strip()
    return f"<{bare}>" if bare else None
