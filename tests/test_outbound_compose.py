"""The reply as the customer's mail client will parse it, hostile input included."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.outbound.compose import (
    Draft,
    InvalidReply,
    Sender,
    compose,
    new_message_id,
    recipients,
    reply_subject,
    to_bytes,
)
from ingest.outbound.dkimsign import SigningFailed, dkim_sign
from policy.config.sending import DkimConfig
from policy.message.autoreply import is_own_mail
from tests.support.signing import rsa_key

SENDER = Sender("Example Support", "support@example.com")
DATE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def draft(**changes: object) -> Draft:
    values: dict[str, object] = {
        "ticket_id": 12,
        "message_id": "<ticket-12.reply-34.abc@mx.example.com>",
        "subject": "Printer on fire",
        "to": ("Customer <customer@example.net>",),
        "text": "We are on it.\n",
        "references": ("<first@example.net>", "<second@example.net>"),
    }
    values.update(changes)
    return Draft(**values)  # type: ignore[arg-type]


def parsed(msg: EmailMessage) -> EmailMessage:
    # Mail clients store with local line ends; parse the way they do.
    wire = to_bytes(msg).replace(b"\r\n", b"\n")
    result = email.message_from_bytes(wire, policy=policy.default)
    assert isinstance(result, EmailMessage)
    return result


def test_reply_threads_and_names_the_ticket() -> None:
    msg = parsed(compose(draft(cc=("boss@example.net",)), SENDER, DATE))
    assert msg["From"] == "Example Support <support@example.com>"
    assert msg["To"] == "Customer <customer@example.net>"
    assert msg["Cc"] == "boss@example.net"
    assert msg["Subject"] == "Re: [#12] Printer on fire"
    assert msg["Message-ID"] == "<ticket-12.reply-34.abc@mx.example.com>"
    assert msg["In-Reply-To"] == "<second@example.net>"
    assert msg["References"] == "<first@example.net> <second@example.net>"
    assert msg["Auto-Submitted"] == "no"
    assert msg["X-Loop"] == "support@example.com"
    assert msg["Date"] == "Fri, 02 Jan 2026 03:04:05 +0000"
    assert msg.get_content_type() == "text/plain"
    assert recipients(msg) == ("customer@example.net", "boss@example.net")


def test_wire_format_uses_crlf_only() -> None:
    raw = to_bytes(compose(draft(text="one\ntwo\n"), SENDER, DATE))
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_html_alternative_is_sanitised() -> None:
    html = '<p onclick="x()">Hi <script>alert(1)</script><a href="javascript:x">a</a></p>'
    msg = parsed(compose(draft(html=html), SENDER, DATE))
    assert msg.get_content_type() == "multipart/alternative"
    text_part = msg.get_body(("plain",))
    html_part = msg.get_body(("html",))
    assert text_part is not None and html_part is not None
    assert text_part.get_content() == "We are on it.\n"
    body = html_part.get_content()
    assert "Hi" in body
    assert "script" not in body and "onclick" not in body and "javascript" not in body


def test_html_replies_carry_no_remote_images_nor_our_placeholders_for_them() -> None:
    html = (
        '<p>Hi</p><img src="https://tracker.example/p.gif" alt="pixel">'
        '<img src="x-firstline-remote:https://tracker.example/q.gif">'  # quoted from a ticket
    )
    html_part = parsed(compose(draft(html=html), SENDER, DATE)).get_body(("html",))
    assert html_part is not None
    body = html_part.get_content()
    assert "Hi" in body and "tracker.example" not in body and "x-firstline" not in body


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Re: RE: Printer", "Re: [#12] Printer"),
        ("Re: [#12] Printer", "Re: [#12] Printer"),
        ("AW: Re: [#12] Re: Printer", "Re: [#12] Printer"),
        ("Fwd: [#12] [#12] Printer [#13]", "Re: [#12] Printer [#13]"),
        ("", "Re: [#12]"),
        ("Re:", "Re: [#12]"),
        ("Regarding printers", "Re: [#12] Regarding printers"),
    ],
)
def test_subject_prefixes_do_not_stack(subject: str, expected: str) -> None:
    assert reply_subject(subject, 12) == expected


def test_hostile_subject_is_flattened_to_one_header() -> None:
    hostile = "Hello\r\nBcc: victim@example.org\r\n\r\nInjected body\u2028X-Evil: 1"
    msg = parsed(compose(draft(subject=hostile), SENDER, DATE))
    assert msg["Subject"] == "Re: [#12] Hello Bcc: victim@example.org Injected body X-Evil: 1"
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg.get_content() == "We are on it.\n"


@given(st.text())
def test_any_subject_gives_exactly_the_headers_we_set(subject: str) -> None:
    msg = parsed(compose(draft(subject=subject), SENDER, DATE))
    assert sorted(set(msg.keys())) == sorted(
        {
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "In-Reply-To",
            "References",
            "Auto-Submitted",
            "X-Loop",
            "Content-Type",
            "Content-Transfer-Encoding",
            "MIME-Version",
        }
    )
    assert "\n" not in str(msg["Subject"]) and str(msg["Subject"]).startswith("Re: [#12]")


@pytest.mark.parametrize(
    "address",
    [
        "customer@example.net\r\nBcc: victim@example.org",
        "customer@example.net\nBcc: victim@example.org",
        "Customer <customer@example.net>\r\nX-Evil: 1",
        "customer@example.net, victim@example.org",
        "customer@example.net; victim@example.org",
        "not an address",
        "",
        "customer@exa mple.net",
        "jörg@example.net",
        '"weird\r\n" <customer@example.net>',
    ],
)
def test_hostile_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidReply):
        compose(draft(to=(address,)), SENDER, DATE)
    with pytest.raises(InvalidReply):
        compose(draft(cc=(address,)), SENDER, DATE)


def test_a_reply_needs_a_recipient() -> None:
    with pytest.raises(InvalidReply):
        compose(draft(to=()), SENDER, DATE)


def test_display_names_are_quoted_not_interpreted() -> None:
    msg = parsed(compose(draft(to=('"Doe, Jane" <jane@example.net>',)), SENDER, DATE))
    assert recipients(msg) == ("jane@example.net",)
    sender = Sender('Support "A"\r\nBcc: x@example.org', "support@example.com")
    msg = parsed(compose(draft(), sender, DATE))
    assert msg["Bcc"] is None
    assert msg["From"].addresses[0].display_name == 'Support "A" Bcc: x@example.org'


def test_malformed_references_are_dropped_and_bad_own_id_refused() -> None:
    refs = ("<ok@example.net>", "garbage", "<a@b>\r\nX-Evil: 1", "<>")
    msg = parsed(compose(draft(references=refs), SENDER, DATE))
    assert msg["References"] == "<ok@example.net>"
    assert msg["X-Evil"] is None
    with pytest.raises(InvalidReply):
        compose(draft(message_id="<x@y>\r\nBcc: v@example.org"), SENDER, DATE)


def test_own_message_ids_carry_the_ticket_and_are_unique() -> None:
    first = new_message_id(12, 34, "mx.example.com")
    assert first.startswith("<ticket-12.reply-34.") and first.endswith("@mx.example.com>")
    assert first != new_message_id(12, 34, "mx.example.com")


def test_dkim_signature_verifies_with_the_published_key(tmp_path: Path) -> None:
    pem, record = rsa_key(2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem)
    raw = to_bytes(compose(draft(), SENDER, DATE))
    signed = dkim_sign(raw, DkimConfig(selector="s1", key_file=key_file), SENDER.address)
    assert signed.endswith(raw)
    looked_up: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        looked_up.append(name)
        return record.encode()

    assert dkim.verify(signed, dnsfunc=dns)
    assert looked_up == [b"s1._domainkey.example.com."]
    tampered = signed.replace(b"Printer on fire", b"Printer is fine")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_missing_dkim_key_is_a_permanent_failure(tmp_path: Path) -> None:
    config = DkimConfig(selector="s1", key_file=tmp_path / "absent.pem")
    with pytest.raises(SigningFailed, match=r"absent\.pem"):
        dkim_sign(b"From: a@example.com\r\n\r\nx\r\n", config, "a@example.com")


def test_our_reply_coming_back_is_recognised_as_our_own() -> None:
    message_id = new_message_id(12, 34, "mx.example.com")
    msg = parsed(compose(draft(message_id=message_id), SENDER, DATE))
    headers = [(k, str(v)) for k, v in msg.items()]
    assert is_own_mail(headers, None, ["Support@Example.com"], [])
    assert is_own_mail([], msg["Message-ID"], [], ["mx.example.com"])
