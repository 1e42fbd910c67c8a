"""What one message may cost us, decided at DATA before anything expensive reads it.

The batch's parse is linear, but linear in a 25 MB header block of 100,000
addresses is still seconds of one worker and a ticket nobody can read. Mail
beyond :class:`~policy.config.model.LimitsConfig` is refused at DATA with a
reason-coded ``5xx`` (the sender's server tells its user; nothing is lost
silently), and the reason is the stable code of the rejection log.

Both checks are pure and linear, and cheap enough to run beside the
listener's other reads of the message: :func:`check_header` over the header
fields as the listener has already split them (name, raw value), and
:func:`check_structure` over the raw bytes (header block size, MIME nesting
and part count, found by one regular-expression pass, without a MIME parse).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from policy.config.model import LimitsConfig

# Fields whose addresses a ticket shows or threading reads.
_ADDRESS_FIELDS = frozenset(
    {
        *("from", "sender", "reply-to", "to", "cc", "bcc"),
        *("resent-from", "resent-sender", "resent-to", "resent-cc", "resent-bcc"),
    }
)
# Quoted strings and (unnested) comments may hold an ``@`` that is no address.
_NOT_ADDRESSES = re.compile(r'"(?:[^"\\]|\\.)*"|\((?:[^()\\]|\\.)*\)')
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# A delimiter line (``--boundary`` or ``--boundary--``) or a boundary declaration.
# ``-(?<=^-)-`` is ``^--``, spelt so that every match starts with a literal
# (``-`` or ``b``): the regular-expression engine then skips to those bytes
# instead of trying the whole pattern at every byte (a third less time).
_STRUCTURE = re.compile(
    rb'(?im)-(?<=^-)-([^\r\n]*?)[ \t]*\r?$|boundary[ \t]*=[ \t]*(?:"([^"\r\n]*)"|([^\s;"]+))'
)

# Up to this size a lowered copy of the message (one fast search) tells a message
# that declares no boundary, which the scan would pass, at a tenth of the scan's cost.
_QUICK_LOOK = 64 * 1024


@dataclass(frozen=True)
class Breach:
    """A limit the message goes beyond: the reply to give and the reason to record."""

    reason: str
    reply: str


def count_addresses(value: str) -> int:
    """The number of addresses in one address field's value (an upper bound)."""
    return _NOT_ADDRESSES.sub("", value).count("@")


def check_header(fields: Sequence[tuple[str, str]], limits: LimitsConfig) -> Breach | None:
    """The first header limit ``fields`` (name, raw value, in order) go beyond, if any."""
    if len(fields) > limits.max_header_fields:
        return Breach(
            "too_many_header_fields",
            f"552 5.3.4 Too many header fields ({len(fields)}; at most {limits.max_header_fields})",
        )
    addresses = 0
    for name, value in fields:
        size = len(name) + 1 + len(value)
        if size > limits.max_header_field_size:
            return Breach(
                "header_field_too_large",
                f"552 5.3.4 Header field {_shown(name)} too large ({size} bytes; at most "
                f"{limits.max_header_field_size})",
            )
        if name.strip().lower() in _ADDRESS_FIELDS:
            addresses += count_addresses(value)
    if addresses > limits.max_addresses:
        return Breach(
            "too_many_addresses",
            f"552 5.3.4 Too many addresses in the header ({addresses}; at most "
            f"{limits.max_addresses})",
        )
    return None


def check_structure(raw: bytes, limits: LimitsConfig) -> Breach | None:
    """The first limit of size or MIME structure ``raw`` goes beyond, if any."""
    end = _HEADER_END.search(raw, 0, limits.max_header_bytes + 4)
    if end is None and len(raw) > limits.max_header_bytes:
        return Breach(
            "header_too_large",
            f"552 5.3.4 Header block too large (at most {limits.max_header_bytes} bytes)",
        )
    if len(raw) <= _QUICK_LOOK and b"boundary" not in raw.lower():
        return None  # no boundary declared: no part to count, nothing nested
    declared: set[bytes] = set()
    open_levels: list[bytes] = []  # boundaries whose first delimiter was seen, outermost first
    parts = 0
    for match in _STRUCTURE.finditer(raw):
        line, quoted, token = match.groups()
        if line is None:
            declared.add(quoted if quoted is not None else token)
            continue
        closing = line.endswith(b"--") and line[:-2] in declared and line not in declared
        boundary = line[:-2] if closing else line
        if boundary not in declared:
            continue  # a signature separator, a line of dashes …
        if boundary in open_levels:
            del open_levels[open_levels.index(boundary) + (0 if closing else 1) :]
        elif not closing:
            open_levels.append(boundary)
            if len(open_levels) > limits.max_mime_depth:
                return Breach(
                    "mime_too_deep",
                    f"554 5.6.0 MIME parts nested too deep (at most {limits.max_mime_depth})",
                )
        if not closing:
            parts += 1
            if parts > limits.max_mime_parts:
                return Breach(
                    "too_many_mime_parts",
                    f"554 5.6.0 Too many MIME parts (at most {limits.max_mime_parts})",
                )
    return None


def _shown(name: str) -> str:
    return re.sub(r"[^\x21-\x7e]", "?", name)[:64]
