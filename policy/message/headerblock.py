"""The header block, read once: where it ends, its fields, and the bytes everyone parses.

Each stage used to read the header block with a parser of its own (dkimpy in
the verifier, the standard library in the scanner and the ticket parser), and
where they disagreed an attacker won: a From the verifier never saw, a
``Content-Type`` only the ticket parser honoured. :func:`read` splits the
header block by one rule and returns it as *canonical* bytes, which are what
the listener verifies and stores and what the scanner and the ticket parser
parse; well-formed mail comes out byte for byte as it went in, so signatures
still verify.

The rule:

* a UTF-8 byte-order mark before the first field is dropped;
* the message's line break is the one its header block ends with: CRLF when
  it ends with an empty CRLF line, else a bare LF (mail handed over from a
  file, perhaps under trace fields added with CRLF). With CRLF, a lone CR or
  LF inside the header block is not a line break (RFC 5322 2.2) and becomes a
  space; with LF, every LF is one (a CR before it is dropped) and a lone CR
  becomes a space;
* the block ends at the first empty line; a line starting with SP or HTAB
  continues the field before it; ``Name : value`` (whitespace before the
  colon, RFC 5322 4.5.3 obsolete syntax) is the field ``Name``;
* a line that is none of these (an 8-bit field name, no colon at all, an mbox
  ``From `` line) is dropped with its continuation lines, and noted in
  ``defects``: no parser downstream can then read it as a field;
* the canonical block is written back with CRLF line breaks and always ends
  with the empty line; the body follows untouched.

:func:`read` is linear in the size of the header block and refuses a block
larger than ``limit`` (:class:`HeaderTooLarge`) before doing any work on it,
so it is cheap enough to run on the event loop. It does no I/O.
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass
from email.message import Message
from email.policy import Policy, compat32

from policy.errors import PermFail

BOM = b"\xef\xbb\xbf"
#: The largest header block accepted: far above any real mail (a long
#: forwarding path with ARC sets and signatures is a few tens of kilobytes),
#: far below what would make per-field parsing downstream expensive.
MAX_HEADER_BYTES = 256 * 1024

TOO_LARGE_REPLY = (
    f"552 5.3.4 The message header is larger than {MAX_HEADER_BYTES // 1024} KiB; "
    "it cannot be accepted"
)

_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# The first empty line: "\r\n\r\n" (found as "\n\r\n" after a CR), "\n\n" or "\n\r\n".
_EMPTY_LINE = re.compile(rb"\n\r?\n")


class HeaderTooLarge(PermFail):
    """The header block is larger than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"header block larger than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class HeaderBlock:
    """One message as everything after DATA reads it.

    ``fields`` are (name, value) with the value as folded, from after the
    colon up to and including its final CRLF: the shape dkimpy works on.
    ``raw`` is the canonical message; ``body_offset`` is where its body starts.
    """

    raw: bytes
    fields: tuple[tuple[bytes, bytes], ...]
    body_offset: int
    defects: tuple[str, ...] = ()

    @property
    def body(self) -> bytes:
        return self.raw[self.body_offset :]

    def values(self, name: str) -> list[str]:
        """Every value of field ``name``, unfolded, as text (8-bit bytes as UTF-8)."""
        wanted = name.lower().encode("ascii")
        return [
            b" ".join(v.split(b"\r\n")).decode("utf-8", "replace").strip()
            for n, v in self.fields
            if n.lower() == wanted
        ]


def _split(raw: bytes, limit: int) -> tuple[list[bytes], int]:
    """The header lines (breaks removed, lone CR/LF as spaces) and where the body starts."""
    if raw.startswith((b"\n", b"\r\n")):
        return [], raw.index(b"\n") + 1
    end = _EMPTY_LINE.search(raw, 0, limit + 4)
    if end is None:
        block, body = raw, len(raw)
        first_lf = raw.find(b"\n")
        crlf = first_lf > 0 and raw[first_lf - 1] == 0x0D
    else:
        crlf = end.group() == b"\n\r\n" and raw[end.start() - 1] == 0x0D
        block, body = raw[: end.start() - 1 if crlf else end.start()], end.end()
    if len(block) > limit:
        raise HeaderTooLarge(limit)
    if crlf:
        return [
            line.replace(b"\r", b" ").replace(b"\n", b" ") for line in block.split(b"\r\n")
        ], body
    lines = [line[:-1] if line.endswith(b"\r") else line for line in block.split(b"\n")]
    return [line.replace(b"\r", b" ") for line in lines], body


def read(raw: bytes, limit: int = MAX_HEADER_BYTES) -> HeaderBlock:
    """Read the header block of ``raw`` once (see the module docstring for the rule)."""
    defects: list[str] = []
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
        defects.append("byte-order mark before the header")
    lines, body_start = _split(raw, limit)
    # (name, lines of the value): joined once at the end, so that a field of a
    # million continuation lines costs linear time, not quadratic.
    parts: list[tuple[bytes, list[bytes]]] = []
    current: list[bytes] | None = None
    dropped = 0
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            elif line.strip():
                dropped += 1
            continue
        match = _FIELD.match(line)
        if match is None:
            current = None
            dropped += 1 if line.strip() else 0
            continue
        current = [line[match.end() :]]
        parts.append((match.group(1), current))
    if dropped:
        defects.append(f"{dropped} header line(s) neither a field nor a continuation, dropped")
    fields = [(name, b"\r\n".join(value) + b"\r\n") for name, value in parts]
    head = b"".join(name + b":" + value for name, value in fields) + b"\r\n"
    # The common case is already canonical: then no copy is made, not even of the body.
    same = body_start == len(head) and raw.startswith(head)
    canonical = raw if same else head + memoryview(raw)[body_start:]
    return HeaderBlock(canonical, tuple(fields), len(head), tuple(defects))


def reread(block: HeaderBlock, limit: int = MAX_HEADER_BYTES) -> HeaderBlock:
    """:func:`read` of ``block.raw`` (the canonical message), without the work.

    The canonical message reads back as its own fields, body and offset; only
    its header block may now be over ``limit`` (each bare LF became CRLF), and
    then this raises as :func:`read` would. A caller handed a reading (the
    verifier, by the listener) so refuses exactly what reading again refused.
    """
    if block.fields and block.body_offset - len(b"\r\n\r\n") > limit:
        raise HeaderTooLarge(limit)
    return HeaderBlock(block.raw, block.fields, block.body_offset)


def canonical(raw: bytes, limit: int = MAX_HEADER_BYTES) -> bytes:
    """The bytes every parser of ``raw`` must read (see :func:`read`)."""
    return read(raw, limit).raw


# Line breaks to str.splitlines, and so to the standard library's parser, besides CR and LF.
_OTHER_BREAKS = re.compile(rb"[\x0b\x0c\x1c-\x1e]")


def as_message(block: HeaderBlock, policy: Policy = compat32) -> Message:
    """The standard library's parse (under ``policy``) of the canonical message ``block.raw``.

    For a message that is not multipart/* or message/* the parser makes its
    fields as :func:`read` split them and keeps the body as it is, so that
    message is built here from the header block already read: the parse was
    a quarter of the forwarding scan, and a third of the batch's reading of a
    message. The rest, and a header block holding a break the parser's line
    splitting knows besides CR and LF, is parsed. Like the parser, it may
    raise what a malformed field makes the header registry raise.
    """
    factory = policy.message_factory or Message
    message: Message = factory(policy=policy)
    for name, value in block.fields:
        text = value.decode("ascii", "surrogateescape")
        message.set_raw(name.decode("ascii"), text.lstrip(" \t").rstrip("\r\n"))
    if message.get_content_maintype() in ("multipart", "message") or _OTHER_BREAKS.search(
        block.raw, 0, block.body_offset
    ):
        return email.message_from_bytes(block.raw, policy=policy)
    message.set_payload(block.body.decode("ascii", "surrogateescape"))
    return message
