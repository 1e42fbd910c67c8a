"""How did this message reach us: directly, natively forwarded, or by a person?

Native forwarding (a redirect on the customer's mail server) keeps the
original From, Message-ID and DKIM signature, so the original sender can be
authenticated. Manual forwarding (someone pressing "Forward") makes the
forwarding person the author; the original sender cannot be verified and
the ticket would belong to the wrong person. This module only collects the
evidence, on the parsed message and the envelope; :mod:`policy.verify.authenticate`
applies the configured policy.

Manual forwarding is recognised by:

* unambiguous markers, in every language the clients ship: a dashed line
  naming a forwarded message (Gmail's ``---------- Forwarded message
  ---------``, Thunderbird's ``-------- Weitergeleitete Nachricht --------``,
  Yahoo's ``----- Message transmis -----``, HubSpot's ``---------- メッセージを転送
  ---------``), or a line that is nothing but a forward heading and a colon
  (Apple Mail's ``Begin forwarded message:`` / ``Début du message
  réexpédié :``, MailMate's ``Forwarded message:``);
* the outermost subject prefix being a forwarding one (``Fwd:``, ``WG:``,
  ``TR:``, ``RV:``, ``VB:``, ``PD:``, ``ENC:``, ``İLT:``, ``ΠΡΘ:``, ``转发:`` …)
  together with an ambiguous sign: an ``Original Message`` separator, a
  quoted header block (``From/Sent/Subject``, ``Von/Gesendet/Betreff``,
  ``差出人/送信日時/件名`` …), an attribution line naming the original author
  (Outlook for Mac forwards as ``Am …, schrieb "X" <x@…>:``), or an attached
  ``message/rfc822``. Clients use those same blocks when *replying*, so
  without the prefix they prove nothing; Finnish ``VS:`` is a reply although
  Danish and Norwegian ``VS:`` forwards, and the block's language or the
  message's Content-Language tells them apart.

A reply whose quoted history contains somebody's old forward is not a
forward: when the outermost prefix is a reply's, a marker counts only above
the first quoted part. Mailing-list digests carry other people's mail by
design and are never manual forwards.

The original sender (the attached message's From, else the address quoted
under the marker, in the header block or in the attribution line) is
recorded so operators can see whom a refused forward came from.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses

from policy.message.charsets import decode_words
from policy.verify.forwardmarks import (
    ADDRESS,
    ATTRIBUTION,
    BLOCK_WINDOW,
    BREAK,
    DASHED,
    DASHED_FORWARD,
    DASHED_ORIGINAL,
    DATE_LABELS,
    DIGEST_SUBJECT,
    FORWARD_PREFIXES,
    FROM_LABELS,
    HEADINGS,
    LANGUAGE_OF_FROM,
    MAX_MARKER_LINE,
    NATIVE_HEADERS,
    PREFIX,
    REPLY_IN_LANGUAGE,
    REPLY_PREFIXES,
    SRS,
    SUBJECT_LABELS,
    TAG,
    UNDERSCORES,
    norm,
)
from policy.verify.verdict import ForwardingKind

# Hostile input is normal input: never scan more text than this per message.
MAX_SCAN_CHARS = 200_000


@dataclass(frozen=True)
class ForwardingEvidence:
    """Why we think a message was forwarded, and how."""

    manual: tuple[str, ...] = ()
    native: tuple[str, ...] = ()
    # For a manual forward: the address of the original's author, as quoted or
    # attached (unverified: whoever forwarded could have written anything).
    original_sender: str | None = None

    @property
    def kind(self) -> ForwardingKind:
        if self.manual:
            return ForwardingKind.MANUAL
        if self.native:
            return ForwardingKind.NATIVE
        return ForwardingKind.DIRECT


def _prefixes(subject: str) -> list[str]:
    """The subject's leading prefixes, outermost first, as written."""
    found: list[str] = []
    rest = subject
    while len(found) < 8:
        match = PREFIX.match(rest)
        if match is None:
            break
        found.append(match.group(1))
        rest = rest[match.end() :]
    return found


def forward_prefix(subject: str) -> str | None:
    """The forwarding prefix of a subject (``Fwd``, ``WG`` …), if its outermost is one."""
    prefixes = _prefixes(subject)
    if prefixes and norm(prefixes[0]) in FORWARD_PREFIXES:
        return prefixes[0]
    return None


def _is_reply(subject: str) -> bool:
    prefixes = _prefixes(subject)
    return bool(prefixes) and norm(prefixes[0]) in REPLY_PREFIXES


def _decode(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _html_text(markup: str) -> str:
    markup = markup[: MAX_SCAN_CHARS * 4]
    return html.unescape(TAG.sub("", BREAK.sub("\n", markup)))


def body_text(message: Message) -> tuple[str, list[Message]]:
    """(the message's own text, the messages attached to it as message/rfc822).

    Text inside attached messages is not the forwarder's and is skipped.
    """
    texts: list[str] = []
    attached: list[Message] = []
    stack: list[Message] = [message]
    size = 0
    while stack and size <= MAX_SCAN_CHARS:
        part = stack.pop(0)
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                attached.append(inner[0])
            continue
        if part.is_multipart():
            # A delivery report carries the bounced message, a digest the
            # list's posts: neither is a forward.
            if content_type in ("multipart/report", "multipart/digest"):
                continue
            stack.extend(p for p in part.get_payload() if isinstance(p, Message))
        elif content_type in ("text/plain", "text/html"):
            text = _decode(part)
            texts.append(text if content_type == "text/plain" else _html_text(text))
            size += len(texts[-1])
    return "\n".join(texts)[:MAX_SCAN_CHARS], attached


def _labelled(line: str) -> tuple[str, str] | None:
    """(normalised label, value) of a ``Label: value`` line (ASCII or full-width colon)."""
    colon, wide = line.find(":"), line.find("：")
    cut = colon if wide < 0 or 0 <= colon < wide else wide  # the first of the two
    if cut <= 0 or cut > 40:
        return None
    label = norm(line[:cut].strip(" \t*\u00a0"))
    return label, line[cut + 1 :].strip(" \t*\u00a0")


def _first_address(value: str) -> str | None:
    match = ADDRESS.search(value)
    return match.group(0).lower() if match else None


def _glued(line: str, labels: frozenset[str]) -> bool:
    """Whether one of ``labels`` is glued inside ``line``.

    Yahoo's text part runs the quoted fields together on one line
    (``Von: X <x@…>An: …Gesendet: …Betreff: …``).
    """
    if line.count(":") + line.count("：") < 2:
        return False
    folded = norm(line)
    return any(f"{label}:" in folded or f"{label}：" in folded for label in labels)


@dataclass
class _Scan:
    """What one pass over the body's lines found (line indexes)."""

    marker: tuple[int, str] | None = None
    original_separator: int | None = None
    block: tuple[int, str | None, str] | None = None  # line, sender, from label
    attribution: tuple[int, str] | None = None
    quoted: int | None = None  # the first line of quoted history
    # The rest of the marker's line: Yahoo's text part glues the quoted
    # header fields to it ("----- Forwarded Message ----- From: …To: …").
    marker_tail: str = ""
    lines: tuple[str, ...] = ()

    def boundary(self) -> int | None:
        found = [
            i
            for i in (
                self.original_separator,
                self.block[0] if self.block else None,
                self.attribution[0] if self.attribution else None,
                self.quoted,
            )
            if i is not None
        ]
        return min(found, default=None)

    def sender_below(self, start: int) -> str | None:
        """The first From-labelled address after the marker on line ``start``."""
        for line in (self.marker_tail, *self.lines[start + 1 : start + 1 + BLOCK_WINDOW * 2]):
            found = _labelled(line)
            if found is not None and found[0] in FROM_LABELS:
                address = _first_address(found[1])
                if address:
                    return address
        return None


def _scan(text: str) -> _Scan:
    lines = tuple(line.strip(" \t\u00a0") for line in text.splitlines())
    scan = _Scan(lines=tuple(line.lstrip("> \t\u00a0") for line in lines))
    # Each line's label, read once: the header-block window looks ahead at them.
    labels = [
        found[0] if len(line) <= MAX_MARKER_LINE and (found := _labelled(line)) else None
        for line in scan.lines
    ]
    for index, raw in enumerate(lines):
        if len(raw) > MAX_MARKER_LINE or not raw:
            continue
        if raw.startswith(">") and scan.quoted is None:
            scan.quoted = index
        line = scan.lines[index]
        if not line:
            continue
        ends_in_colon = line[-1] in (":", "：")
        normal = norm(line) if line[0] == "-" or ends_in_colon else line
        dashed = DASHED.match(normal) if line[0] == "-" else None
        if dashed is not None:
            inner = dashed.group(1)
            if scan.marker is None and any(p in inner for p in DASHED_FORWARD):
                scan.marker, scan.marker_tail = (index, line), normal[dashed.end() :]
            elif scan.original_separator is None and any(p in inner for p in DASHED_ORIGINAL):
                scan.original_separator = index
            continue
        if line[0] == "_" and UNDERSCORES.match(line) and scan.original_separator is None:
            # Outlook.com's rule above the quoted header block (reply or forward).
            scan.original_separator = index
            continue
        if scan.marker is None and ends_in_colon and normal[:-1].strip(" -") in HEADINGS:
            scan.marker = (index, line)
            continue
        if scan.block is None:
            found = _labelled(line) if labels[index] in FROM_LABELS else None
            if found is not None:
                window = set(labels[index + 1 : index + BLOCK_WINDOW])
                if (window & DATE_LABELS or _glued(line, DATE_LABELS)) and (
                    window & SUBJECT_LABELS or _glued(line, SUBJECT_LABELS)
                ):
                    scan.block = (index, _first_address(found[1]), found[0])
                    continue
        if scan.attribution is None and ends_in_colon:
            attribution = ATTRIBUTION.search(line)
            if attribution is not None:
                scan.attribution = (index, attribution.group(1).lower())
    return scan


def _content_language(message: Message) -> str:
    value = str(message.get("Content-Language") or message.get("Accept-Language") or "")
    return value.strip().lower()[:2]


def _manual_signs(message: Message) -> tuple[list[str], str | None]:
    subject = decode_words(message.get("Subject", ""))
    if message.get_content_type() == "multipart/digest" or (
        message.get("List-Id") is not None and DIGEST_SUBJECT.search(subject)
    ):
        return [], None
    text, attached = body_text(message)
    scan = _scan(text)
    prefix = forward_prefix(subject)
    signs: list[str] = []
    marker = scan.marker
    boundary = scan.boundary()
    replying = _is_reply(subject) or (
        prefix is not None and not _means_forward(prefix, scan, message)
    )
    if marker is not None and replying and boundary is not None and boundary < marker[0]:
        marker = None  # somebody's old forward, quoted in a reply
    if marker is not None:
        signs.append(f"inline forward marker {marker[1][:60]!r}")
    if prefix is not None and not replying:
        weak = []
        if scan.original_separator is not None:
            weak.append("original-message separator")
        if scan.block is not None:
            weak.append("quoted header block")
        if scan.attribution is not None:
            weak.append("quoted attribution line")
        if attached:
            weak.append("attached message/rfc822")
        if weak or signs:
            signs.append(f"subject prefix {prefix!r}")
            signs.extend(weak)
    if not signs:
        return [], None
    sender = _original_sender(scan, marker, attached)
    outer = {a.lower() for _n, a in getaddresses([str(message.get("From", ""))]) if "@" in a}
    if sender is not None and sender not in outer:
        signs.append("From is the forwarding user, not the quoted original sender")
    return signs, sender


def _means_forward(prefix: str, scan: _Scan, message: Message) -> bool:
    """False for a prefix that is a reply's in the message's own language."""
    language = REPLY_IN_LANGUAGE.get(norm(prefix))
    if language is None:
        return True
    block_language = LANGUAGE_OF_FROM.get(scan.block[2]) if scan.block else None
    return language not in (block_language, _content_language(message))


def _original_sender(
    scan: _Scan, marker: tuple[int, str] | None, attached: list[Message]
) -> str | None:
    for inner in attached:
        address = _first_address(str(inner.get("From", "")))
        if address:
            return address
    if marker is not None:
        below = scan.sender_below(marker[0])
        if below:
            return below
    if scan.block is not None and scan.block[1]:
        return scan.block[1]
    if scan.attribution is not None:
        return scan.attribution[1]
    return None


def _native_signs(message: Message, mail_from: str) -> list[str]:
    signs = [f"{name} header" for name in NATIVE_HEADERS if message.get(name) is not None]
    delivered = message.get_all("Delivered-To") or []
    if len(delivered) > 1:
        signs.append(f"{len(delivered)} Delivered-To headers")
    if SRS.match(mail_from):
        signs.append("SRS envelope sender")
    return signs


def inspect(message: Message, mail_from: str) -> ForwardingEvidence:
    """Collect the forwarding evidence of one message."""
    manual, sender = _manual_signs(message)
    return ForwardingEvidence(tuple(manual), tuple(_native_signs(message, mail_from)), sender)
