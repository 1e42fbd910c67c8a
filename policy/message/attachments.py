"""What a MIME leaf is: body text or an attachment, and the attachment's name.

The scanner decides on a name and the ticket stores and serves a name; when
the two were computed apart, ``update.j\\u200bs`` passed the extension list
and was then served as ``update.js``. This module is the one answer both use:
the name is RFC 2047/2231 decoded, normalised (Unicode NFKC, format and
control characters removed, path separators replaced, trailing dots and
spaces dropped, as Windows does) and bounded; a part without a usable name
gets one from its position and content type. Pure code, no I/O.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from email.message import Message
from email.utils import collapse_rfc2231_value

from policy.message.charsets import clean_text, decode_header_value

MAX_FILENAME = 200
BODY_TYPES = ("text/plain", "text/html")

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
# Unicode categories no file name needs: format (zero-width, bidi, soft
# hyphen, BOM), controls, surrogates, private use, unassigned, separators.
_DROPPED = frozenset({"Cf", "Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
# Shown in a name but changing its reading order: a name holding one hides its
# extension (``photo\u202egpj.exe``), so the scanner refuses it outright.
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean_filename(value: str) -> str:
    """A given file name as it is checked, stored and served."""
    if "=?" in value:
        value = decode_header_value(value)[0]
    value = unicodedata.normalize("NFKC", clean_text(value))
    value = "".join(c for c in value if unicodedata.category(c) not in _DROPPED)
    return _UNSAFE.sub("_", value).strip(". \t")[:MAX_FILENAME].strip(". \t")


def given_filename(part: Message) -> str:
    """The name the sender gave (Content-Disposition filename, else Content-Type
    name), decoded but not normalised; "" when there is none or it is unreadable."""
    try:
        name = part.get_filename()
    except (ValueError, IndexError, TypeError, AttributeError, LookupError):
        return ""
    if isinstance(name, tuple):  # an RFC 2231 value in an unknown charset
        name = collapse_rfc2231_value(name)
    return str(name) if name else ""


def is_body(part: Message, given: str | None = None) -> bool:
    """Whether a leaf is message text (shown) rather than an attachment (stored);
    ``given`` is its :func:`given_filename` when already known."""
    if part.get_content_type() not in BODY_TYPES:
        return False
    if part.get_content_disposition() == "attachment":
        return False
    return (given_filename(part) if given is None else given) == ""


def filename(part: Message, path: str, given: str | None = None) -> str:
    """The name of the attachment at ``path`` (``1.2``): given, or made up."""
    name = clean_filename(given_filename(part) if given is None else given)
    if name:
        return name
    ctype = part.get_content_type()
    payload = part.get_payload()
    if ctype in ("message/rfc822", "message/global") and isinstance(payload, list):
        inner = payload[0] if payload and isinstance(payload[0], Message) else None
        subject = _raw_header(inner, "subject") if inner is not None else None
        title = clean_filename(decode_header_value(subject)[0]) if subject else ""
        return f"{title or 'message'}.eml"
    extension = mimetypes.guess_extension(ctype) or (
        ".txt" if ctype.startswith(("message/", "text/")) else ".bin"
    )
    return f"part-{path}{extension}"


def _raw_header(msg: Message, name: str) -> str | None:
    return next((str(v) for n, v in msg.raw_items() if n.lower() == name), None)
