"""How did this message reach us: directly, natively forwarded, or by a person?

Native forwarding (a redirect on the customer's mail server) keeps the
original From, Message-ID and DKIM signature, so the original sender can be
authenticated. Manual forwarding (someone pressing "Forward") makes the
forwarding person the author; the original sender cannot be verified and
the ticket would belong to the wrong person. This module only collects the
evidence, on the parsed message and the envelope; :mod:`policy.authenticate`
applies the configured policy.

Manual forwarding is recognised by:

* unambiguous inline markers: Gmail's ``---------- Forwarded message
  ---------``, Thunderbird's ``-------- Forwarded Message --------``, Yahoo's
  and Zimbra's ``----- Forwarded Message -----``, Apple Mail's ``Begin
  forwarded message:``, and their translations;
* a forwarding subject prefix (``Fwd:``, ``FW:``, ``WG:``, ``TR:``, ``RV:``,
  ``Doorst:``, ``Ti:``, ``VS:``, ``ENC:``, ``I:``, ``PD:`` …) together with an
  ambiguous sign: Outlook's ``-----Original Message-----`` or its ``From: …
  Sent: … To: … Subject:`` header block (localised, e.g. ``Von: …
  Gesendet: …``), or an attached ``message/rfc822``. Outlook uses the same
  blocks when *replying*, so without the prefix they prove nothing.

When the quoted original names a sender other than the outer From, that is
recorded too: the From is the forwarding user, not the author.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses

from policy.verdict import ForwardingKind

# Hostile input is normal input: never scan more text than this per message.
MAX_SCAN_CHARS = 200_000

_FORWARD_PREFIX = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)*"
    r"(fwd?|wg|tr|rv|enc|doorst|ti|vs|vb|vl|i|pd|rif|tov|továbbítás|İlt|ilt"
    r"|пересл|пр|转发|轉寄|إعادة توجيه)\s*(?:\[\d+\])?\s*[:：]",
    re.IGNORECASE,
)

_FORWARD_PHRASES = (
    "forwarded message",
    "weitergeleitete nachricht",
    "message transféré",
    "message transfere",
    "mensaje reenviado",
    "doorgestuurd bericht",
    "messaggio inoltrato",
    "mensagem encaminhada",
    "przekazana wiadomość",
    "välitetty viesti",
    "vidarebefordrat meddelande",
    "videresendt meddelelse",
    "videresendt melding",
    "přeposlaná zpráva",
    "пересылаемое сообщение",
    "forwarded by",
)
_DASHED_PHRASE = re.compile(
    r"^[ \t>]*-{2,}\s*(?:" + "|".join(map(re.escape, _FORWARD_PHRASES)) + r")\b.*?-*\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_APPLE = re.compile(
    r"^[ \t>]*(?:begin forwarded message|anfang der weitergeleiteten nachricht"
    r"|début du message réexpédié|inicio del mensaje reenviado|inizio messaggio inoltrato"
    r"|início da mensagem reencaminhada|begin doorgestuurd bericht)\s*:",
    re.IGNORECASE | re.MULTILINE,
)
_ORIGINAL_MESSAGE = re.compile(
    r"^[ \t>]*-{3,}\s*(?:original message|ursprüngliche nachricht|message d'origine"
    r"|mensaje original|oorspronkelijk bericht|messaggio originale|mensagem original"
    r"|alkuperäinen viesti|ursprungligt meddelande)\s*-{3,}\s*$",
    re.IGNORECASE | re.MULTILINE,
)

# Outlook's quoted header block, per language: (from, sent, subject) labels.
_HEADER_LABELS = (
    ("from", "sent", "subject"),
    ("von", "gesendet", "betreff"),
    ("de", "envoyé", "objet"),
    ("de", "enviado", "asunto"),
    ("van", "verzonden", "onderwerp"),
    ("da", "inviato", "oggetto"),
    ("de", "enviada", "assunto"),
    ("od", "wysłano", "temat"),
    ("från", "skickat", "ämne"),
    ("fra", "sendt", "emne"),
    ("lähettäjä", "lähetetty", "aihe"),
)
_BLOCK_WINDOW = 8

_NATIVE_HEADERS = (
    "x-forwarded-to",
    "x-forwarded-for",
    "x-ms-exchange-forwardingloop",
    "resent-from",
    "resent-sender",
    "arc-seal",
)
_SRS = re.compile(r"^srs[01][=+-]", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_BREAK = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|hr)\b[^>]*>", re.IGNORECASE)


@dataclass(frozen=True)
class ForwardingEvidence:
    """Why we think a message was forwarded, and how."""

    manual: tuple[str, ...] = ()
    native: tuple[str, ...] = ()

    @property
    def kind(self) -> ForwardingKind:
        if self.manual:
            return ForwardingKind.MANUAL
        if self.native:
            return ForwardingKind.NATIVE
        return ForwardingKind.DIRECT


def forward_prefix(subject: str) -> str | None:
    """The forwarding prefix of a subject (``Fwd``, ``WG`` …), if it has one."""
    match = _FORWARD_PREFIX.match(subject)
    return match.group(1) if match else None


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
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", markup)))


def body_text(message: Message) -> tuple[str, bool]:
    """(the message's own text, whether it carries an attached message).

    Text inside attached messages is not the forwarder's and is skipped.
    """
    texts: list[str] = []
    attached = False
    stack: list[Message] = [message]
    while stack:
        part = stack.pop(0)
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            attached = True
            continue
        if part.is_multipart():
            if content_type == "multipart/report":
                # A delivery report carries the bounced message; not a forward.
                continue
            stack.extend(p for p in part.get_payload() if isinstance(p, Message))
        elif content_type == "text/plain":
            texts.append(_decode(part))
        elif content_type == "text/html":
            texts.append(_html_text(_decode(part)))
        if sum(map(len, texts)) > MAX_SCAN_CHARS:
            break
    return "\n".join(texts)[:MAX_SCAN_CHARS], attached


def _header_block(text: str) -> str | None:
    """The sender named by an Outlook-style quoted header block, if there is one."""
    lines = [line.strip(" \t>*") for line in text.splitlines()]
    for index, line in enumerate(lines):
        for from_label, sent_label, subject_label in _HEADER_LABELS:
            sender = _labelled(line, from_label)
            if sender is None:
                continue
            window = lines[index + 1 : index + _BLOCK_WINDOW]
            if any(_labelled(w, sent_label) is not None for w in window) and any(
                _labelled(w, subject_label) is not None for w in window
            ):
                return sender
    return None


def _labelled(line: str, label: str) -> str | None:
    head, colon, rest = line.partition(":")
    if colon and head.strip().lower() == label:
        return rest.strip()
    return None


def _addresses(value: str) -> set[str]:
    return {a.lower() for _n, a in getaddresses([value]) if "@" in a}


def _quoted_sender(text: str) -> set[str]:
    """Addresses on a ``From:``-like line after the forwarding marker."""
    found: set[str] = set()
    for line in text.splitlines()[:400]:
        for from_label, _sent, _subject in _HEADER_LABELS:
            value = _labelled(line.strip(" \t>*"), from_label)
            if value:
                found |= _addresses(value)
    return found


def _manual_signs(message: Message) -> list[str]:
    text, attached = body_text(message)
    prefix = forward_prefix(str(message.get("Subject", "")))
    signs: list[str] = []
    strong = _DASHED_PHRASE.search(text) or _APPLE.search(text)
    if strong:
        signs.append(f"inline forward marker {strong.group(0).strip()[:60]!r}")
    if prefix:
        weak = []
        if _ORIGINAL_MESSAGE.search(text):
            weak.append("original-message separator")
        if _header_block(text) is not None:
            weak.append("quoted header block")
        if attached:
            weak.append("attached message/rfc822")
        if weak or signs:
            signs.append(f"subject prefix {prefix!r}")
            signs.extend(weak)
    if signs:
        outer = _addresses(str(message.get("From", "")))
        quoted = _quoted_sender(text)
        if quoted and not quoted & outer:
            signs.append("From is the forwarding user, not the quoted original sender")
    return signs


def _native_signs(message: Message, mail_from: str) -> list[str]:
    signs = [f"{name} header" for name in _NATIVE_HEADERS if message.get(name) is not None]
    delivered = message.get_all("Delivered-To") or []
    if len(delivered) > 1:
        signs.append(f"{len(delivered)} Delivered-To headers")
    if _SRS.match(mail_from):
        signs.append("SRS envelope sender")
    return signs


def inspect(message: Message, mail_from: str) -> ForwardingEvidence:
    """Collect the forwarding evidence of one message."""
    return ForwardingEvidence(
        tuple(_manual_signs(message)), tuple(_native_signs(message, mail_from))
    )
