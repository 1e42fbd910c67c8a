"""Arbitrary and mutated MIME never makes the parser raise or emit unstorable text,
and never makes a batch raise or lose a message."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from ingest.work.batch import Batch
from ingest.work.tickets import file_message
from policy.config.model import Config
from policy.message.mime import parse_message
from policy.message.parsed import ParsedMessage
from storage.engine import make_engine
from storage.models import QueueEntry, QueueState, StoredMessage, TicketMessage
from storage.schema import prepare
from tests.support.corpus.cases import CASES
from tests.support.mailflow import enqueue

TOKENS = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\x00",
    b"\xff\xfe",
    b"--",
    b"--B\r\n",
    b"=?",
    b"?=",
    b"=?utf-8?b?",
    b"=?x?q?=ZZ",
    b"Content-Type: multipart/mixed; boundary=B\r\n",
    b"Content-Type: message/rfc822\r\n",
    b'Content-Type: text/html; charset="shift_jis"\r\n',
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename*0*=bad''%FF%; filename*1=x\r\n",
    b"Content-ID: <\r\n",
    b"charset=",
    b";",
    b"<",
    b">",
    b"@",
    b'"',
    b"(",
    b"\\",
    b'<img src="cid:',
    b"<script>",
    b"From: <<@>>\r\n",
    b"Date: Mon, 99 Foo 99999 99:99:99 +9999\r\n",
]

PLAIN_TEXT = st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass"))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(CASES)).raw)
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["insert", "delete", "flip", "truncate", "repeat"]))
        if action == "insert":
            raw[position:position] = draw(st.sampled_from(TOKENS) | PLAIN_TEXT)
        elif action == "delete":
            del raw[position : position + draw(st.integers(1, 20))]
        elif action == "flip" and position < len(raw):
            raw[position] = draw(st.integers(0, 255))
        elif action == "truncate":
            del raw[position:]
        else:
            raw[position:position] = raw[position : position + draw(st.integers(1, 200))]
    return bytes(raw)


@st.composite
def mime_tree(draw: st.DrawFn, depth: int = 0) -> bytes:
    headers = draw(st.lists(st.sampled_from(TOKENS) | PLAIN_TEXT, max_size=4))
    if depth < 3 and draw(st.booleans()):
        children = draw(st.lists(mime_tree(depth + 1), min_size=0, max_size=3))
        body = b"".join(b"--B%d\r\n" % depth + child + b"\r\n" for child in children)
        body += b"--B%d--\r\n" % depth
        head = b"Content-Type: multipart/%s; boundary=B%d\r\n" % (
            draw(st.sampled_from([b"mixed", b"alternative", b"related", b"report"])),
            depth,
        )
    else:
        body = draw(st.binary(max_size=80) | PLAIN_TEXT)
        head = b"Content-Type: %s\r\n" % draw(
            st.sampled_from(
                [b"text/plain", b"text/html; charset=gb2312", b"image/png", b"message/rfc822"]
            )
        )
    return head + b"".join(headers) + b"\r\n" + body


def assert_storable(parsed: ParsedMessage) -> None:
    """Every string can be written to PostgreSQL as UTF-8 text."""
    for value in dataclasses.astuple(parsed):
        for text in _strings(value):
            text.encode("utf-8")
            assert "\x00" not in text
    assert parsed.message_id.startswith("<") and parsed.message_id.endswith(">")
    assert "\r" not in parsed.subject and "\n" not in parsed.subject
    for attachment in parsed.attachments:
        assert attachment.filename and "/" not in attachment.filename
        assert attachment.size == len(attachment.data)
    assert not any(d.startswith("unparseable") for d in parsed.defects), parsed.defects


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (tuple, list)):
        return [s for item in value for s in _strings(item)]
    return []


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(raw: bytes) -> None:
    assert_storable(parse_message(raw))


@FUZZ
@given(mutated(), st.sampled_from([None, "", "<>", "a@b.example"]))
def test_mutated_corpus(raw: bytes, mail_from: str | None) -> None:
    assert_storable(parse_message(raw, mail_from=mail_from))


@FUZZ
@given(mime_tree())
def test_generated_mime(raw: bytes) -> None:
    assert_storable(parse_message(b"From: a@b.example\r\nMIME-Version: 1.0\r\n" + raw))


def test_batch_files_or_fails_every_message(make_config: Callable[..., Config]) -> None:
    """Nothing escapes the batch, and every message ends as a ticket message
    (or a recognised bounce or loop, or a message without a trustworthy author,
    never filed under the envelope sender) with its raw bytes kept."""
    config = make_config()
    engine = make_engine(config.storage.url)
    prepare(engine)
    batch = Batch(engine, file_message)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(mutated() | st.binary(max_size=500) | mime_tree(), min_size=1, max_size=4),
        st.sampled_from(["", "a@b.example"]),
    )
    def check(raws: list[bytes], mail_from: str) -> None:
        with Session(engine) as session, session.begin():
            ids = [enqueue(session, raw, mail_from=mail_from) for raw in raws]
        asyncio.run(batch.drain(config))
        with Session(engine) as session:
            for entry_id, raw in zip(ids, raws, strict=True):
                entry = session.get(QueueEntry, entry_id)
                assert entry is not None
                stored = session.get(StoredMessage, entry.message_id)
                assert stored is not None and stored.raw == raw
                # A failed entry would keep its raw bytes (checked above) for a
                # retry, but no input should make the pipeline fail at all. The
                # antivirus step may quarantine (too deep MIME, say): also kept.
                assert entry.state in (QueueState.DONE, QueueState.QUARANTINED), entry.last_error
                if entry.state == QueueState.QUARANTINED:
                    continue
                if entry.ticket_message_id is None:
                    parsed = parse_message(raw, mail_from=mail_from)
                    assert entry.outcome  # trace says why
                    assert (
                        parsed.from_ is None
                        or parsed.bounce.is_bounce
                        or parsed.header("x-loop") is not None
                        or (parsed.message_id.endswith("@mx.firstline.test>"))
                    )
                else:
                    assert session.get(TicketMessage, entry.ticket_message_id) is not None

    try:
        check()
    finally:
        engine.dispose()
