"""What one mail means to a helpdesk, as :func:`policy.message.mime.parse_message` reads it.

The ticket filing, threading, the console and the documents work from these
frozen values, never from the ``email`` package's objects: the parser's
quirks stop at :mod:`policy.message.mime`, and one reading serves every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from policy.message.autoreply import AutoReply, Bounce


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox of an address header; ``name`` is the decoded display name."""

    name: str
    address: str

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>" if self.name else self.address


@dataclass(frozen=True, slots=True)
class ParsedAttachment:
    """One stored part: attached file, inline image or attached message."""

    filename: str
    content_type: str
    size: int
    sha256: str
    inline: bool
    content_id: str | None
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """Everything a ticket message needs from one mail.

    ``message_id`` is always set: when the mail has none, it is derived from
    ``content_digest`` (``<digest@firstline.invalid>``, ``message_id_derived``
    true), so that a second delivery of the same mail gets the same one.
    ``content_digest`` covers the body and the fields that identify a message,
    not the trace fields a delivery adds. ``html`` is sanitised (see
    :mod:`policy.message.markup` for its ``cid:`` and remote-image conventions) and None
    when the mail has no HTML part.
    """

    message_id: str
    message_id_derived: bool
    content_digest: str
    from_: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: datetime | None
    subject: str
    in_reply_to: str | None
    references: tuple[str, ...]
    reply_ids: tuple[str, ...]
    text: str
    html: str | None
    remote_images: tuple[str, ...]
    attachments: tuple[ParsedAttachment, ...]
    charset_repairs: tuple[str, ...]
    auto_reply: AutoReply
    bounce: Bounce
    headers: tuple[tuple[str, str], ...]
    defects: tuple[str, ...]
    # Why ``from_`` is None: a reason code of :class:`policy.message.author.NoAuthor`,
    # or ``null_author`` for a bounce whose From names no address.
    author_problem: str | None = None

    @property
    def charset_repaired(self) -> bool:
        return bool(self.charset_repairs)

    @property
    def is_auto_reply(self) -> bool:
        return self.auto_reply.is_auto

    def header(self, name: str) -> str | None:
        """The first decoded value of header ``name``, for evidence and rules."""
        wanted = name.lower()
        return next((v for n, v in self.headers if n.lower() == wanted), None)
