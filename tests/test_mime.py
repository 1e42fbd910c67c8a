"""parse_message: identity, digests, headers and structure beyond the corpus."""

from __future__ import annotations

import email
import email.policy
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone

from ingest.work.reading import examine
from policy.config.model import LimitsConfig
from policy.message.mime import DERIVED_ID_DOMAIN, decode_header_value, parse_message
from tests.support.corpus.cases import DATE, PNG, b64, multipart, part

BASE = (
    b"From: Alice <alice@customer.example>\r\nTo: support@example.com\r\n"
    b"Cc: Carol <carol@customer.example>, dave@customer.example\r\n"
    b"Reply-To: replies@customer.example\r\nSubject: Hello\r\n"
    b"Date: " + DATE.encode() + b"\r\n"
)


def test_addresses_date_and_ids() -> None:
    raw = BASE + (
        b"Message-ID: <m1@customer.example>\r\nIn-Reply-To: <p2@x> <p3@x>\r\n"
        b"References: <r1@x>\r\n <r2@x> <p2@x>\r\n\r\nbody\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.from_ is not None and str(parsed.from_) == "Alice <alice@customer.example>"
    cc = ["Carol <carol@customer.example>", "dave@customer.example"]
    assert [str(a) for a in parsed.cc] == cc
    assert [a.address for a in parsed.reply_to] == ["replies@customer.example"]
    assert parsed.date == datetime(2026, 11, 3, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert parsed.message_id == "<m1@customer.example>"
    assert parsed.in_reply_to == "<p2@x>"
    assert parsed.references == ("<r1@x>", "<r2@x>", "<p2@x>")
    # Most specific first: the In-Reply-To IDs, then References newest first.
    assert parsed.reply_ids == ("<p2@x>", "<p3@x>", "<r2@x>", "<r1@x>")
    assert parsed.header("subject") == "Hello"


def test_date_without_zone_is_utc_and_nonsense_is_none() -> None:
    raw = b"Date: Tue, 03 Nov 2026 10:00:00 -0000\r\n\r\nx"
    assert parse_message(raw).date == datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
    assert parse_message(b"Date: the day after tomorrow\r\n\r\nx").date is None


def test_derived_message_id_ignores_trace_headers() -> None:
    body = BASE + b"\r\nno id here\r\n"
    first = parse_message(b"Received: from a by b; " + DATE.encode() + b"\r\n" + body)
    again = parse_message(
        b"Received: from c by d; Wed, 04 Nov 2026 10:00:00 +0000\r\n"
        b"Delivered-To: support@example.com\r\n" + body.replace(b"\r\n", b"\n")
    )
    assert first.message_id_derived and again.message_id_derived
    assert first.message_id == again.message_id
    assert first.message_id.endswith(f"@{DERIVED_ID_DOMAIN}>")
    assert first.content_digest == again.content_digest
    other = parse_message(BASE + b"\r\na different text\r\n")
    assert other.message_id != first.message_id


def test_same_message_id_with_different_content_has_a_different_digest() -> None:
    one = parse_message(BASE + b"Message-ID: <same@x>\r\n\r\nfirst\r\n")
    two = parse_message(BASE + b"Message-ID: <same@x>\r\n\r\nsecond\r\n")
    assert one.message_id == two.message_id
    assert one.content_digest != two.content_digest


def test_lone_cr_in_header_block_cannot_add_a_header() -> None:
    raw = b"To: support@example.com\rBcc: victim@x.example\r\nSubject: x\r\n\r\nbody"
    parsed = parse_message(raw)
    assert [a.address for a in parsed.to] == ["support@example.com"]
    assert parsed.header("bcc") is None


def test_lf_only_messages_still_parse() -> None:
    parsed = parse_message(b"From: a@b.example\nSubject: unix\n\nline one\nline two\n")
    assert (parsed.subject, parsed.text) == ("unix", "line one\nline two\n")


def test_header_decoding() -> None:
    assert decode_header_value("=?utf-8?q?a?=  \r\n =?utf-8?q?b?=") == ("ab", False)
    assert decode_header_value("=?utf-8?q?a?= x =?utf-8?q?b?=") == ("a x b", False)
    assert decode_header_value("=?x-unknown?q?caf=C3=A9?=") == ("café", True)
    assert decode_header_value("caf\udcc3\udca9") == ("café", False)
    latin1 = "Grüße aus München, schönes Wetter heute".encode("cp1252")
    assert decode_header_value(latin1.decode("ascii", "surrogateescape")) == (
        "Grüße aus München, schönes Wetter heute",
        True,
    )
    assert decode_header_value("nul\x00byte") == ("nul byte", False)
    # A name the stdlib half-decoded: real letters next to escaped bytes.
    assert decode_header_value("J\udcc3\udcbcrgen M\xfcller") == ("Jürgen Müller", False)
    assert decode_header_value("x\ud800y") == ("x?y", True)


def test_attached_message_is_kept_whole_and_parses_back() -> None:
    ctype, body = multipart(
        "mixed",
        "B",
        part("text/plain", b"see below\r\n"),
        part("message/rfc822", b"Subject: Inner\r\nMessage-ID: <inner@x>\r\n\r\ninner text\r\n"),
    )
    parsed = parse_message(BASE + f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    assert "inner text" not in parsed.text
    [eml] = parsed.attachments
    assert (eml.filename, eml.content_type, eml.inline) == ("Inner.eml", "message/rfc822", False)
    inner = email.message_from_bytes(eml.data, policy=email.policy.default)
    assert inner["message-id"] == "<inner@x>"
    assert inner.get_content().strip() == "inner text"


def test_cid_reference_makes_an_image_inline_and_stores_its_bytes() -> None:
    ctype, body = multipart(
        "mixed",
        "M",
        part("text/html", b'<img src="cid:pic@x">'),
        part("image/png", b64(PNG), "Content-ID: <pic@x>", cte="base64"),
    )
    parsed = parse_message(BASE + f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    [image] = parsed.attachments
    assert (image.inline, image.content_id, image.data) == (True, "pic@x", PNG)
    assert parsed.html == '<img src="cid:pic@x">'


def test_bounce_uses_the_envelope_sender() -> None:
    raw = b"From: robot@relay.example\r\nSubject: failure\r\n\r\nundeliverable\r\n"
    assert parse_message(raw, mail_from="").bounce.is_bounce
    assert not parse_message(raw, mail_from="robot@relay.example").bounce.is_bounce
    assert not parse_message(raw).bounce.is_bounce


def test_nothing_at_all() -> None:
    parsed = parse_message(b"")
    assert parsed.message_id_derived
    assert (parsed.subject, parsed.text, parsed.html, parsed.from_) == ("", "", None, None)


def test_thousands_of_mime_levels_keep_the_headers() -> None:
    # The stdlib parser recurses once per level and runs out of stack here.
    levels = 1000
    raw = (
        b"From: a@b.example\r\nSubject: deep\r\nContent-Type: multipart/mixed; boundary=B0\r\n\r\n"
    )
    for level in range(1, levels):
        raw += b"--B%d\r\nContent-Type: multipart/mixed; boundary=B%d\r\n\r\n" % (level - 1, level)
    parsed = parse_message(raw + b"--B%d\r\n\r\nhello\r\n" % (levels - 1))
    assert (parsed.subject, parsed.text, parsed.attachments) == ("deep", "", ())
    assert parsed.from_ is not None and parsed.from_.address == "a@b.example"
    assert parsed.defects == ("body not parsed: RecursionError",)


def test_parts_below_the_depth_limit_are_not_read() -> None:
    nested = part("text/plain", b"too deep\r\n")
    for level in range(40):
        nested = part(
            f"multipart/mixed; boundary=N{level}",
            b"--N%d\r\n%s\r\n--N%d--\r\n" % (level, nested, level),
        )
    parsed = parse_message(b"Subject: deep\r\nMIME-Version: 1.0\r\n" + nested)
    assert parsed.subject == "deep"
    assert parsed.text == ""
    assert len(parsed.defects) == 1 and "nested deeper than 30" in parsed.defects[0]


def test_work_beyond_the_limits_is_cut_and_recorded() -> None:
    limits = LimitsConfig(max_addresses=100, max_mime_parts=10, max_html_depth=16)
    cc = "".join(f"Cc: u{i}@x.example\r\n" for i in range(150))
    parts = "".join(f"--p\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(20))
    raw = (
        f"From: a@x.example\r\n{cc}MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="p"\r\n\r\n{parts}--p--\r\n'
    ).encode()
    parsed = parse_message(raw, limits=limits)
    assert len(parsed.cc) == 100  # the author is read once, apart from the budget
    assert "part 8" in parsed.text and "part 9" not in parsed.text  # the multipart is one
    assert {d.split(":")[0] for d in parsed.defects} == {"cc", "part 1.10"}
    html = "<div>" * 300 + "deep" + "</div>" * 300
    deep = parse_message(f"Content-Type: text/html\r\n\r\n{html}".encode(), limits=limits)
    assert "deep" in deep.text
    assert deep.defects == ("html: nested deeper than 16 elements, flattened",)


def test_reading_many_parts_keeps_few_parsed_fields() -> None:
    """The reading remembers parsed fields so that no part's Content-Type is parsed
    a dozen times, but only a few at once: each holds a parse tree some fifty times
    the size of its value, and 900 long ones held together cost over 11 MiB here."""
    name = "n" * 200
    parts = "".join(
        f'--p\r\nContent-Type: application/octet-stream; name="{name}{i}.bin"\r\n\r\nAAAA\r\n'
        for i in range(900)
    )
    head = 'From: a@x.example\r\nContent-Type: multipart/mixed; boundary="p"\r\n\r\n'
    raw = f"{head}{parts}--p--\r\n"
    examine(raw.encode(), None, LimitsConfig())  # imports and first-use caches
    tracemalloc.start()
    try:
        scan, parsed = examine(raw.encode(), None, LimitsConfig())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert scan.passes and len(parsed.attachments) == 900
    assert peak < 16 * len(raw)
