"""From the raw bytes of one mail to the fields a ticket message is made of.

The standard library's ``email`` package (policy ``default``) does the MIME
parsing; this module decides what a helpdesk keeps from it. Two rules shape
every function here:

* Hostile input is normal input. :func:`parse_message` never raises: a field
  that cannot be parsed falls back to its raw value (decoded safely), a part
  that cannot be processed is kept as an attachment or noted in ``defects``.
  The raw bytes stay in the store, so a message can be reprocessed after a
  parser fix.
* Never invent content. A blank part stays blank; text is decoded with the
  declared charset and repaired only when it does not decode, and repairs are
  reported (``charset_repairs``) rather than hidden.

One message, one reading: the bytes parsed are those of
:func:`policy.message.headerblock.read` (the listener verified and stored exactly
those), parsed once into the :mod:`policy.message.mimetree` the scanner walks
too (:func:`parse_tree`), so a lone CR or LF cannot smuggle a
header (``Subject: hi\\nBcc: …``) or a ``Content-Type`` into this parse that
the verifier or the scanner did not see. The author is
:func:`policy.message.author.read` of that header block, the address DMARC judged;
attachment names and the body/attachment split are
:mod:`policy.message.attachments`, what the scanner checked.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.headerregistry import AddressHeader
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import TypeVar

from policy.config.model import LimitsConfig
from policy.message import headerblock, mimetree
from policy.message.author import PLAIN_ADDRESS, NoAuthor
from policy.message.author import read as read_author
from policy.message.autoreply import (
    NOT_A_BOUNCE,
    AutoReply,
    classify_auto_reply,
    classify_bounce,
)
from policy.message.charsets import clean_text, decode_bytes, decode_header_value
from policy.message.ids import message_ids
from policy.message.markup import (
    bound_depth,
    has_text,
    html_to_text,
    normalise_content_id,
    sanitise_html,
)
from policy.message.parsed import Address, ParsedAttachment, ParsedMessage

T = TypeVar("T")

DERIVED_ID_DOMAIN = "firstline.invalid"
_LIMITS = LimitsConfig()
# The header registry's address parser costs about a millisecond per address;
# a field longer than this goes to the lenient (regular-expression) parser,
# which is linear and some thirty times faster, instead.
_STRICT_ADDRESS_FIELD = 8 * 1024
# A field of bare addr-specs (``a@example.com, b.c@example.net``): the
# author's plain addresses (dot-atoms without "=", so no encoded word), no
# display name, comment, quote or fold. The header registry reads each such
# address as itself with an empty display name, at some 60 µs a field; the
# pattern is unambiguous (a dot, "@" or comma ends each run), so matching it
# is linear. Anything else goes to the registry.
_BARE_ADDRESSES = re.compile(rf"[ \t]*{PLAIN_ADDRESS}(?:[ \t]*,[ \t]*{PLAIN_ADDRESS})*[ \t]*")
_LONE_BREAK = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_LINE_BREAKS = re.compile(r"[\r\n\x00]+")
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
# Fields whose values make two deliveries of one message the same message;
# trace fields (Received, Delivered-To, Authentication-Results …) differ per
# delivery and are left out.
_DIGEST_FIELDS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "content-type",
)
_EML_POLICY = email.policy.default.clone(linesep="\r\n", refold_source="none")


def parse_message(
    raw: bytes, *, mail_from: str | None = None, limits: LimitsConfig = _LIMITS
) -> ParsedMessage:
    """Parse one mail; never raises, and costs time linear in its size.

    ``mail_from`` is the envelope sender (``""`` for the null sender), which
    only the bounce classification uses; None means it is unknown. What goes
    beyond ``limits`` (addresses, MIME depth and parts, HTML depth) is not
    read, and a defect says so.
    """
    return parse_tree(mimetree.read(raw), mail_from=mail_from, limits=limits)


def parse_tree(
    tree: mimetree.Tree, *, mail_from: str | None = None, limits: LimitsConfig = _LIMITS
) -> ParsedMessage:
    """:func:`parse_message` of a message already read (the scanner reads the same tree)."""
    try:
        return _Parser(tree, mail_from, limits).parse()
    except Exception as exc:  # the contract: malformed mail is data, not a crash
        failure = exc
    try:
        # The header block alone still says who wrote what about what.
        return _Parser(tree, mail_from, limits, body_failure=failure).parse()
    except Exception as exc:
        return _unparseable(tree.raw, exc)


def _unparseable(raw: bytes, exc: BaseException) -> ParsedMessage:
    digest = hashlib.sha256(raw).hexdigest()
    return ParsedMessage(
        message_id=f"<{digest[:32]}@{DERIVED_ID_DOMAIN}>",
        message_id_derived=True,
        content_digest=digest,
        from_=None,
        to=(),
        cc=(),
        reply_to=(),
        date=None,
        subject="",
        in_reply_to=None,
        references=(),
        reply_ids=(),
        text="",
        html=None,
        remote_images=(),
        attachments=(),
        charset_repairs=(),
        auto_reply=AutoReply(False, (), False, None),
        bounce=NOT_A_BOUNCE,
        headers=(),
        defects=(f"unparseable: {type(exc).__name__}",),
        author_problem="from_unreadable",
    )


class _Parser:
    """The state of one parse: what was found and what had to be repaired."""

    def __init__(
        self,
        tree: mimetree.Tree,
        mail_from: str | None,
        limits: LimitsConfig,
        body_failure: Exception | None = None,
    ) -> None:
        self.tree = tree
        self.mail_from = mail_from
        self.limits = limits
        self.body_failure = body_failure
        self.addresses_left = limits.max_addresses
        self.parts_left = limits.max_mime_parts
        self.repairs: list[str] = []
        self.defects: list[str] = []
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.attachments: list[ParsedAttachment] = []

    def parse(self) -> ParsedMessage:
        block, root = self.tree.block, self.tree.root
        if block is None:
            raise self.tree.failure or ValueError("no header block")
        # The stdlib recurses per MIME level: thousands of levels exhaust the stack.
        failure = self.body_failure or (self.tree.failure if root is None else None)
        if root is not None and failure is None:
            msg = root.part
        else:
            msg = BytesHeaderParser(policy=email.policy.default).parsebytes(block.raw)
            self.defects.append(f"body not parsed: {type(failure).__name__}")
        headers = self._headers(msg)
        digest = self._digest(headers, block.body)
        ids = message_ids(self._first(headers, "message-id") or "")
        in_reply_to = message_ids(self._first(headers, "in-reply-to") or "")
        references = message_ids(" ".join(v for n, v in headers if n.lower() == "references"))
        from_, author_problem = self._author(block)
        if root is not None and failure is None:
            self._walk(root, in_related=False)
        html, remote = self._html()
        text = (
            "\n".join(self.texts)
            if self.texts
            else self._guard("html text", "", lambda: html_to_text(html or ""))
        )
        if not text.strip() and not self.texts and has_text(html or ""):
            self.defects.append("html text: the HTML has text but none could be extracted")
        bounce = self._guard(
            "bounce",
            NOT_A_BOUNCE,
            lambda: classify_bounce(msg, headers, from_.address if from_ else "", self.mail_from),
        )
        return ParsedMessage(
            message_id=ids[0] if ids else f"<{digest[:32]}@{DERIVED_ID_DOMAIN}>",
            message_id_derived=not ids,
            content_digest=digest,
            from_=from_ if from_ and from_.address else None,
            author_problem=author_problem,
            to=self._addresses(msg, "to", headers),
            cc=self._addresses(msg, "cc", headers),
            reply_to=self._addresses(msg, "reply-to", headers),
            date=self._date(headers),
            subject=self._first(headers, "subject") or "",
            in_reply_to=in_reply_to[0] if in_reply_to else None,
            references=tuple(references),
            reply_ids=tuple(dict.fromkeys([*in_reply_to, *reversed(references)])),
            text=text,
            html=html,
            remote_images=remote,
            attachments=tuple(self.attachments),
            charset_repairs=tuple(self.repairs),
            auto_reply=classify_auto_reply(headers),
            bounce=bounce,
            headers=tuple(headers),
            defects=tuple(self.defects),
        )

    def _guard(self, what: str, default: T, compute: Callable[[], T]) -> T:
        """``compute()``, or ``default`` with a defect noted if it fails."""
        try:
            return compute()
        except Exception as exc:  # one bad field must not cost the whole message
            self.defects.append(f"{what}: {type(exc).__name__}")
            return default

    # -- headers -------------------------------------------------------------

    def _headers(self, msg: Message) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        for name, value in msg.raw_items():
            clean_name = clean_text(str(name))
            text, repaired = decode_header_value(str(value))
            if repaired:
                self.repairs.append(f"header {clean_name}")
            pairs.append((clean_name, text))
        return pairs

    @staticmethod
    def _first(headers: Sequence[tuple[str, str]], name: str) -> str | None:
        return next((v for n, v in headers if n.lower() == name), None)

    @staticmethod
    def _digest(headers: Sequence[tuple[str, str]], body: bytes) -> str:
        sha = hashlib.sha256()
        for name, value in headers:
            if name.lower() in _DIGEST_FIELDS:
                sha.update(f"{name.lower()}:{value}\n".encode("utf-8", "replace"))
        sha.update(b"\n")
        sha.update(body.replace(b"\r\n", b"\n").rstrip(b"\n"))
        return sha.hexdigest()

    def _author(self, block: headerblock.HeaderBlock) -> tuple[Address | None, str | None]:
        """The author DMARC judged (see :mod:`policy.message.author`), or why there is none.

        A null-sender bounce gives an Address without an address (its display
        name is still shown) and the problem ``null_author``.
        """
        try:
            author = read_author(block.values("from"))
        except NoAuthor as exc:
            return None, exc.reason
        name = decode_header_value(author.display)[0]
        return Address(name, author.address), "null_author" if author.null else None

    def _addresses(
        self, msg: Message, name: str, headers: Sequence[tuple[str, str]]
    ) -> tuple[Address, ...]:
        found: list[Address] = []
        raw_values = [str(v) for n, v in msg.raw_items() if n.lower() == name]
        for index, value in enumerate(v for n, v in headers if n.lower() == name):
            raw = raw_values[index] if index < len(raw_values) else value
            for display, addr in self._address_pairs(msg, name, raw, value):
                address = _LINE_BREAKS.sub("", clean_text(addr)).strip()
                if "@" not in address:
                    continue
                if self.addresses_left <= 0:
                    limit = self.limits.max_addresses
                    self.defects.append(f"{name}: more than {limit} addresses, the rest not read")
                    return tuple(found)
                self.addresses_left -= 1
                found.append(Address(decode_header_value(display)[0], address))
        return tuple(found)

    def _address_pairs(
        self, msg: Message, name: str, raw: str, value: str
    ) -> list[tuple[str, str]]:
        """One field's (display name, address) pairs, at a cost linear in its length."""
        if len(raw) > _STRICT_ADDRESS_FIELD:
            # Only what the address budget can still take: a cut address is dropped.
            budget = (self.addresses_left + 1) * 512
            pairs = getaddresses([value[:budget]])
            return pairs[:-1] if len(value) > budget else pairs
        if _BARE_ADDRESSES.fullmatch(raw):
            return [("", address.strip(" \t")) for address in raw.split(",")]
        try:
            # Parsed here, field by field: Message.get_all() parses every field of
            # that name again on each call.
            header = msg.policy.header_fetch_parse(name, raw)
            if not isinstance(header, AddressHeader):
                raise TypeError(type(header).__name__)
            return [(a.display_name, a.addr_spec) for a in header.addresses]
        except Exception:
            # The strict parser gave up; the lenient one still finds addresses.
            self.defects.append(f"{name}: unparseable address list")
            return getaddresses([value])

    def _date(self, headers: Sequence[tuple[str, str]]) -> datetime | None:
        value = self._first(headers, "date")
        if not value:
            return None
        try:
            parsed = parsedate_to_datetime(value)
        except (ValueError, TypeError, OverflowError, IndexError):
            self.defects.append("date: unparseable")
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    # -- body ----------------------------------------------------------------

    def _walk(self, node: mimetree.Node, in_related: bool) -> None:
        if node.depth > self.limits.max_mime_depth:
            limit = self.limits.max_mime_depth
            self.defects.append(f"part {node.path}: nested deeper than {limit}, not read")
            return
        if self.parts_left <= 0:
            if self.parts_left == 0:
                limit = self.limits.max_mime_parts
                self.defects.append(f"part {node.path}: more than {limit} parts, the rest not read")
            self.parts_left -= 1
            return
        self.parts_left -= 1
        try:
            self._part(node, in_related)
        except Exception as exc:  # keep what we can of a part we cannot read
            self.defects.append(f"part {node.path}: {type(exc).__name__}")
            self._guard(f"part {node.path} fallback", None, lambda: self._attach(node, False))

    def _part(self, node: mimetree.Node, in_related: bool) -> None:
        ctype = node.content_type
        if ctype.startswith("multipart/"):
            if node.children is None:
                # A multipart without a usable boundary: its body is all we have.
                self._body(node, "text/plain", self.texts)
                return
            related = ctype == "multipart/related"
            for child in node.children:
                self._walk(child, related)
            return
        if node.is_body:
            self._body(node, ctype, self.texts if ctype == "text/plain" else self.htmls)
        else:
            self._attach(node, in_related)

    def _body(self, node: mimetree.Node, ctype: str, into: list[str]) -> None:
        decoded = decode_bytes(node.data, node.charset)
        if decoded.repaired:
            self.repairs.append(f"part {node.path} {ctype}: {decoded.note}")
        into.append(clean_text(decoded.text).replace("\r\n", "\n"))

    def _attach(self, node: mimetree.Node, in_related: bool) -> None:
        part = node.part
        ctype = node.content_type
        if not _MIME_TYPE.fullmatch(ctype):
            self.defects.append(f"part {node.path}: invalid content type")
            ctype = "application/octet-stream"
        payload = part.get_payload()
        if node.content_type.startswith("message/") and isinstance(payload, list):
            data = b"".join(_serialise(m) for m in payload if isinstance(m, EmailMessage))
        else:
            data = node.data
        raw_cid = part.get("content-id")
        content_id = normalise_content_id(clean_text(str(raw_cid))) if raw_cid else None
        disposition = node.disposition
        inline = disposition == "inline" or (
            disposition is None and in_related and content_id is not None
        )
        sha = hashlib.sha256(data).hexdigest()
        if content_id and any(
            a.content_id == content_id and a.sha256 == sha for a in self.attachments
        ):
            return
        self.attachments.append(
            ParsedAttachment(
                filename=node.filename,
                content_type=ctype,
                size=len(data),
                sha256=sha,
                inline=inline,
                content_id=content_id or None,
                data=data,
            )
        )

    def _html(self) -> tuple[str | None, tuple[str, ...]]:
        if not self.htmls:
            return None, ()
        cids = [a.content_id for a in self.attachments if a.content_id]
        html, flattened = bound_depth("\n".join(self.htmls), self.limits.max_html_depth)
        if flattened:
            limit = self.limits.max_html_depth
            self.defects.append(f"html: nested deeper than {limit} elements, flattened")
        result = self._guard("html", None, lambda: sanitise_html(html, cids))
        if result is None:
            return "", ()
        self.attachments = [
            replace(a, inline=True) if a.content_id in result.content_ids else a
            for a in self.attachments
        ]
        return result.html, result.remote_images


def _serialise(msg: EmailMessage) -> bytes:
    """An attached message as a standalone .eml, headers kept as they came."""
    buffer = io.BytesIO()
    BytesGenerator(buffer, mangle_from_=False, policy=_EML_POLICY).flatten(msg)
    return buffer.getvalue()
