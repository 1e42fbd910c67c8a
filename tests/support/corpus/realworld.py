"""Real customers' odd mail: obsolete syntax, DSNs, long lines, header oddities, names.

Every message is written out here, byte by byte, with what must become of it:
the ticket's requester (the author DMARC judged), or a deliberate refusal with
its reason code. None of them may ever get a 4xx. Delivery status
notifications (``reports_on``) report on a message of the first round and
must join its ticket as a bounce, whatever form their From takes.

Senders are under ``customer.example`` (which publishes ``p=none``) unless a
case says otherwise; the tests publish the DNS that goes with them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

SUPPORT = "support@example.com"
DOMAIN = "customer.example"
DATE = "Tue, 03 Nov 2026 10:00:00 +0100"


@dataclass(frozen=True)
class Real:
    name: str
    raw: bytes
    # The ticket message's From address ("" for a null-sender bounce).
    requester: str
    mail_from: str = f"alice@{DOMAIN}"
    # A deliberate refusal at DATA: its reason code (the reply is 550 5.7.1).
    refused: str | None = None
    # For a DSN: the name of the first-round case whose Message-ID it reports on.
    reports_on: str | None = None

    @property
    def message_id(self) -> str:
        return f"<rw-{self.name}@{DOMAIN}>"


CASES: list[Real] = []


def head(name: str, sender: str, subject: str = "Question", extra: str = "") -> bytes:
    """The usual header block (CRLF), ``extra`` fields appended as written."""
    fields = (
        f"From: {sender}\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\nDate: {DATE}\r\n"
        f"Message-ID: <rw-{name}@{DOMAIN}>\r\nMIME-Version: 1.0\r\n{extra}"
    )
    return fields.encode("utf-8", "surrogateescape")  # "\udce9" is the raw byte 0xE9


def plain(name: str, sender: str, requester: str, *, subject: str = "Question",
          extra: str = "", body: bytes = b"Hello, my order has not arrived.\r\n",
          ctype: str = "text/plain; charset=utf-8", **kwargs: str) -> None:  # fmt: skip
    raw = head(name, sender, subject, extra) + f"Content-Type: {ctype}\r\n\r\n".encode() + body
    CASES.append(Real(name, raw, requester, **kwargs))


def raw_case(name: str, raw: bytes, requester: str, **kwargs: str) -> None:
    CASES.append(Real(name, raw, requester, **kwargs))


ALICE = f"alice@{DOMAIN}"


def respelled(name: str, field: bytes, spelling: bytes, content_type: bytes) -> None:
    """Alice's message with one field name spelled as an old or odd client does."""
    raw = head(name, f"Alice <{ALICE}>").replace(field, spelling)
    raw_case(name, raw + content_type + b": text/plain\r\n\r\nold client\r\n", ALICE)


# --- RFC 5322 section 4: obsolete syntax, still legal to receive --------------------

plain("obs-space-before-colon", f"Alice <{ALICE}>", ALICE, extra="X-Mailer : Eudora 4.3\r\n")
respelled("obs-subject-space-colon", b"Subject:", b"Subject :", b"Content-Type")
respelled("obs-from-space-colon", b"From:", b"From  :", b"Content-Type")
plain("obs-phrase-dots", f"John Q. Public <jqp@{DOMAIN}>", f"jqp@{DOMAIN}")
plain("obs-cfws-in-address", f"Alice <alice @ {DOMAIN}>", ALICE)
plain("obs-comment-after-address", f"{ALICE} (Alice Customer)", ALICE)
plain("obs-comment-inside-angle", f"Alice <alice(home)@{DOMAIN}>", ALICE)
plain("obs-comment-after-angle", f"Alice <{ALICE}> (Sales)", ALICE)
plain("obs-quoted-escapes", f'"Alice \\"Al\\" C." <{ALICE}>', ALICE)
plain("obs-two-digit-year", f"Alice <{ALICE}>", ALICE,
      extra="Resent-Date: 25 Nov 26 10:00 EST\r\n")  # fmt: skip
plain("obs-no-space-after-colon", f"Alice <{ALICE}>", ALICE, extra="X-Priority:3\r\n")
respelled("obs-uppercase-names", b"From:", b"FROM:", b"CONTENT-TYPE")
respelled("obs-lowercase-names", b"From:", b"from:", b"content-type")
plain("obs-folded-subject-tabs", f"Alice <{ALICE}>", ALICE,
      subject="A long subject\r\n\tfolded with a tab\r\n  and spaces")  # fmt: skip
plain("obs-folded-from", f"Alice Customer\r\n <{ALICE}>", ALICE)
plain("obs-whitespace-only-continuation", f"Alice <{ALICE}>", ALICE,
      extra="X-Note: first\r\n   \r\n second\r\n")  # fmt: skip
plain("obs-tab-after-colon", f"Alice <{ALICE}>", ALICE, extra="X-Tab:\tvalue\r\n")
plain("obs-undisclosed-to", f"Alice <{ALICE}>", ALICE, extra="Cc: undisclosed-recipients:;\r\n")
plain("obs-in-reply-to-phrase", f"Alice <{ALICE}>", ALICE,
      extra="In-Reply-To: Your message of Mon <abc@x.example>\r\n")  # fmt: skip
plain("obs-empty-cc", f"Alice <{ALICE}>", ALICE, extra="Cc:\r\n")
plain("obs-needless-quotes", f'Alice <"alice.c"@{DOMAIN}>', f"alice.c@{DOMAIN}")
plain("obs-quoted-local-space", f'Alice <"alice c"@{DOMAIN}>', f'"alice c"@{DOMAIN}')
plain("obs-trailing-dot-domain", f"Alice <alice@{DOMAIN}.>", ALICE)

# --- One author, whatever the display name holds ------------------------------------

plain("name-exchange-comma-latin1", f"=?iso-8859-1?Q?B=FCrling,=20Andreas?= <andreas@{DOMAIN}>",
      f"andreas@{DOMAIN}")  # fmt: skip
plain("name-exchange-comma-utf8", f"=?utf-8?Q?M=C3=BCller=2C_J=C3=BCrgen?= <juergen@{DOMAIN}>",
      f"juergen@{DOMAIN}")  # fmt: skip
plain("name-unquoted-comma", f"Doe, John <john@{DOMAIN}>", f"john@{DOMAIN}")
plain("name-unquoted-at", f"jane@laptop <jane@{DOMAIN}>", f"jane@{DOMAIN}")
plain("name-quoted-comma", f'"Doe, John" <john@{DOMAIN}>', f"john@{DOMAIN}")
plain("name-quoted-angle", f'"Sales <EMEA>" <sales@{DOMAIN}>', f"sales@{DOMAIN}")
plain("name-address-only-angle", f"<{ALICE}>", ALICE)
plain("name-bare-address", ALICE, ALICE)
plain("name-mixed-encoded-plain", f"=?utf-8?q?Ren=C3=A9?= Dupont <rene@{DOMAIN}>", f"rene@{DOMAIN}")
plain("name-encoded-then-quoted", f'=?utf-8?q?Dr=2E?= "Who" <who@{DOMAIN}>', f"who@{DOMAIN}")
plain("name-raw-utf8", f"Jürgen Müller <juergen.mueller@{DOMAIN}>", f"juergen.mueller@{DOMAIN}")
plain("name-raw-utf8-address", "Jöhn <jöhn@kunde.customer.example>", "jöhn@kunde.customer.example")
plain("name-subdomain", f"Support Team <team@eu.mail.{DOMAIN}>", f"team@eu.mail.{DOMAIN}")
plain("name-plus-address", f"Alice <alice+orders@{DOMAIN}>", f"alice+orders@{DOMAIN}")
plain("name-uppercase-domain", "Alice <Alice@CUSTOMER.EXAMPLE>", "Alice@customer.example")

# Encoded display names in several languages and charsets.
_NAMES = {
    "de": ("iso-8859-1", "Jürgen Weiß"),
    "fr": ("iso-8859-15", "Hélène Lefèvre"),
    "es": ("utf-8", "José Núñez"),
    "pt": ("iso-8859-1", "João Conceição"),
    "pl": ("iso-8859-2", "Łukasz Wróbel"),
    "cs": ("windows-1250", "Jiří Dvořák"),
    "tr": ("iso-8859-9", "Şükrü Çağlar"),
    "ru": ("koi8-r", "Иван Петров"),
    "uk": ("utf-8", "Олена Ковальчук"),
    "el": ("iso-8859-7", "Γιώργος Παπαδόπουλος"),
    "he": ("utf-8", "דוד כהן"),
    "ar": ("utf-8", "محمد علي"),
    "ja": ("iso-2022-jp", "山田太郎"),
    "zh-cn": ("gb2312", "张伟"),
    "zh-tw": ("big5", "陳美玲"),
    "ko": ("euc-kr", "김민준"),
    "th": ("utf-8", "สมชาย ใจดี"),
    "vi": ("utf-8", "Nguyễn Văn An"),
    "hi": ("utf-8", "राहुल शर्मा"),
    "sv": ("iso-8859-1", "Åsa Öberg, Kundtjänst"),
}
for _lang, (_charset, _name) in _NAMES.items():
    _data = _name.encode(_charset)
    _b = base64.b64encode(_data).decode()
    plain(f"name-{_lang}-b", f"=?{_charset}?B?{_b}?= <{_lang}.b@{DOMAIN}>", f"{_lang}.b@{DOMAIN}")
    _q = "".join(f"={byte:02X}" for byte in _data)
    plain(f"name-{_lang}-q", f"=?{_charset}?Q?{_q}?= <{_lang}.q@{DOMAIN}>", f"{_lang}.q@{DOMAIN}",
          subject=f"=?{_charset}?B?{_b}?=")  # fmt: skip

# --- Long lines: HTML and base64 as single lines, as real mailers send them ----------

plain("long-html-line", f"Alice <{ALICE}>", ALICE, ctype="text/html; charset=utf-8",
      body=b"<html><body>" + b"<p>order 123 status</p>" * 3000 + b"</body></html>\r\n")  # fmt: skip
plain("long-text-line", f"Alice <{ALICE}>", ALICE, body=b"word " * 2000 + b"\r\n")
plain("long-subject-line", f"Alice <{ALICE}>", ALICE, subject="Order " + "x" * 3000)
_REFERENCES = " ".join(f"<ref{i}@{DOMAIN}>" for i in range(300))
plain("long-references", f"Alice <{ALICE}>", ALICE, extra=f"References: {_REFERENCES}\r\n")
_blob = base64.b64encode(b"%PDF-1.4 " + bytes(range(256)) * 300).decode()
raw_case(
    "long-base64-unwrapped",
    head("long-base64-unwrapped", f"Alice <{ALICE}>")
    + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
    b"Content-Type: text/plain\r\n\r\nInvoice attached.\r\n--b1\r\n"
    b'Content-Type: application/pdf; name="invoice.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="invoice.pdf"\r\n\r\n'
    + _blob.encode()
    + b"\r\n--b1--\r\n",
    ALICE,
)
plain("long-qp-line", f"Alice <{ALICE}>", ALICE,
      extra="Content-Transfer-Encoding: quoted-printable\r\n",
      body=b"caf=C3=A9 " * 1500 + b"\r\n")  # fmt: skip
plain("long-header-folded-many", f"Alice <{ALICE}>", ALICE,
      extra="X-Long: " + "\r\n ".join(["part"] * 2000) + "\r\n")  # fmt: skip

# --- Header-block oddities -----------------------------------------------------------

raw_case(
    "odd-bom",
    b"\xef\xbb\xbf"
    + head("odd-bom", f"Alice <{ALICE}>")
    + b"Content-Type: text/plain\r\n\r\nbom\r\n",
    ALICE,
)
raw_case(
    "odd-8bit-field-name",
    head("odd-8bit-field-name", f"Alice <{ALICE}>")
    + "X-Prioritét: hoch\r\nContent-Type: text/plain\r\n\r\numlaut in a name\r\n".encode(),
    ALICE,
)
raw_case(
    "odd-binary-after-header",
    head("odd-binary-after-header", f"Alice <{ALICE}>")
    + b"Content-Type: application/octet-stream\r\n\r\n\x00\xff\xfe\x80binary\x1b\r\n",
    ALICE,
)
raw_case(
    "odd-lf-line-endings",
    (
        head("odd-lf-line-endings", f"Alice <{ALICE}>") + b"Content-Type: text/plain\r\n\r\nlf\r\n"
    ).replace(b"\r\n", b"\n"),
    ALICE,
)
raw_case(
    "odd-mbox-from-line",
    f"From {ALICE} Tue Nov  3 10:00:00 2026\r\n".encode()
    + head("odd-mbox-from-line", f"Alice <{ALICE}>")
    + b"Content-Type: text/plain\r\n\r\nfrom a mailbox file\r\n",
    ALICE,
)
raw_case(
    "odd-line-without-colon",
    head("odd-line-without-colon", f"Alice <{ALICE}>")
    + b"this line is no header field\r\nContent-Type: text/plain\r\n\r\nbody\r\n",
    ALICE,
)
raw_case(
    "odd-nul-in-header",
    head("odd-nul-in-header", f"Alice <{ALICE}>", extra="X-Junk: a\x00b\r\n")
    + b"Content-Type: text/plain\r\n\r\nnul\r\n",
    ALICE,
)
raw_case(
    "odd-many-received",
    b"".join(
        f"Received: from hop{i} (hop{i}.{DOMAIN} [192.0.2.{i}]) by hop{i + 1}; {DATE}\r\n".encode()
        for i in range(60)
    )
    + head("odd-many-received", f"Alice <{ALICE}>")
    + b"Content-Type: text/plain\r\n\r\nmany hops\r\n",
    ALICE,
)
plain("odd-duplicate-subject", f"Alice <{ALICE}>", ALICE, extra="Subject: second subject\r\n")
plain("odd-8bit-subject", f"Alice <{ALICE}>", ALICE, subject="Grüße, Rechnung über 15 €")
raw_case(
    "odd-latin1-raw-subject",
    head("odd-latin1-raw-subject", f"Alice <{ALICE}>", subject="caf\udce9")
    + b"Content-Type: text/plain\r\n\r\nundeclared latin-1\r\n",
    ALICE,
)
plain("odd-broken-encoded-word", f"Alice <{ALICE}>", ALICE, subject="=?utf-8?B?!!!notbase64?=")
plain("odd-unknown-charset-name", f"=?x-unknown?q?Alice?= <{ALICE}>", ALICE)
plain("odd-no-date", f"Alice <{ALICE}>", ALICE, extra="X-Date-Missing: yes\r\n")
plain("odd-bad-date", f"Alice <{ALICE}>", ALICE, extra="Resent-Date: yesterday at noon\r\n")
plain("odd-trailing-space-name", f"Alice <{ALICE}>", ALICE, extra="X-Spaced : value \r\n")
plain("odd-lone-cr-in-value", f"Alice <{ALICE}>", ALICE, extra="X-Pad: a\rb\r\n")
plain("odd-lone-lf-in-value", f"Alice <{ALICE}>", ALICE, extra="X-Pad: a\nb\r\n")
raw_case(
    "odd-no-body",
    head("odd-no-body", f"Alice <{ALICE}>") + b"Content-Type: text/plain\r\n",
    ALICE,
)
raw_case(
    "odd-deep-nesting",
    head("odd-deep-nesting", f"Alice <{ALICE}>")
    + b'Content-Type: multipart/mixed; boundary="n0"\r\n\r\n'
    + b"".join(
        f'--n{i}\r\nContent-Type: multipart/mixed; boundary="n{i + 1}"\r\n\r\n'.encode()
        for i in range(25)
    )
    + b"--n25\r\nContent-Type: text/plain\r\n\r\ndeep\r\n"
    + b"".join(f"--n{i}--\r\n".encode() for i in range(25, -1, -1)),
    ALICE,
)
plain("odd-winmail-style", f"=?utf-8?Q?Kundendienst_M=C3=BCller_GmbH?= <service@{DOMAIN}>",
      f"service@{DOMAIN}", extra="X-MS-Has-Attach: \r\nX-MS-TNEF-Correlator: \r\n")  # fmt: skip

# --- Deliberate refusals: no single trustworthy author ---------------------------------

plain("refuse-two-authors", f"a@{DOMAIN}, b@{DOMAIN}", "", refused="from_malformed")
plain("refuse-no-address", "Customer Service", "", refused="from_malformed")
plain("refuse-group", f"Team: a@{DOMAIN};", "", refused="from_malformed")

# --- RFC 3464 delivery status notifications, with the From forms of common MTAs ------

_REPORTED = [
    ("dsn-postfix", "MAILER-DAEMON@mail.customer.example (Mail Delivery System)",
     "MAILER-DAEMON@mail.customer.example", "name-de-b"),
    ("dsn-exim", "Mail Delivery System <Mailer-Daemon@mx.customer.example>",
     "Mailer-Daemon@mx.customer.example", "name-fr-b"),
    ("dsn-sendmail", "Mail Delivery Subsystem <MAILER-DAEMON@relay.customer.example>",
     "MAILER-DAEMON@relay.customer.example", "name-es-b"),
    ("dsn-gmail", "Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
     "mailer-daemon@googlemail.com", "name-pt-b"),
    ("dsn-exchange", "Microsoft Outlook <postmaster@customer.example>",
     "postmaster@customer.example", "name-pl-b"),
    ("dsn-m365", "postmaster@customer.onmicrosoft.com", "postmaster@customer.onmicrosoft.com",
     "name-cs-b"),
    ("dsn-qmail", "MAILER-DAEMON@qmail.customer.example", "MAILER-DAEMON@qmail.customer.example",
     "name-tr-b"),
    ("dsn-null-angle", "<>", "", "name-ru-b"),
    ("dsn-null-named", "Mail Delivery System <>", "", "name-uk-b"),
    ("dsn-daemon-comment", "MAILER-DAEMON (Mail Delivery System)", "", "name-el-b"),
    ("dsn-daemon-bare", "MAILER-DAEMON", "", "name-he-b"),
    ("dsn-postmaster-bare", "postmaster", "", "name-ar-b"),
]  # fmt: skip


def _dsn(name: str, sender: str, original: str, status: str = "5.1.1") -> bytes:
    return (
        f"From: {sender}\r\nTo: {SUPPORT}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {DATE}\r\nMessage-ID: <rw-{name}@{DOMAIN}>\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="dsn"\r\n\r\n'
        "--dsn\r\nContent-Type: text/plain\r\n\r\n"
        "This is the mail system. Your message could not be delivered.\r\n\r\n"
        "--dsn\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mail.{DOMAIN}\r\n\r\n"
        f"Final-Recipient: rfc822; gone@{DOMAIN}\r\nAction: failed\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <gone@customer.example>: Recipient address rejected\r\n"
        "\r\n--dsn\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: {SUPPORT}\r\nTo: gone@{DOMAIN}\r\nSubject: Re: Question\r\n"
        f"Message-ID: <rw-{original}@{DOMAIN}>\r\n\r\n--dsn--\r\n"
    ).encode()


for _name, _sender, _requester, _original in _REPORTED:
    CASES.append(Real(_name, _dsn(_name, _sender, _original), _requester, mail_from="",
                      reports_on=_original))  # fmt: skip
