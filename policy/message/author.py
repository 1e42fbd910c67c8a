"""The author of a message, read once: the address DMARC judges is the address the ticket shows.

The From field is read twice, by two parsers that fail differently:

* the *strict* parse is the standard library's RFC 5322 address-list parser
  (the one ``email.headerregistry`` uses); it counts as a reading only when it
  reports nothing invalid (obsolete syntax is fine) and leaves nothing over;
* the *lenient* parse knows what real mailers write: when the field holds
  one angle-addr (outside quoted strings and comments), that is the address
  and everything before it the display name, unquoted commas and ``@``
  included (``Doe, John <john@example.com>``, ``jane@laptop <jane@example.com>``,
  Exchange's encoded ``=?iso-8859-1?Q?B=FCrling,=20Andreas?= <…>``); without
  one, the field less its comments must be a single addr-spec.

Encoded words are never decoded before the address is found: what an encoded
word says is display text, never an address.

Most From fields are in a *plain* shape (:data:`_PLAIN`: an ASCII dot-atom
address, bare or in angle brackets after a display name of atoms separated
by single spaces, no ``=``, quotes, comments or encoded words). Both parses
provably read such a field as that one mailbox with that display name, so it
is read once, by the pattern, and the two parsers run only for the rest
(``tests/test_author.py`` compares the shortcut with them on hostile shapes).

The verdict (:func:`read`):

* both name the same single mailbox → that is the author;
* the strict parse cannot read the field and the lenient one finds one
  well-formed mailbox → that is the author;
* a null-sender form (``<>``, ``Mail Delivery System <>``, ``MAILER-DAEMON
  (Mail Delivery System)``: no address, or a bare daemon name) → a bounce,
  :attr:`Author.null`;
* anything else (no From, several From fields or mailboxes, the two parses
  naming different addresses, an address without a usable domain) → no
  trustworthy author (:class:`NoAuthor`, with a reason code). Nobody guesses,
  and the envelope sender is never a substitute.

Pure code; the work is bounded by :data:`MAX_FROM_CHARS`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import _header_value_parser as rfc5322
from email.errors import HeaderParseError, InvalidHeaderDefect

from policy.errors import PermFail

#: A From field longer than this names no trustworthy author (real ones are
#: well under a kilobyte); it also bounds the strict parser's work.
MAX_FROM_CHARS = 4096
_MAX_COMMENT_DEPTH = 16
_DAEMONS = frozenset({"mailer-daemon", "postmaster"})
_LOCAL_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+")
_LOCAL_QUOTED = re.compile(r'"(?:[^"\\\r\n]|\\.)*"')
_ATEXT = r"[A-Za-z0-9!#$%&'*+/?^_`{|}~\-]+"  # RFC 5322 atext, ASCII, without "="
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
# An addr-spec every parser reads as written (also policy.message.mime's To/Cc shortcut).
PLAIN_ADDRESS = rf"{_DOT_ATOM}@{_DOT_ATOM}"
_PLAIN = re.compile(
    rf"(?:(?P<display>{_ATEXT}(?: {_ATEXT})*) )?<(?P<angled>{PLAIN_ADDRESS})>"
    rf"|(?P<bare>{PLAIN_ADDRESS})"
)
_LABEL = re.compile(
    r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"
)


class NoAuthor(PermFail):
    """The message names no single trustworthy author; ``reason`` is the code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Author:
    """The one author. ``address`` is empty for a null-sender bounce (``null``).

    ``display`` is the display name as written (possibly RFC 2047 encoded,
    quotes removed); the reader that shows it decodes it.
    """

    address: str
    display: str = ""

    @property
    def null(self) -> bool:
        return not self.address

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


NULL_AUTHOR = Author("")


def _valid(address: str) -> str | None:
    """``address`` as the author's address, or None when it is not a usable one.

    A trailing dot on the domain (an absolute name) is dropped; the domain
    must be a host name with at least two labels (no literals).
    """
    local, at, domain = address.rpartition("@")
    domain = domain.rstrip(".") if domain.endswith(".") and not domain.endswith("..") else domain
    if not at or not local or len(address) > 320:
        return None
    if _LOCAL_QUOTED.fullmatch(local) and all(
        _LOCAL_ATOM.fullmatch(p) for p in local[1:-1].split(".")
    ):
        local = local[1:-1]  # "alice.c" needs no quotes: one spelling for both parses
    if not (
        _LOCAL_QUOTED.fullmatch(local) or all(_LOCAL_ATOM.fullmatch(p) for p in local.split("."))
    ):
        return None
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return f"{local}@{domain.lower()}"


def _strict(value: str) -> list[tuple[str, str]] | None:
    """(display name, addr-spec) of each mailbox, or None when the parse is not clean."""
    try:
        parsed, rest = rfc5322.get_address_list(value)
    except (HeaderParseError, IndexError, ValueError, TypeError, RecursionError):
        return None
    if rest.strip() or any(isinstance(d, InvalidHeaderDefect) for d in parsed.all_defects):
        return None
    return [(m.display_name or "", m.addr_spec or "") for m in parsed.all_mailboxes]


def _outside(value: str) -> list[tuple[int, str]] | None:
    """The characters of ``value`` outside quoted strings and comments, with positions.

    None when a quote or comment is not closed, or comments nest too deep.
    """
    out: list[tuple[int, str]] = []
    depth = 0
    quoted = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif depth:
            depth += 1 if char == "(" else -1 if char == ")" else 0
        elif char == '"':
            quoted = True
        elif char == "(":
            depth = 1
        else:
            out.append((index, char))
            continue
        if depth > _MAX_COMMENT_DEPTH:
            return None
    return None if quoted or depth or escaped else out


def _lenient(value: str) -> tuple[str, str] | None:
    """(raw display text, address) as a forgiving reader sees it; None when it cannot."""
    plain = _outside(value)
    if plain is None:
        return None
    opens = [i for i, c in plain if c == "<"]
    closes = [i for i, c in plain if c == ">"]
    if not opens and not closes:
        text = "".join(c for _i, c in plain).strip()
        if not text or any(c in text for c in " \t,;<>"):
            return None
        name = value[value.find("(") + 1 : value.rfind(")")] if "(" in value else ""
        return name.strip(), text
    if len(opens) != 1 or len(closes) != 1 or closes[0] < opens[0]:
        return None
    start, end = opens[0], closes[0]
    if "".join(c for i, c in plain if i > end).strip():
        return None  # something after the angle-addr besides comments
    inner = "".join(c for i, c in plain if start < i < end)
    quoted_inner = value[start + 1 : end]
    address = "".join(inner.split()) if '"' not in quoted_inner else quoted_inner.strip()
    display = value[:start].strip()
    if len(display) >= 2 and display[0] == display[-1] == '"':
        display = display[1:-1]
    return display, address


def _is_null(found: tuple[str, str]) -> bool:
    address = found[1]
    return address == "" or ("@" not in address and address.lower() in _DAEMONS)


def _plain(value: str) -> Author | None:
    """The author of a From value in the plain shape, None when it is not in it."""
    match = _PLAIN.fullmatch(value)
    if match is None:
        return None
    address = _valid(match.group("angled") or match.group("bare"))
    return Author(address, match.group("display") or "") if address is not None else None


def read(from_values: Sequence[str]) -> Author:
    """The one author of a message with these From field values (see the module docstring).

    Raises :class:`NoAuthor` with a reason code: ``from_missing``,
    ``from_several``, ``from_unreadable``, ``from_ambiguous``.
    """
    if not from_values:
        raise NoAuthor("from_missing", "no From header field")
    if len(from_values) > 1:
        raise NoAuthor("from_several", f"{len(from_values)} From header fields")
    value = from_values[0].strip()
    if len(value) > MAX_FROM_CHARS:
        raise NoAuthor("from_unreadable", f"the From field is longer than {MAX_FROM_CHARS}")
    plain = _plain(value)
    if plain is not None:
        return plain
    strict = _strict(value)
    lenient = _lenient(value)
    if strict is not None and len(strict) > 1:
        raise NoAuthor("from_several", f"{len(strict)} From addresses")
    if lenient is not None and _is_null(lenient) and not (strict and "@" in strict[0][1]):
        return Author("", lenient[0])
    if strict is not None and not strict:
        raise NoAuthor("from_missing", "the From field names no address")
    lenient_address = _valid(lenient[1]) if lenient is not None else None
    if strict is None:
        if lenient is None or lenient_address is None:
            raise NoAuthor("from_unreadable", "no well-formed author address in From")
        return Author(lenient_address, lenient[0])
    display, addr_spec = strict[0]
    strict_address = _valid(addr_spec)
    if strict_address is None:
        raise NoAuthor("from_unreadable", "the From address has no usable domain")
    if lenient_address is None or lenient_address.lower() != strict_address.lower():
        raise NoAuthor("from_ambiguous", "the From field reads as different addresses")
    return Author(strict_address, display or lenient[0] if lenient else display)
