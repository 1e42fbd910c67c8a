"""The corpus: real-world mail shapes, each with what firstline must make of it.

Every case is written out here rather than captured, so that each byte is
deliberate and the expectation sits next to the message. ``thread`` names
the earlier case whose ticket a message must join (None: it opens its own);
``ticket=False`` means no ticket message at all (a duplicate delivery, our
own mail coming back, a bounce of unknown mail). Raw messages may contain
``{ticket:NAME}``, the number of the ticket case NAME opened; such cases are
sent in a second round, after the first round's tickets exist.
"""

from __future__ import annotations

import base64
import quopri
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage

SUPPORT = "support@example.com"
BILLING = "billing@example.com"
ALICE = "Alice Customer <alice@customer.example>"
BOB = "Bob Other <bob@other.example>"
DATE = "Tue, 03 Nov 2026 10:00:00 +0100"


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    subject: str
    sender: str | None
    snippet: str
    attachments: tuple[str, ...] = ()
    inline: tuple[str, ...] = ()
    thread: str | None = None
    ticket: bool = True
    auto_reply: bool = False
    bounce: bool = False
    repaired: bool = False
    html: tuple[str, ...] = ()
    not_html: tuple[str, ...] = ()
    mail_from: str | None = None
    rcpt: str = SUPPORT

    @property
    def second_round(self) -> bool:
        return b"{ticket:" in self.raw

    @property
    def envelope_sender(self) -> str:
        if self.mail_from is not None:
            return self.mail_from
        return self.sender or "unknown@customer.example"


def mail(
    name: str,
    subject: str,
    body: bytes,
    *,
    sender: str = ALICE,
    to: str = SUPPORT,
    ctype: str = "text/plain; charset=utf-8",
    cte: str | None = None,
    headers: Sequence[str] = (),
    message_id: str | None = "",
) -> bytes:
    """A message with the usual headers; ``message_id=None`` leaves it out."""
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {DATE}"]
    if message_id is not None:
        lines.append(f"Message-ID: {message_id or f'<{name}@customer.example>'}")
    lines += ["MIME-Version: 1.0", f"Content-Type: {ctype}"]
    if cte:
        lines.append(f"Content-Transfer-Encoding: {cte}")
    lines += list(headers)
    return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body


def attached(*attachments: tuple[str, bytes], body: str = "Hello, my printer is broken.") -> bytes:
    """A plain customer mail carrying ``(filename, data)`` attachments."""
    message = EmailMessage()
    message["From"] = "customer@example.net"
    message["To"] = "support@example.com"
    message["Subject"] = "Help"
    message.set_content(body)
    for filename, data in attachments:
        message.add_attachment(
            data, maintype="application", subtype="octet-stream", filename=filename
        )
    return message.as_bytes()


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def qp(data: bytes) -> bytes:
    return quopri.encodestring(data).replace(b"\n", b"\r\n")


def multipart(kind: str, boundary: str, *parts: bytes, preamble: bytes = b"") -> tuple[str, bytes]:
    """A multipart content type and body from already-formatted parts."""
    body = preamble
    for part in parts:
        body += b"--" + boundary.encode() + b"\r\n" + part + b"\r\n"
    return f'multipart/{kind}; boundary="{boundary}"', body + b"--" + boundary.encode() + b"--\r\n"


def part(ctype: str, body: bytes, *headers: str, cte: str | None = None) -> bytes:
    lines = [f"Content-Type: {ctype}", *headers]
    if cte:
        lines.append(f"Content-Transfer-Encoding: {cte}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


GERMAN = "Grüße aus München! Die Rechnung über 15 € ist leider falsch – bitte prüfen."
CHINESE = "您好，我的订单还没有收到，请帮忙查询一下物流信息。谢谢！"
JAPANESE = "お世話になっております。注文した商品がまだ届いていません。確認をお願いします。"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

CASES: list[Case] = []


def case(c: Case) -> None:
    CASES.append(c)


# --- plain text and charsets ---------------------------------------------------

case(
    Case(
        "plain",
        mail(
            "plain",
            "Printer on floor 3 is broken",
            b"Hello,\r\n\r\nthe printer on floor 3 jams on every page.\r\n\r\nAlice\r\n",
        ),
        "Printer on floor 3 is broken",
        "alice@customer.example",
        "the printer on floor 3 jams",
    )
)
case(
    Case(
        "utf8-8bit",
        mail("utf8-8bit", "Rechnung", GERMAN.encode() + b"\r\n", cte="8bit"),
        "Rechnung",
        "alice@customer.example",
        "Grüße aus München",
    )
)
case(
    Case(
        "latin1-qp",
        mail(
            "latin1-qp",
            "Adresse",
            qp("Herr Müller zieht um, neue Straße.\n".encode("latin-1")),
            ctype="text/plain; charset=ISO-8859-1",
            cte="quoted-printable",
        ),
        "Adresse",
        "alice@customer.example",
        "Herr Müller zieht um, neue Straße.",
    )
)
case(
    Case(
        "latin9-euro",
        mail(
            "latin9-euro",
            "Preis",
            "Der Preis ist 15 € pro Monat.\r\n".encode("iso8859_15"),
            ctype="text/plain; charset=iso-8859-15",
            cte="8bit",
        ),
        "Preis",
        "alice@customer.example",
        "15 € pro Monat",
    )
)
case(
    Case(
        "cp1252-as-latin1",
        mail(
            "cp1252-as-latin1",
            "Quote",
            "He said “it’s broken” – 20 € lost.\r\n".encode("cp1252"),
            ctype="text/plain; charset=iso-8859-1",
            cte="8bit",
        ),
        "Quote",
        "alice@customer.example",
        "He said “it’s broken” – 20 € lost.",
    )
)
case(
    Case(
        "utf8-labelled-latin1",
        mail(
            "utf8-labelled-latin1",
            "Mislabelled",
            GERMAN.encode() + b"\r\n",
            ctype="text/plain; charset=iso-8859-1",
            cte="8bit",
        ),
        "Mislabelled",
        "alice@customer.example",
        "Grüße aus München",
        repaired=True,
    )
)
case(
    Case(
        "gb2312-base64",
        mail(
            "gb2312-base64",
            "=?gb2312?B?" + base64.b64encode("订单查询".encode("gb2312")).decode() + "?=",
            b64(CHINESE.encode("gb2312")),
            ctype="text/plain; charset=gb2312",
            cte="base64",
        ),
        "订单查询",
        "alice@customer.example",
        "我的订单还没有收到",
    )
)
case(
    Case(
        "gb18030-8bit",
        mail(
            "gb18030-8bit",
            "Order",
            ("镕" + CHINESE).encode("gb18030"),
            ctype="text/plain; charset=GB18030",
            cte="8bit",
        ),
        "Order",
        "alice@customer.example",
        "镕您好",
    )
)
case(
    Case(
        "gbk-labelled-gb2312",
        mail(
            "gbk-labelled-gb2312",
            "GBK",
            ("朱镕基 " + CHINESE).encode("gbk"),
            ctype="text/plain; charset=gb2312",
            cte="8bit",
        ),
        "GBK",
        "alice@customer.example",
        "朱镕基",
    )
)
case(
    Case(
        "shift-jis",
        mail(
            "shift-jis",
            "=?shift_jis?B?" + base64.b64encode("お問い合わせ".encode("shift_jis")).decode() + "?=",
            JAPANESE.encode("shift_jis"),
            ctype="text/plain; charset=Shift_JIS",
            cte="8bit",
        ),
        "お問い合わせ",
        "alice@customer.example",
        "注文した商品がまだ届いていません",
    )
)
case(
    Case(
        "iso-2022-jp",
        mail(
            "iso-2022-jp",
            "=?ISO-2022-JP?B?"
            + base64.b64encode("ご注文について".encode("iso2022_jp")).decode()
            + "?=",
            JAPANESE.encode("iso2022_jp"),
            ctype="text/plain; charset=ISO-2022-JP",
            cte="7bit",
        ),
        "ご注文について",
        "alice@customer.example",
        "確認をお願いします",
    )
)
case(
    Case(
        "no-charset-utf8",
        mail("no-charset-utf8", "No charset", GERMAN.encode(), ctype="text/plain", cte="8bit"),
        "No charset",
        "alice@customer.example",
        "Grüße aus München",
        repaired=True,
    )
)
case(
    Case(
        "no-content-type-sjis",
        mail(
            "no-content-type-sjis",
            "Undeclared",
            (JAPANESE * 2).encode("shift_jis"),
            ctype="text/plain",
            cte="8bit",
        ),
        "Undeclared",
        "alice@customer.example",
        "注文した商品",
        repaired=True,
    )
)
case(
    Case(
        "wrong-charset-sjis-as-utf8",
        mail(
            "wrong-charset-sjis-as-utf8",
            "Wrong label",
            (JAPANESE * 2).encode("shift_jis"),
            cte="8bit",
        ),
        "Wrong label",
        "alice@customer.example",
        "注文した商品",
        repaired=True,
    )
)
case(
    Case(
        "unknown-charset",
        mail(
            "unknown-charset",
            "Unknown charset",
            b"plain words only\r\n",
            ctype="text/plain; charset=x-no-such-charset",
        ),
        "Unknown charset",
        "alice@customer.example",
        "plain words only",
    )
)
case(
    Case(
        "base64-utf8",
        mail("base64-utf8", "Base64 body", b64(GERMAN.encode()), cte="base64"),
        "Base64 body",
        "alice@customer.example",
        "15 € ist leider falsch",
    )
)

# --- headers ---------------------------------------------------------------------

case(
    Case(
        "rfc2047-mixed",
        mail(
            "rfc2047-mixed",
            "=?utf-8?B?R3LDvMOfZQ==?= =?ISO-8859-1?Q?_aus_M=FCnchen?= [urgent]",
            b"see subject\r\n",
            sender="=?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@customer.example>",
        ),
        "Grüße aus München [urgent]",
        "jm@customer.example",
        "see subject",
    )
)
case(
    Case(
        "rfc2047-cp1252",
        mail("rfc2047-cp1252", "=?iso-8859-1?q?Rechnung_=80_50?=", b"euro\r\n"),
        "Rechnung € 50",
        "alice@customer.example",
        "euro",
    )
)
case(
    Case(
        "raw-utf8-header",
        mail(
            "raw-utf8-header",
            "Frage zur Lieferung – dringend ✓",
            b"body\r\n",
            sender="Zoë Ünal <zoe@customer.example>",
        ),
        "Frage zur Lieferung – dringend ✓",
        "zoe@customer.example",
        "body",
    )
)
case(
    Case(
        "encoded-newline-subject",
        mail("encoded-newline-subject", "=?utf-8?q?Hello=0D=0ABcc:_evil@x.example?=", b"x\r\n"),
        "Hello Bcc: evil@x.example",
        "alice@customer.example",
        "x",
    )
)
case(
    Case(
        "bare-lf-smuggle",
        b"From: alice@customer.example\r\nTo: support@example.com\r\n"
        b"Subject: Innocent\nBcc: victim@x.example\r\n"
        b"Message-ID: <bare-lf-smuggle@customer.example>\r\n\r\nbody\r\n",
        "Innocent Bcc: victim@x.example",
        "alice@customer.example",
        "body",
    )
)
case(
    Case(
        "no-message-id",
        mail("no-message-id", "No id", b"my client forgot the id\r\n", message_id=None),
        "No id",
        "alice@customer.example",
        "forgot the id",
    )
)
case(
    Case(
        "broken-headers",
        b"From: <<<@@@>>>\r\nTo: support@example.com\r\nDate: yesterday at noon\r\n"
        b"Subject: =?utf-8?B?!!!notbase64?=\r\nMessage-ID: <broken-headers@customer.example>\r\n"
        b'Content-Type: text/plain; charset="\r\n\r\nstill readable\r\n',
        "=?utf-8?B?!!!notbase64?=",
        None,
        "still readable",
        mail_from="alice@customer.example",
        # No trustworthy author: no ticket, and never the envelope sender instead.
        ticket=False,
    )
)
case(Case("empty-body", mail("empty-body", "Empty", b""), "Empty", "alice@customer.example", ""))
case(
    Case(
        "blank-body",
        mail("blank-body", "Blank", b"   \r\n\r\n"),
        "Blank",
        "alice@customer.example",
        "",
    )
)

# --- HTML ------------------------------------------------------------------------

_ct, _body = multipart(
    "alternative",
    "ALT",
    part("text/plain; charset=utf-8", b"Plain version of the answer\r\n"),
    part("text/html; charset=utf-8", b"<p>HTML <b>version</b> of the answer</p>"),
)
case(
    Case(
        "alternative",
        mail("alternative", "Alternative", _body, ctype=_ct),
        "Alternative",
        "alice@customer.example",
        "Plain version of the answer",
        html=("<b>version</b>",),
    )
)
case(
    Case(
        "html-only",
        mail(
            "html-only",
            "HTML only",
            b"<html><head><title>t</title><style>p{color:red}</style></head><body>"
            b"<p onclick='steal()'>Dear team,</p><ul><li>first point</li></ul>"
            b"<script>steal()</script><a href='javascript:steal()'>click</a></body></html>",
            ctype="text/html; charset=utf-8",
        ),
        "HTML only",
        "alice@customer.example",
        "* first point",
        html=("<li>first point</li>",),
        not_html=("steal", "<script", "<style", "onclick"),
    )
)
_ct, _body = multipart(
    "related",
    "REL",
    part("text/html; charset=utf-8", b'<p>Logo: <img src="cid:logo@customer.example"></p>'),
    part("image/png", b64(PNG), "Content-ID: <logo@customer.example>", cte="base64"),
)
case(
    Case(
        "cid-image",
        mail("cid-image", "Screenshot", _body, ctype=_ct),
        "Screenshot",
        "alice@customer.example",
        "Logo:",
        attachments=("part-1.2.png",),
        inline=("part-1.2.png",),
        html=('src="cid:logo@customer.example"',),
    )
)
case(
    Case(
        "remote-image",
        mail(
            "remote-image",
            "Newsletter style",
            b'<p>Hi <img src="https://tracker.example/open.gif?id=42"></p>',
            ctype="text/html; charset=utf-8",
        ),
        "Newsletter style",
        "alice@customer.example",
        "Hi",
        html=('src="x-firstline-remote:https://tracker.example/open.gif?id=42"',),
    )
)
_ct, _body = multipart(
    "mixed",
    "APPLE",
    part("text/plain; charset=utf-8", b"Before the picture.\r\n"),
    part(
        "image/png; name=photo.png",
        b64(PNG),
        "Content-Disposition: inline; filename=photo.png",
        cte="base64",
    ),
    part("text/plain; charset=utf-8", b"After the picture.\r\n"),
)
case(
    Case(
        "apple-inline",
        mail("apple-inline", "Photo", _body, ctype=_ct),
        "Photo",
        "alice@customer.example",
        "After the picture.",
        attachments=("photo.png",),
        inline=("photo.png",),
    )
)
_inner_ct, _inner = multipart(
    "related",
    "REL2",
    part("text/html; charset=utf-8", b'<p><img src="cid:once@x"></p>'),
    part("image/png", b64(PNG), "Content-ID: <once@x>", cte="base64"),
)
_ct, _body = multipart(
    "alternative",
    "ALT2",
    part("text/plain; charset=utf-8", b"[image]\r\n"),
    part(_inner_ct, _inner),
    part("image/png", b64(PNG), "Content-ID: <once@x>", cte="base64"),
)
case(
    Case(
        "inline-once",
        mail("inline-once", "Inline once", _body, ctype=_ct),
        "Inline once",
        "alice@customer.example",
        "[image]",
        attachments=("part-1.2.2.png",),
        inline=("part-1.2.2.png",),
    )
)

# --- attachments -------------------------------------------------------------------

_ct, _body = multipart(
    "mixed",
    "ATT",
    part("text/plain; charset=utf-8", b"Invoice attached.\r\n"),
    part(
        "application/pdf",
        b64(PDF),
        "Content-Disposition: attachment;\r\n filename*0*=utf-8''Rechnung%20M%C3%A4rz%20;\r\n"
        " filename*1*=2026.pdf",
        cte="base64",
    ),
)
case(
    Case(
        "rfc2231-filename",
        mail("rfc2231-filename", "Invoice", _body, ctype=_ct),
        "Invoice",
        "alice@customer.example",
        "Invoice attached.",
        attachments=("Rechnung März 2026.pdf",),
    )
)
_ct, _body = multipart(
    "mixed",
    "OUT",
    part("text/plain; charset=utf-8", b"Outlook attachment.\r\n"),
    part(
        'application/pdf; name="=?UTF-8?B?'
        + base64.b64encode("Überweisung.pdf".encode()).decode()
        + '?="',
        b64(PDF),
        'Content-Disposition: attachment; filename="=?UTF-8?B?'
        + base64.b64encode("Überweisung.pdf".encode()).decode()
        + '?="',
        cte="base64",
    ),
)
case(
    Case(
        "rfc2047-filename",
        mail("rfc2047-filename", "Transfer", _body, ctype=_ct),
        "Transfer",
        "alice@customer.example",
        "Outlook attachment.",
        attachments=("Überweisung.pdf",),
    )
)
_ct, _body = multipart(
    "mixed",
    "FWD",
    part("text/plain; charset=utf-8", b"Forwarding the original below.\r\n"),
    part(
        "message/rfc822",
        b"From: shop@vendor.example\r\nSubject: =?utf-8?q?Bestellbest=C3=A4tigung?= 123\r\n"
        b"Message-ID: <order-123@vendor.example>\r\n\r\nYour order 123 has shipped.\r\n",
    ),
)
case(
    Case(
        "attached-message",
        mail("attached-message", "Fwd: order", _body, ctype=_ct),
        "Fwd: order",
        "alice@customer.example",
        "Forwarding the original",
        attachments=("Bestellbestätigung 123.eml",),
    )
)
_ct, _body = multipart(
    "mixed",
    "FWD2",
    part("text/plain", b"see attached\r\n"),
    part("message/rfc822", b"From: x@vendor.example\r\n\r\nno subject here\r\n"),
)
case(
    Case(
        "attached-message-no-subject",
        mail("attached-message-no-subject", "Fwd", _body, ctype=_ct),
        "Fwd",
        "alice@customer.example",
        "see attached",
        attachments=("message.eml",),
    )
)
_ct, _body = multipart(
    "mixed",
    "TXT",
    part("text/plain; charset=utf-8", b"Log file attached.\r\n"),
    part(
        "text/plain; charset=utf-8",
        b"ERROR 42 at line 7\r\n",
        "Content-Disposition: attachment; filename=server.log",
    ),
    part(
        "text/calendar; method=REQUEST",
        b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
        'Content-Disposition: attachment; filename="invite.ics"',
    ),
)
case(
    Case(
        "text-attachments",
        mail("text-attachments", "Logs", _body, ctype=_ct),
        "Logs",
        "alice@customer.example",
        "Log file attached.",
        attachments=("invite.ics", "server.log"),
    )
)
case(
    Case(
        "hostile-filename",
        mail(
            "hostile-filename",
            "Path",
            multipart(
                "mixed",
                "HF",
                part("text/plain", b"x\r\n"),
                part(
                    "application/octet-stream",
                    b"data",
                    'Content-Disposition: attachment; filename="../../etc/passwd"',
                ),
            )[1],
            ctype=multipart("mixed", "HF")[0],
        ),
        "Path",
        "alice@customer.example",
        "x",
        attachments=("_.._etc_passwd",),
    )
)

_signed_ct, _signed = multipart(
    "signed",
    "SIG",
    part("text/plain; charset=utf-8", b"Signed request: please reset my password.\r\n"),
    part(
        "application/pkcs7-signature; name=smime.p7s",
        b64(b"0\x82signature-bytes"),
        "Content-Disposition: attachment; filename=smime.p7s",
        cte="base64",
    ),
)
case(
    Case(
        "smime-signed",
        mail(
            "smime-signed",
            "Password reset",
            _signed,
            ctype=_signed_ct.replace(
                "multipart/signed;",
                'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;',
            ),
        ),
        "Password reset",
        "alice@customer.example",
        "please reset my password",
        attachments=("smime.p7s",),
    )
)
case(
    Case(
        "koi8-r",
        mail(
            "koi8-r",
            "=?koi8-r?B?" + base64.b64encode("Заказ".encode("koi8_r")).decode() + "?=",
            "Здравствуйте, мой заказ до сих пор не доставлен.\r\n".encode("koi8_r"),
            ctype="text/plain; charset=KOI8-R",
            cte="8bit",
        ),
        "Заказ",
        "alice@customer.example",
        "мой заказ до сих пор не доставлен",
    )
)

# --- malformed structure --------------------------------------------------------------

case(
    Case(
        "missing-boundary",
        mail(
            "missing-boundary",
            "No boundary",
            b"text without any boundary\r\n",
            ctype="multipart/mixed",
        ),
        "No boundary",
        "alice@customer.example",
        "text without any boundary",
    )
)
case(
    Case(
        "unterminated-multipart",
        mail(
            "unterminated-multipart",
            "Cut off",
            b"--CUT\r\nContent-Type: text/plain\r\n\r\nthe first part survives\r\n"
            b"--CUT\r\nContent-Type: application/pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nJVBER",
            ctype='multipart/mixed; boundary="CUT"',
        ),
        "Cut off",
        "alice@customer.example",
        "the first part survives",
        attachments=("part-1.2.pdf",),
    )
)
_nested = part("text/plain", b"deep inside\r\n")
for _level in range(14):  # deep, yet within what the antivirus step lets through
    _nested = part(
        f'multipart/mixed; boundary="N{_level}"',
        b"--N%d\r\n%s\r\n--N%d--\r\n" % (_level, _nested, _level),
    )
case(
    Case(
        "deep-nesting",
        b"From: alice@customer.example\r\nTo: support@example.com\r\nSubject: Deep\r\n"
        b"Message-ID: <deep-nesting@customer.example>\r\nMIME-Version: 1.0\r\n" + _nested,
        "Deep",
        "alice@customer.example",
        "deep inside",
    )
)

# --- threading -----------------------------------------------------------------------

case(
    Case(
        "reply-in-reply-to",
        mail(
            "reply-in-reply-to",
            "Re: Printer on floor 3 is broken",
            b"It is still broken.\r\n",
            headers=[
                "In-Reply-To: <plain@customer.example>",
                "References: <plain@customer.example>",
            ],
        ),
        "Re: Printer on floor 3 is broken",
        "alice@customer.example",
        "still broken",
        thread="plain",
    )
)
case(
    Case(
        "reply-new-subject",
        mail(
            "reply-new-subject",
            "Another question entirely",
            b"Also, the scanner.\r\n",
            headers=["In-Reply-To: <plain@customer.example>"],
        ),
        "Another question entirely",
        "alice@customer.example",
        "the scanner",
        thread="plain",
    )
)
case(
    Case(
        "outlook-references-only",
        mail(
            "outlook-references-only",
            "AW: Rechnung",
            b"Danke!\r\n",
            headers=[
                "References: <unknown-older@x.example>\r\n <utf8-8bit@customer.example>",
                "Thread-Index: AQHZ1234567890abcdef==",
            ],
        ),
        "AW: Rechnung",
        "alice@customer.example",
        "Danke!",
        thread="utf8-8bit",
    )
)
case(
    Case(
        "newsletter-reply-alice",
        mail(
            "newsletter-reply-alice",
            "Re: Our November news",
            b"Unsubscribe me\r\n",
            headers=["In-Reply-To: <news-2026-11@news.example.com>"],
        ),
        "Re: Our November news",
        "alice@customer.example",
        "Unsubscribe me",
    )
)
case(
    Case(
        "newsletter-reply-bob",
        mail(
            "newsletter-reply-bob",
            "Re: Our November news",
            b"Great news\r\n",
            sender=BOB,
            headers=["In-Reply-To: <news-2026-11@news.example.com>"],
        ),
        "Re: Our November news",
        "bob@other.example",
        "Great news",
    )
)
case(
    Case(
        "token-from-participant",
        mail(
            "token-from-participant",
            "Re: [#{ticket:plain}] printer",
            b"Any update?\r\n",
            message_id="<token-from-participant@customer.example>",
        ),
        "Re: [#{ticket:plain}] printer",
        "alice@customer.example",
        "Any update?",
        thread="plain",
    )
)
case(
    Case(
        "token-from-stranger",
        mail(
            "token-from-stranger",
            "Re: [#{ticket:plain}] printer",
            b"I want in on this ticket\r\n",
            sender=BOB,
        ),
        "Re: [#{ticket:plain}] printer",
        "bob@other.example",
        "I want in on this ticket",
    )
)
case(
    Case(
        "other-mailbox",
        mail(
            "other-mailbox",
            "Re: Printer on floor 3 is broken",
            b"Billing question\r\n",
            to=BILLING,
            headers=["In-Reply-To: <plain@customer.example>"],
        ),
        "Re: Printer on floor 3 is broken",
        "alice@customer.example",
        "Billing question",
        rcpt=BILLING,
    )
)

# --- duplicates, auto-replies, bounces, loops ---------------------------------------------

case(
    Case(
        "duplicate-delivery",
        CASES[0].raw,
        CASES[0].subject,
        "alice@customer.example",
        "floor 3",
        ticket=False,
    )
)
case(
    Case(
        "same-id-new-content",
        mail(
            "same-id-new-content",
            "Printer again",
            b"A different body entirely\r\n",
            message_id="<plain@customer.example>",
        ),
        "Printer again",
        "alice@customer.example",
        "A different body entirely",
        thread=None,
    )
)
case(
    Case(
        "out-of-office",
        mail(
            "out-of-office",
            "Automatic reply: Printer",
            b"I am out of the office until Monday.\r\n",
            headers=["Auto-Submitted: auto-replied", "In-Reply-To: <plain@customer.example>"],
        ),
        "Automatic reply: Printer",
        "alice@customer.example",
        "out of the office",
        thread="plain",
        auto_reply=True,
        mail_from="",
    )
)
case(
    Case(
        "x-autoreply",
        mail("x-autoreply", "Vacation", b"On vacation.\r\n", headers=["X-Autoreply: yes"]),
        "Vacation",
        "alice@customer.example",
        "On vacation.",
        auto_reply=True,
    )
)
case(
    Case(
        "precedence-bulk",
        mail(
            "precedence-bulk",
            "Weekly digest",
            b"Your weekly digest.\r\n",
            sender="Digest <digest@news.example.com>",
            headers=[
                "Precedence: bulk",
                "List-Id: <digest.news.example.com>",
                "List-Unsubscribe: <mailto:leave@news.example.com>",
            ],
        ),
        "Weekly digest",
        "digest@news.example.com",
        "weekly digest",
        auto_reply=True,
    )
)
_ct, _body = multipart(
    "report",
    "DSN",
    part("text/plain", b"Delivery to the following recipient failed permanently.\r\n"),
    part(
        "message/delivery-status",
        b"Reporting-MTA: dns; mx.relay.example\r\n\r\n"
        b"Final-Recipient: rfc822; nobody@unknown.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n",
    ),
    part(
        "text/rfc822-headers",
        b"Message-ID: <never-sent-by-us@elsewhere.example>\r\nSubject: something\r\n",
    ),
)
case(
    Case(
        "bounce-unknown",
        mail(
            "bounce-unknown",
            "Undelivered Mail Returned to Sender",
            _body,
            sender="Mail Delivery System <MAILER-DAEMON@mx.relay.example>",
            ctype=_ct.replace(
                "multipart/report;", "multipart/report; report-type=delivery-status;"
            ),
        ),
        "Undelivered Mail Returned to Sender",
        "MAILER-DAEMON@mx.relay.example",
        "failed permanently",
        attachments=("part-1.2.txt", "part-1.3.txt"),
        ticket=False,
        bounce=True,
        mail_from="",
    )
)
case(
    Case(
        "own-mail-loop",
        mail(
            "own-mail-loop",
            "Re: [#1] printer",
            b"This is our own reply coming back.\r\n",
            sender="Example Support <support@example.com>",
            headers=["X-Loop: support@example.com", "Auto-Submitted: auto-replied"],
            message_id="<ticket-1.msg-1.loop@mx.firstline.test>",
        ),
        "Re: [#1] printer",
        "support@example.com",
        "our own reply coming back",
        ticket=False,
        auto_reply=True,
    )
)
