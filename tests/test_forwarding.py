"""Forwarding evidence on real-looking messages from common mail clients."""

from __future__ import annotations

import email
from email.message import EmailMessage, Message

import pytest

from policy.verify.forwarding import body_text, forward_prefix, inspect
from policy.verify.verdict import ForwardingKind
from tests.support.signing import message

USER = "Bob Forwarder <bob@customer.example>"


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw)


def plain(subject: str, body: str, sender: str = USER) -> Message:
    return parse(message(sender=sender, subject=subject, body=body.replace("\n", "\r\n")))


def html_mail(subject: str, markup: str) -> Message:
    msg = EmailMessage()
    msg["From"] = USER
    msg["To"] = "support@help.example"
    msg["Subject"] = subject
    msg.set_content("see the HTML part")
    msg.add_alternative(markup, subtype="html")
    return parse(msg.as_bytes())


GMAIL = """FYI, see below.

---------- Forwarded message ---------
From: Alice Original <alice@example.com>
Date: Tue, 24 Nov 2026 at 10:00
Subject: Printer on fire
To: <bob@customer.example>

The printer is on fire again.
"""

GMAIL_FR = """---------- Message transféré ---------
De : Alice Original <alice@example.com>
Date: mar. 24 nov. 2026 à 10:00
Subject: Imprimante

Bonjour
"""

OUTLOOK = """Please help this customer.

________________________________
From: Alice Original <alice@example.com>
Sent: Tuesday, November 24, 2026 10:00 AM
To: Bob Forwarder <bob@customer.example>
Subject: Printer on fire

The printer is on fire again.
"""

OUTLOOK_DE = """Bitte bearbeiten.

Von: Alice Original <alice@example.com>
Gesendet: Dienstag, 24. November 2026 10:00
An: Bob Forwarder <bob@customer.example>
Betreff: Drucker brennt

Der Drucker brennt schon wieder.
"""

OUTLOOK_CLASSIC = """-----Original Message-----
From: alice@example.com
Sent: 24 November 2026 10:00
Subject: Printer
"""

APPLE = """Look at this.

Begin forwarded message:

> From: Alice Original <alice@example.com>
> Subject: Printer on fire
> Date: 24 November 2026 at 10:00:00 CET
> To: bob@customer.example
>
> The printer is on fire again.
"""

APPLE_DE = """Anfang der weitergeleiteten Nachricht:

Von: Alice Original <alice@example.com>
Betreff: Drucker
"""

THUNDERBIRD = """

-------- Forwarded Message --------
Subject: 	Printer on fire
Date: 	Tue, 24 Nov 2026 10:00:00 +0100
From: 	Alice Original <alice@example.com>
To: 	bob@customer.example

The printer is on fire again.
"""

YAHOO = """Sent from Yahoo Mail

----- Forwarded Message -----
From: Alice Original <alice@example.com>
To: bob@customer.example
Sent: Tuesday, November 24, 2026, 10:00:00 AM GMT+1
Subject: Printer on fire
"""

OUTLOOK_HTML = """<html><body><p>Please help.</p>
<div id="divRplyFwdMsg"><hr><b>From:</b> Alice Original &lt;alice@example.com&gt;<br>
<b>Sent:</b> Tuesday, November 24, 2026 10:00 AM<br><b>To:</b> Bob<br>
<b>Subject:</b> Printer on fire</div><div>The printer is on fire.</div></body></html>"""


@pytest.mark.parametrize(
    ("client", "subject", "body"),
    [
        ("gmail", "Fwd: Printer on fire", GMAIL),
        ("gmail, prefix removed", "Printer on fire", GMAIL),
        ("gmail french", "TR: Imprimante", GMAIL_FR),
        ("outlook", "FW: Printer on fire", OUTLOOK),
        ("outlook german", "WG: Drucker brennt", OUTLOOK_DE),
        ("outlook classic", "Fw: Printer", OUTLOOK_CLASSIC),
        ("apple mail", "Fwd: Printer on fire", APPLE),
        ("apple mail german", "WG: Drucker", APPLE_DE),
        ("thunderbird", "Fwd: Printer on fire", THUNDERBIRD),
        ("yahoo", "Fw: Printer on fire", YAHOO),
        ("outlook spanish prefix", "RV: Printer on fire", OUTLOOK),
        ("dutch prefix", "Doorst: Printer on fire", OUTLOOK),
        ("tagged subject", "[EXTERNAL] FW: Printer on fire", OUTLOOK),
    ],
)
def test_manual_forwards_are_detected(client: str, subject: str, body: str) -> None:
    evidence = inspect(plain(subject, body), "bob@customer.example")
    assert evidence.kind is ForwardingKind.MANUAL, client
    assert "From is the forwarding user, not the quoted original sender" in evidence.manual


def test_outlook_html_forward_is_detected() -> None:
    evidence = inspect(html_mail("FW: Printer on fire", OUTLOOK_HTML), "bob@customer.example")
    assert evidence.kind is ForwardingKind.MANUAL
    assert "quoted header block" in evidence.manual


def test_forward_as_attachment_is_detected() -> None:
    outer = EmailMessage()
    outer["From"] = USER
    outer["To"] = "support@help.example"
    outer["Subject"] = "FW: Printer on fire"
    outer.set_content("See attached.")
    outer.add_attachment(parse(message()), filename="original.eml")
    evidence = inspect(parse(outer.as_bytes()), "bob@customer.example")
    assert evidence.kind is ForwardingKind.MANUAL
    assert "attached message/rfc822" in evidence.manual


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        # Outlook quotes the same header block when replying.
        ("RE: Printer on fire", OUTLOOK),
        ("AW: Drucker brennt", OUTLOOK_DE),
        # A forwarding prefix alone proves nothing.
        ("Fwd: ideas for the printer", "Hello, what about a new printer?\n"),
        ("Printer on fire", "The printer is on fire again.\n"),
    ],
)
def test_replies_and_ordinary_mail_are_not_manual_forwards(subject: str, body: str) -> None:
    assert inspect(plain(subject, body), "alice@example.com").kind is ForwardingKind.DIRECT


def test_a_bounce_report_is_not_a_forward() -> None:
    report = EmailMessage()
    report["From"] = "MAILER-DAEMON@mx.example"
    report["Subject"] = "Fwd: Undelivered Mail"
    report.set_content("Delivery failed.")
    report.add_attachment(parse(message()), filename="original.eml")
    report.replace_header("Content-Type", 'multipart/report; report-type="delivery-status"')
    assert inspect(parse(report.as_bytes()), "").kind is ForwardingKind.DIRECT


@pytest.mark.parametrize(
    ("headers", "mail_from", "sign"),
    [
        ((("X-Forwarded-To", "support@help.example"),), "alice@example.com", "x-forwarded-to"),
        ((("X-MS-Exchange-ForwardingLoop", "a@b"),), "alice@example.com", "forwardingloop"),
        ((("Resent-From", "bob@customer.example"),), "bob@customer.example", "resent-from"),
        (
            (("Delivered-To", "bob@customer.example"), ("Delivered-To", "support@help.example")),
            "alice@example.com",
            "2 Delivered-To",
        ),
        ((), "SRS0=HHH=TT=example.com=alice@customer.example", "SRS"),
    ],
)
def test_native_forwarding_signs(
    headers: tuple[tuple[str, str], ...], mail_from: str, sign: str
) -> None:
    evidence = inspect(parse(message(extra=headers)), mail_from)
    assert evidence.kind is ForwardingKind.NATIVE
    assert any(sign.lower() in s.lower() for s in evidence.native)


def test_manual_wins_over_native_signs() -> None:
    raw = message(
        sender=USER, subject="Fwd: x", body=GMAIL, extra=(("X-Forwarded-To", "support@h"),)
    )
    assert inspect(parse(raw), "bob@customer.example").kind is ForwardingKind.MANUAL


@pytest.mark.parametrize(
    ("subject", "prefix"),
    [
        ("Fwd: x", "Fwd"),
        ("FW: x", "FW"),
        ("WG: x", "WG"),
        ("TR : x", "TR"),
        ("Ti: x", "Ti"),
        ("ENC: x", "ENC"),
        ("VS: x", "VS"),
        ("Fwd[2]: x", "Fwd"),
        ("Re: x", None),
        ("Fwdx: x", None),
        ("Forward planning", None),
    ],
)
def test_forward_prefix(subject: str, prefix: str | None) -> None:
    assert forward_prefix(subject) == prefix


def test_hostile_messages_do_not_crash() -> None:
    garbage = (
        b"From: \xff\xfe\r\nSubject: Fwd: \xe9\r\nContent-Type: text/plain; charset=x-unknown\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64\r\n"
    )
    assert inspect(parse(garbage), "").kind is ForwardingKind.DIRECT
    huge = plain("Fwd: big", "x" * 500_000 + "\n" + GMAIL)
    text, attached = body_text(huge)
    assert len(text) <= 200_000 and attached == []


OUTLOOK_COM_BLOCK = (
    "Done.\n\n" + "_" * 32 + "\nFrom: Alice Original <alice@example.com>\n"
    "Sent: Wednesday, October 27, 2021 9:31 AM\nSubject: Printer on fire\n\nIt burns.\n"
)


@pytest.mark.parametrize(
    ("language", "kind"),
    [("da-DK", ForwardingKind.MANUAL), ("nb-NO", ForwardingKind.MANUAL),
     ("fi-FI", ForwardingKind.DIRECT)],
)  # fmt: skip
def test_vs_forwards_in_danish_and_norwegian_but_replies_in_finnish(
    language: str, kind: ForwardingKind
) -> None:
    msg = plain("VS: Printer on fire", OUTLOOK_COM_BLOCK)
    msg["Content-Language"] = language
    assert inspect(msg, "").kind is kind


def test_finnish_labels_make_vs_a_reply() -> None:
    body = (
        "Kiitos.\n\nLähettäjä: Alice Original <alice@example.com>\nLähetetty: 27. lokakuuta\n"
        "Vastaanottaja: Bob\nAihe: Tulostin\n\nSe palaa.\n"
    )
    assert inspect(plain("VS: Tulostin", body), "").kind is ForwardingKind.DIRECT
    assert inspect(plain("VL: Tulostin", body), "").kind is ForwardingKind.MANUAL


def test_an_old_forward_quoted_in_a_reply_is_history_but_forwarding_a_thread_is_not() -> None:
    quoted_forward = "Fixed.\n\n" + OUTLOOK.split("\n\n", 1)[1] + "\n" + GMAIL
    assert inspect(plain("RE: FW: Printer on fire", quoted_forward), "").kind is (
        ForwardingKind.DIRECT
    )
    evidence = inspect(plain("Fwd: Re: Printer on fire", GMAIL), "")
    assert evidence.kind is ForwardingKind.MANUAL
    assert evidence.original_sender == "alice@example.com"


def test_a_digest_is_not_a_forward() -> None:
    msg = plain("Users Digest, Vol 12, Issue 3", "Message: 1\n" + GMAIL)
    msg["List-Id"] = "<users.lists.example>"
    assert inspect(msg, "").kind is ForwardingKind.DIRECT
    assert inspect(plain("Users Digest, Vol 12, Issue 3", GMAIL), "").kind is (
        ForwardingKind.MANUAL  # no list headers: a person forwarded a digest
    )


def test_the_attached_original_names_the_sender() -> None:
    outer = EmailMessage()
    outer["From"] = USER
    outer["Subject"] = "FW: Printer on fire"
    outer.set_content("See attached.")
    outer.add_attachment(parse(message(sender="Carol <carol@buyer.example>")))
    evidence = inspect(parse(outer.as_bytes()), "bob@customer.example")
    assert evidence.original_sender == "carol@buyer.example"


def test_encoded_subject_prefixes_are_read() -> None:
    raw = message(sender=USER, subject="=?utf-8?b?" + "6L2s5Y+ROiDmiZPljbDmnLo=" + "?=",
                  body=OUTLOOK.replace("\n", "\r\n"))  # fmt: skip
    assert inspect(parse(raw), "").kind is ForwardingKind.MANUAL  # 转发: 打印机


@pytest.mark.parametrize(
    "body",
    [
        "a <" * 66_000,
        "From: x\n" * 25_000,
        ("From: " + "Betreff:" * 48 + "\n") * 500,
        ("<" + "a" * 70 + "@" + "b." * 100 + ":\n") * 700,
        ("-- " * 130 + "\n") * 500,
        ">\n" * 100_000,
    ],
    ids=["brackets", "from-lines", "glued-labels", "attribution-bait", "dashes", "quotes"],
)
def test_hostile_bodies_are_read_in_one_bounded_pass(body: str) -> None:
    evidence = inspect(plain("Fwd: x", body), "")
    assert evidence.kind is ForwardingKind.DIRECT
    assert evidence.original_sender is None


@pytest.mark.parametrize(
    "markup", ["<" * 500_000, "<div " * 100_000, "<br" * 150_000, "<style>" * 60_000 + GMAIL]
)
def test_hostile_html_is_read_in_one_bounded_pass(markup: str) -> None:
    text, _attached = body_text(html_mail("Fwd: x", markup))
    assert len(text) <= 200_000
