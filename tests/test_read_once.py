"""What the verifier takes from the header block already read, against reading again.

The listener hands the verifier its reading of the message
(:func:`policy.message.headerblock.reread` stands for reading ``block.raw``
again), and :func:`policy.message.headerblock.as_message` builds the standard
library's message itself for mail that is neither multipart nor message/*,
for the forwarding scan (compat32) and for the batch's reading of a message
(the default policy, :mod:`policy.message.mimetree`); every message here,
well-formed or hostile, must come out as reading and parsing again make it,
with the same forwarding evidence, the same scan and the same ticket.
"""

from __future__ import annotations

import email
import email.policy
from email.policy import Policy, compat32

import pytest

from policy.antivirus import scan_tree
from policy.message import headerblock, mimetree
from policy.message.headerblock import as_message
from policy.message.mime import parse_tree
from policy.verify.forwarding import inspect
from tests.support.corpus.cases import CASES
from tests.support.forwarding_corpus import forwards, replies
from tests.support.signing import message

FROM = b"From: a@example.com\r\n"
HOSTILE = [
    message(),
    b"From: a@example.com\r\nSubject: Fwd: x\r\n\r\n---------- Forwarded message ---------\r\n"
    b"From: Alice <alice@example.org>\r\nDate: today\r\nSubject: y\r\n",
    # Breaks the parser's line splitting knows besides CR and LF, in a field and in the body.
    b"From: a@example.com\r\nSubject: one\x0ctwo\r\nX: \x1cthree\r\n\r\nbody\x0b\x0c\x1d\x1e\r\n",
    b"From: a@example.com\r\n\r\nbody\x0cline\x85\r\n",
    # Obsolete syntax, 8-bit fields, duplicated and odd Content-Type fields.
    b"From : a@example.com\r\nSubject \t: Fwd: \xc3\xa9t\xe9\r\n\r\nbody\r\n",
    FROM + b"Content-Type: text/plain\r\nContent-Type: multipart/mixed\r\n\r\nx\r\n",
    FROM + b"Content-Type: MultiPart/Mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    FROM + b"Content-Type: multipart/mixed\r\n\r\nno boundary\r\n",
    FROM + b"Content-Type: Message/RFC822\r\n\r\nFrom: b@example.org\r\n\r\nx\r\n",
    FROM + b"Content-Type: text\r\n\r\nno slash\r\n",
    FROM + b"Content-Transfer-Encoding: base64\r\n\r\nLS0tLS0tLS0tLSBGb3J3YXJkZWQ=\r\n",
    FROM + b"Content-Type: text/html; charset=nonesuch\r\n\r\n<p>hi</p>\r\n",
    # Folded huge fields, empty values, whitespace-only continuation lines, no body.
    b"From: a@example.com\r\nSubject:" + b"\r\n x" * 20_000 + b"\r\n\r\nbody\r\n",
    b"From: a@example.com\r\nSubject:\r\nX-Empty: \r\n \t\r\n\r\n",
    b"From: a@example.com\r\n\r\n",
    b"From: a@example.com\nSubject: bare LF\n\nbody\nline\r\nmixed\r",
    b"\xef\xbb\xbfFrom a@example.com Tue\r\nFrom: a@example.com\r\n\xff: x\r\n\r\nbody\r\n",
    b"Subject: no separator at all\r\nFrom: a@example.com",
]


def _samples() -> list[bytes]:
    cases = [c.message.as_bytes() for c in (*forwards(), *replies())]
    return [*HOSTILE, *(c.raw for c in CASES), *cases]


def _lf_header(lines: int) -> bytes:
    """A header block of LF line breaks; its canonical block, less the empty line,
    is ``24 + 4 * lines`` bytes."""
    return b"From: a@example.com\nX: " + b"\n z" * lines + b"\n\nbody\n"


EDGE = (headerblock.MAX_HEADER_BYTES - 24) // 4


@pytest.mark.parametrize(
    "raw",
    [
        *_samples(),
        _lf_header(EDGE),  # at the limit once CRLF
        _lf_header(EDGE + 1),  # over it once CRLF: reading again refuses it
        _lf_header(EDGE // 2),
        b"From: a@example.com\r\nX: " + b"y" * (headerblock.MAX_HEADER_BYTES - 30) + b"\r\n\r\n",
        b"\r\n" + b"x" * (headerblock.MAX_HEADER_BYTES + 10),
    ],
)
def test_reread_is_reading_again(raw: bytes) -> None:
    try:
        block = headerblock.read(raw)
    except headerblock.HeaderTooLarge:
        return
    try:
        again = headerblock.read(block.raw)
    except headerblock.HeaderTooLarge:
        with pytest.raises(headerblock.HeaderTooLarge):
            headerblock.reread(block)
        return
    shortcut = headerblock.reread(block)
    assert (shortcut.raw, shortcut.fields, shortcut.body_offset) == (
        again.raw, again.fields, again.body_offset
    )  # fmt: skip


@pytest.mark.parametrize("policy", [compat32, email.policy.default], ids=["compat32", "default"])
@pytest.mark.parametrize("raw", _samples())
def test_built_message_is_the_parsed_one(raw: bytes, policy: Policy) -> None:
    block = headerblock.read(raw)
    try:
        parsed = email.message_from_bytes(block.raw, policy=policy)
    except Exception as exc:  # what a malformed field makes the registry raise
        with pytest.raises(type(exc)):
            as_message(block, policy)
        return
    built = as_message(block, policy)
    assert type(built) is type(parsed) and built.policy is parsed.policy
    assert built._headers == parsed._headers
    assert [(n, str(v)) for n, v in built.items()] == [(n, str(v)) for n, v in parsed.items()]
    assert built.is_multipart() == parsed.is_multipart()
    assert built.get_content_type() == parsed.get_content_type()
    if not parsed.is_multipart():
        assert built.get_payload() == parsed.get_payload()
        assert built.get_payload(decode=True) == parsed.get_payload(decode=True)
    if policy is compat32:
        for sender in ("bob@customer.example", "SRS0=x=y=example.org=a@fwd.example"):
            assert inspect(built, sender) == inspect(parsed, sender)


@pytest.mark.parametrize("raw", _samples())
def test_the_batch_reads_a_built_message_as_a_parsed_one(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan and the ticket of a message read with the shortcut, against the
    same message read with the parser every time."""
    built = mimetree.read(raw)
    with monkeypatch.context() as parser_only:
        parser_only.setattr(
            headerblock, "as_message", lambda b, p: email.message_from_bytes(b.raw, policy=p)
        )
        parsed = mimetree.read(raw)
    assert type(built.failure) is type(parsed.failure)
    assert scan_tree(built) == scan_tree(parsed)
    assert parse_tree(built, mail_from="bob@customer.example") == parse_tree(
        parsed, mail_from="bob@customer.example"
    )


def test_a_single_part_message_is_built_without_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built path is taken (the comparison above would pass if every message
    fell back to the parser); a multipart one still goes to the parser."""
    plain = headerblock.read(b"From: a@example.com\r\nSubject: s\r\n\r\nForwarded by Bob\r\n")
    multipart = headerblock.read(
        b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\n\r\nhi\r\n--b--\r\n"
    )

    def refused(raw: bytes, **_: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(email, "message_from_bytes", refused)
    built = as_message(plain)
    assert built["Subject"] == "s" and built.get_payload() == "Forwarded by Bob\r\n"
    with pytest.raises(AssertionError, match="parsed"):
        as_message(multipart)
    tree = mimetree.read(plain.raw)  # the batch's reading: the default policy
    assert tree.failure is None and tree.root is not None
    assert parse_tree(tree).text == "Forwarded by Bob\n"
