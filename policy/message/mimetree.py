"""The MIME tree of one message, read once for the scanner and the ticket parser.

The bytes the scanner checks must be the bytes a ticket stores and serves.
When the scanner and the parser each parsed the message, that held only as
long as two walks agreed; and the work was paid twice. :func:`read` parses
the canonical bytes (:func:`policy.message.headerblock.read`) once, and
every part of the result is a :class:`Node` whose readings (content type,
given and made-up names, body or attachment, decoded payload) are made at
most once, on first use: the parser and the scanner walk the same nodes and
see the same ``bytes`` objects. The tree is complete before either looks at
it and nothing mutates it, so neither depends on how far the other got.

The header registry of the ``email`` package parses a ``Content-Type`` each
time it is asked for one, and a part's is asked for a dozen times (the
feedparser itself, content type, main type, charset, parameters, name): each
parse uses the default policy with a memo of the fields parsed, kept as long
as the tree. A parsed field is an immutable function of its name and value,
so the memo changes nothing but the cost. Pure code, no I/O.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import Message
from functools import cached_property

from policy.message import attachments, headerblock

# The fields asked for again and again; others (address lists above all) are
# parsed once. A parsed field holds its parse tree, some fifty times the size
# of its value, so the memo holds only short values, and only the most recent
# ones: the asks for one part's fields come together (the feedparser's while it
# reads the part, then the node's own readings, which it keeps).
_ASKED_AGAIN = frozenset({"content-type", "content-transfer-encoding", "content-disposition"})
_MEMO_VALUE = 256
_MEMO_ENTRIES = 32


class _Registry(HeaderRegistry):
    """The default header registry, but each header class is made once: the
    stdlib builds a new class for every field it parses (``type()`` per call)."""

    def __init__(self) -> None:
        super().__init__()
        self.made: dict[type, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        kind = self.registry.get(name.lower(), self.default_class)
        made = self.made.get(kind)
        if made is None:
            made = self.made[kind] = super().__getitem__(name)
        return made


_REGISTRY = _Registry()


class _Fields:
    """The header factory of one message's parse: each field parsed at most once."""

    def __init__(self) -> None:
        self.parsed: dict[tuple[str, str], str] = {}

    def __call__(self, name: str, value: str) -> str:
        if len(value) > _MEMO_VALUE or name.lower() not in _ASKED_AGAIN:
            return _REGISTRY(name, value)
        key = (name, value)
        found = self.parsed.get(key)
        if found is None:
            if len(self.parsed) >= _MEMO_ENTRIES:
                del self.parsed[next(iter(self.parsed))]
            found = self.parsed[key] = _REGISTRY(name, value)
        return found


class Node:
    """One part, at ``path`` (``1``, ``1.2`` …, numbered as the ticket names parts)
    and ``depth`` (multiparts and attached messages above it)."""

    def __init__(self, part: Message, path: str, depth: int) -> None:
        self.part = part
        self.path = path
        self.depth = depth

    @cached_property
    def content_type(self) -> str:
        return self.part.get_content_type()

    @cached_property
    def charset(self) -> str | None:
        return self.part.get_content_charset()

    @cached_property
    def disposition(self) -> str | None:
        return self.part.get_content_disposition()

    @cached_property
    def children(self) -> list[Node] | None:
        """The parts of a multipart or an attached message; None for a leaf."""
        payload = self.part.get_payload()
        if not isinstance(payload, list):
            return None
        return [
            Node(child, f"{self.path}.{index}", self.depth + 1)
            for index, child in enumerate(payload, 1)
            if isinstance(child, Message)
        ]

    @cached_property
    def given_filename(self) -> str:
        return attachments.given_filename(self.part)

    @cached_property
    def is_body(self) -> bool:
        """See :func:`policy.message.attachments.is_body`."""
        return attachments.is_body(self.part, self.given_filename)

    @cached_property
    def filename(self) -> str:
        """The name stored, served and checked (:func:`policy.message.attachments.filename`)."""
        return attachments.filename(self.part, self.path, self.given_filename)

    @cached_property
    def data(self) -> bytes:
        """The decoded payload (a part whose encoding cannot be undone, as it came)."""
        data = self.part.get_payload(decode=True)
        if isinstance(data, bytes):
            return data
        payload = self.part.get_payload()
        return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""


@dataclass(frozen=True)
class Tree:
    """One message, read.

    ``block`` is None when the header block is too large to read; ``root`` is
    None when the body could not be parsed either (the stdlib recurses per
    MIME level and raises on some malformed headers); ``failure`` says why.
    """

    raw: bytes
    block: headerblock.HeaderBlock | None
    root: Node | None
    failure: Exception | None = None


def read(raw: bytes) -> Tree:
    """Parse ``raw`` once; never raises."""
    try:
        block = headerblock.read(raw)
    except headerblock.HeaderTooLarge as exc:
        return Tree(raw, None, None, exc)
    try:
        policy = email.policy.default.clone(header_factory=_Fields())
        message = headerblock.as_message(block, policy)
    except Exception as exc:  # RecursionError, or what the header parser raises
        return Tree(raw, block, None, exc)
    return Tree(raw, block, Node(message, "1", 0))
