"""Build the reply a customer receives, as exact bytes, before anything is sent.

Composing is pure: the same draft gives the same message, so a reply can be
composed once when it is queued, stored, and re-sent byte for byte on every
retry. Everything that comes from outside (the ticket's subject, the
requester's address, a ``--cc`` on the command line) is hostile input: a
subject is flattened to one line, and an address that is not exactly one
plain address is refused instead of being "repaired" into a second header.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address, AddressHeader
from email.message import EmailMessage
from email.utils import format_datetime

from ingest.work.threads import subject_token
from policy.errors import PermFail
from policy.message.autoreply import loop_marker
from policy.message.markup import sanitise_html

# One plain address: no spaces, no brackets, no quotes; the domain a host name.
_ADDR_SPEC = re.compile(r"^[^@\s<>()\[\],;:\"\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")
# Reply and forward prefixes mail clients put in front of a subject, in the
# languages our customers write in; stripped so replies do not stack "Re: Re:".
_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|antw|vs|ref|fw|fwd|wg|tr)\s*(?:\[\d+\])?\s*:\s*)+", re.I)
_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")


class InvalidReply(PermFail):
    """The draft cannot become a safe message; sending it again will not help."""


@dataclass(frozen=True)
class Draft:
    """Everything a reply is made of, already looked up from the ticket."""

    ticket_id: int
    message_id: str
    subject: str
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    text: str = ""
    html: str | None = None
    # The thread so far, Message-IDs oldest first, and the one we answer
    # (default: the last of the thread).
    references: tuple[str, ...] = ()
    in_reply_to: str | None = None


@dataclass(frozen=True)
class Sender:
    """Who a mailbox's replies come from."""

    name: str
    address: str


def new_message_id(ticket_id: int, reply_id: int, hostname: str) -> str:
    """A Message-ID that names the ticket, so answers thread without guessing."""
    return f"<ticket-{ticket_id}.reply-{reply_id}.{secrets.token_hex(8)}@{hostname}>"


def one_line(value: str) -> str:
    """Flatten text meant for a header: control characters become one space."""
    return " ".join(_CONTROL.sub(" ", value).split())


def reply_subject(subject: str, ticket_id: int) -> str:
    """``Re: [#ID] original`` however many ``Re:`` and tokens the original had."""
    token = subject_token(ticket_id)
    text = one_line(subject)
    while True:
        stripped = _PREFIX.sub("", text).replace(token, " ")
        stripped = " ".join(stripped.split())
        if stripped == text:
            break
        text = stripped
    return f"Re: {token} {text}" if text else f"Re: {token}"


def parse_address(value: str) -> Address:
    """Exactly one plain address, or :class:`InvalidReply` naming what is wrong."""
    if _CONTROL.search(value):
        raise InvalidReply(f"address {value!r} contains control characters")
    try:
        header = policy.default.header_factory("To", value)
    except (ValueError, IndexError) as exc:
        raise InvalidReply(f"address {value!r} cannot be parsed: {exc}") from None
    addresses = header.addresses if isinstance(header, AddressHeader) else ()
    if len(addresses) != 1 or header.defects:
        raise InvalidReply(f"{value!r} is not exactly one email address")
    address = addresses[0]
    if not _ADDR_SPEC.match(address.addr_spec):
        raise InvalidReply(f"{address.addr_spec!r} is not a plain email address")
    if not address.addr_spec.isascii():
        # It would need SMTPUTF8 end to end, which replies do not negotiate.
        raise InvalidReply(f"{address.addr_spec!r}: non-ASCII addresses are not supported")
    return Address(display_name=one_line(address.display_name), addr_spec=address.addr_spec)


def _message_id(value: str) -> str:
    value = value.strip()
    if not _MESSAGE_ID.fullmatch(value):
        raise InvalidReply(f"{value!r} is not a Message-ID")
    return value


def compose(draft: Draft, sender: Sender, date: datetime) -> EmailMessage:
    """The reply as a message; :func:`to_bytes` gives what goes on the wire."""
    if not draft.to:
        raise InvalidReply("a reply needs at least one recipient")
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(display_name=one_line(sender.name), addr_spec=sender.address)
    msg["To"] = [parse_address(a) for a in draft.to]
    if draft.cc:
        msg["Cc"] = [parse_address(a) for a in draft.cc]
    msg["Subject"] = reply_subject(draft.subject, draft.ticket_id)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = _message_id(draft.message_id)
    # Only well-formed IDs go into the thread headers; a mangled one from a
    # customer's client is dropped rather than copied into our headers.
    thread = [m.strip() for m in draft.references if _MESSAGE_ID.fullmatch(m.strip())]
    if thread:
        answered = (draft.in_reply_to or "").strip()
        msg["In-Reply-To"] = answered if _MESSAGE_ID.fullmatch(answered) else thread[-1]
        msg["References"] = " ".join(thread)
    msg["Auto-Submitted"] = "no"
    # Marks our own mail, so that it is recognised if it ever comes back in.
    msg["X-Loop"] = loop_marker(sender.address)
    msg.set_content(draft.text)
    if draft.html is not None:
        # Sanitised like inbound HTML (an answer often quotes the customer's
        # mail); remote images are dropped, so replies carry no tracking pixels
        # and no placeholders that only our console understands.
        msg.add_alternative(sanitise_html(draft.html, keep_remote=False).html, subtype="html")
    return msg


def send_test_message(sender: Sender, to: str, message_id: str, date: datetime) -> EmailMessage:
    """What ``smtp-test --to`` sends: plainly a test, so nobody answers it."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(display_name=one_line(sender.name), addr_spec=sender.address)
    msg["To"] = parse_address(to)
    msg["Subject"] = f"firstline send test for {one_line(sender.name)}"
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = _message_id(message_id)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Loop"] = loop_marker(sender.address)
    msg.set_content(
        f"This message tests sending from {sender.address} through its SMTP server.\n"
        "If you can read it, replies from this mailbox will arrive.\n"
    )
    return msg


def to_bytes(msg: EmailMessage) -> bytes:
    """CRLF line ends, as SMTP and DKIM want them."""
    return msg.as_bytes(policy=policy.SMTP)


def recipients(msg: EmailMessage) -> tuple[str, ...]:
    """The envelope recipients: every To and Cc address, each once."""
    seen: dict[str, None] = {}
    for name in ("To", "Cc"):
        header = msg[name]
        if isinstance(header, AddressHeader):
            for address in header.addresses:
                seen.setdefault(address.addr_spec, None)
    return tuple(seen)
