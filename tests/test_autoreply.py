"""Auto-reply, bounce and own-mail classification on real message shapes."""

from __future__ import annotations

import email
import email.policy

import pytest

from policy.message.autoreply import (
    classify_auto_reply,
    classify_bounce,
    is_own_mail,
    loop_marker,
)


@pytest.mark.parametrize(
    "header",
    [
        ("Auto-Submitted", "auto-replied"),
        ("Auto-Submitted", "auto-generated; owner-email=x@y"),
        ("Auto-Submitted", "AUTO-NOTIFIED"),
        ("X-Autoreply", "yes"),
        ("X-Autorespond", "vacation"),
        ("X-Autoresponder", "1"),
        ("Precedence", "bulk"),
        ("Precedence", "junk"),
        ("Precedence", "list"),
        ("Precedence", "auto_reply"),
        ("X-Precedence", "bulk"),
        ("X-Auto-Response-Suppress", "All"),
        ("X-Auto-Response-Suppress", "DR, OOF, AutoReply"),
        ("X-Loop", "helpdesk@other.example"),
    ],
)
def test_auto_reply_markers(header: tuple[str, str]) -> None:
    result = classify_auto_reply([("From", "a@b.example"), header])
    assert result.is_auto
    assert len(result.reasons) == 1


@pytest.mark.parametrize(
    "header",
    [
        ("Auto-Submitted", "no"),
        ("Auto-Submitted", " No "),
        ("X-Autoreply", "no"),
        ("Precedence", "first-class"),
        ("X-Auto-Response-Suppress", "RN, NRN"),
        ("Subject", "Automatic reply: I am away"),
    ],
)
def test_human_mail_is_not_an_auto_reply(header: tuple[str, str]) -> None:
    assert not classify_auto_reply([header]).is_auto


def test_list_and_bulk_markers() -> None:
    result = classify_auto_reply(
        [("List-Id", "News <news.example.com>"), ("List-Unsubscribe", "<mailto:u@x>")]
    )
    assert (result.is_auto, result.is_bulk, result.list_id) == (
        False,
        True,
        "News <news.example.com>",
    )


DSN = b"""From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r
To: support@example.com\r
Subject: Undelivered Mail Returned to Sender\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r
\r
--R\r
Content-Type: text/plain\r
\r
Your message could not be delivered.\r
--R\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.example.net\r
Arrival-Date: Tue, 3 Nov 2026 10:00:00 +0000\r
\r
Final-Recipient: rfc822; gone@customer.example\r
Original-Recipient: rfc822; Gone@customer.example\r
Action: failed\r
Status: 5.1.1\r
Diagnostic-Code: smtp; 550 5.1.1 <gone@customer.example>: Recipient address\r
 rejected: User unknown\r
\r
--R\r
Content-Type: text/rfc822-headers\r
\r
From: support@example.com\r
To: gone@customer.example\r
Subject: Re: [#12] your order\r
Message-ID: <ticket-12.msg-34.abc@mx.example.com>\r
\r
--R--\r
"""


def _msg(raw: bytes) -> email.message.Message:
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_delivery_status_report_is_parsed() -> None:
    bounce = classify_bounce(_msg(DSN), [], "MAILER-DAEMON@mx.example.net", "")
    assert bounce.is_bounce
    assert "multipart/report delivery-status" in bounce.reasons
    assert "null envelope sender" in bounce.reasons
    assert bounce.original_message_ids == ("<ticket-12.msg-34.abc@mx.example.com>",)
    assert bounce.status == "5.1.1"
    assert bounce.diagnostic == (
        "550 5.1.1 <gone@customer.example>: Recipient address rejected: User unknown"
    )
    assert bounce.recipients[0].final_recipient == "gone@customer.example"
    assert bounce.recipients[0].action == "failed"


def test_bounce_with_attached_original_message() -> None:
    raw = (
        b"From: postmaster@relay.example\r\nContent-Type: multipart/mixed; boundary=Z\r\n\r\n"
        b"--Z\r\nContent-Type: text/plain\r\n\r\nDelivery failed\r\n"
        b"--Z\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Message-ID: <sent-1@mx.example.com>\r\nSubject: hi\r\n\r\nbody\r\n--Z--\r\n"
    )
    bounce = classify_bounce(_msg(raw), [], "postmaster@relay.example", None)
    assert bounce.is_bounce
    assert bounce.reasons == ("From postmaster@relay.example",)
    assert bounce.original_message_ids == ("<sent-1@mx.example.com>",)
    assert not bounce.is_certain
    assert classify_bounce(_msg(raw), [], "postmaster@relay.example", "").is_certain


def test_qmail_style_bounce_names_the_original_in_the_text() -> None:
    raw = (
        b"From: mailer-daemon@q.example\r\nX-Failed-Recipients: a@x.example, b@x.example\r\n"
        b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n"
        b"--Z\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n"
        b"--Z\r\nContent-Type: text/plain\r\n\r\n--- Below this line is a copy\r\n"
        b"Message-ID: <out-9@mx.example.com>\r\n--Z--\r\n"
    )
    headers = [("X-Failed-Recipients", "a@x.example, b@x.example")]
    bounce = classify_bounce(_msg(raw), headers, "mailer-daemon@q.example", None)
    assert bounce.original_message_ids == ("<out-9@mx.example.com>",)
    assert [r.final_recipient for r in bounce.recipients] == ["a@x.example", "b@x.example"]


def test_null_sender_auto_reply_is_not_a_bounce() -> None:
    headers = [("Auto-Submitted", "auto-replied")]
    raw = b"Auto-Submitted: auto-replied\r\n\r\nI am away.\r\n"
    assert not classify_bounce(_msg(raw), headers, "alice@customer.example", "").is_bounce


def test_ordinary_mail_is_not_a_bounce() -> None:
    raw = b"From: alice@customer.example\r\n\r\nHello\r\n"
    for mail_from in (None, "alice@customer.example"):
        assert not classify_bounce(_msg(raw), [], "alice@customer.example", mail_from).is_bounce


def test_null_sender_alone_is_a_bounce() -> None:
    raw = b"From: robot@relay.example\r\n\r\nundeliverable\r\n"
    bounce = classify_bounce(_msg(raw), [], "robot@relay.example", "<>")
    assert bounce.reasons == ("null envelope sender",)


def test_own_mail_is_recognised() -> None:
    ours = ["Support@Example.com"]
    assert is_own_mail([("X-Loop", loop_marker("support@example.com"))], None, ours, [])
    assert is_own_mail([], "<ticket-1.msg-2.x@MX.example.com>", ours, ["mx.example.com"])
    assert not is_own_mail([("X-Loop", "other@list.example")], "<a@b>", ours, ["mx.example.com"])
    assert not is_own_mail([], None, ours, ["mx.example.com"])
