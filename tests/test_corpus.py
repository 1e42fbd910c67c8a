"""Every corpus message through the parser: subject, sender, text, attachments, flags."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ingest.cli import main
from ingest.work.reading import examine
from policy.antivirus import Outcome, Part, scan_message_bytes, scan_parts, scan_tree
from policy.config.model import Config, LimitsConfig
from policy.message import mimetree
from policy.message.mime import parse_message, parse_tree
from tests.support.corpus.cases import CASES, Case
from tests.support.mailflow import deliver, queue_outcomes
from tests.support.server import running
from tests.support.stores import BASE_CONFIG, merge


def test_corpus_is_big_enough_and_named_uniquely() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_parse(case: Case) -> None:
    parsed = parse_message(case.raw, mail_from=case.envelope_sender)
    assert parsed.subject == case.subject
    assert (parsed.from_.address if parsed.from_ else None) == case.sender
    if case.snippet:
        assert case.snippet in parsed.text
    else:
        assert parsed.text.strip() == ""
    assert sorted(a.filename for a in parsed.attachments) == sorted(case.attachments)
    assert sorted(a.filename for a in parsed.attachments if a.inline) == sorted(case.inline)
    assert parsed.is_auto_reply == case.auto_reply
    assert parsed.bounce.is_bounce == case.bounce
    assert parsed.charset_repaired == case.repaired, parsed.charset_repairs
    for fragment in case.html:
        assert parsed.html is not None and fragment in parsed.html
    for fragment in case.not_html:
        assert parsed.html is not None and fragment not in parsed.html
    for attachment in parsed.attachments:
        assert attachment.size == len(attachment.data)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_one_reading_for_the_scan_and_the_parse(case: Case) -> None:
    """The batch reads a message once for the scanner and the parser: sharing the
    reading changes neither answer, whichever walks it first, and what a clean
    message stores is what was scanned."""
    scan = scan_message_bytes(case.raw)
    parsed = parse_message(case.raw, mail_from=case.envelope_sender)
    assert examine(case.raw, case.envelope_sender, LimitsConfig()) == (scan, parsed)
    tree = mimetree.read(case.raw)
    assert parse_tree(tree, mail_from=case.envelope_sender) == parsed
    assert scan_tree(tree) == scan
    if scan.outcome is Outcome.CLEAN:
        stored = [
            Part(a.filename, a.content_type, a.data)
            for a in parsed.attachments
            if not a.content_type.startswith("message/")
        ]
        assert scan_parts(stored) == scan


def _cli(config_file: str, *args: str) -> Any:
    result = CliRunner().invoke(main, [*args, "--json", "-c", config_file])
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.output.splitlines()]
    return objects if args[-1] == "list" else objects[0]


def _substitute(case: Case, ticket_of_case: dict[str, int]) -> Case:
    """Fill in ``{ticket:NAME}`` with the number of NAME's ticket."""

    def fill(text: str) -> str:
        return re.sub(r"\{ticket:([\w-]+)\}", lambda m: str(ticket_of_case[m.group(1)]), text)

    raw = fill(case.raw.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
    return dataclasses.replace(case, raw=raw, subject=fill(case.subject))


def test_corpus_end_to_end(make_config: Callable[..., Config], db_url: str, tmp_path: Path) -> None:
    """Each case over SMTP to a running server, one batch, the result read with the CLI."""
    config_file = tmp_path / "firstline.yaml"
    config_file.write_text(yaml.safe_dump(merge(BASE_CONFIG, {"storage": {"url": db_url}})))
    first = [c for c in CASES if not c.second_round]
    second = [c for c in CASES if c.second_round]
    ticket_of_case: dict[str, int] = {}
    message_of_case: dict[str, int | None] = {}
    sent: list[Case] = []
    with running(make_config()) as server:
        for batch in (first, second):
            batch = [_substitute(c, ticket_of_case) for c in batch]
            for case in batch:
                deliver(server, case.raw, rcpt=case.rcpt, mail_from=case.envelope_sender)
            server.process()
            entries = queue_outcomes(server)[len(sent) :]
            assert [e.state.value for e, _ in entries] == ["done"] * len(batch)
            sent += batch
            for case, (entry, _) in zip(batch, entries, strict=True):
                message_of_case[case.name] = entry.ticket_message_id
            listed = _cli(str(config_file), "tickets", "list")
            shown = [_cli(str(config_file), "tickets", "show", str(t["id"])) for t in listed]
            where = {m["id"]: (t, m) for t in shown for m in t["messages"]}
            for case in batch:
                if message_of_case[case.name] in where:
                    ticket_of_case[case.name] = where[message_of_case[case.name]][0]["id"]
    earlier: set[int | None] = set()
    for case in sent:
        message_id = message_of_case[case.name]
        if not case.ticket:
            assert message_id is None or message_id in earlier, case.name
            continue
        assert message_id not in earlier and message_id in where, case.name
        earlier.add(message_id)
        ticket, message = where[message_id]
        assert message["subject"] == case.subject, case.name
        assert message["from"] == (case.sender or case.envelope_sender), case.name
        if case.snippet:
            assert case.snippet in message["text"], case.name
        else:
            assert message["text"].strip() == "", case.name
        names = sorted(a["filename"] for a in message["attachments"])
        assert names == sorted(case.attachments), case.name
        assert message["auto_reply"] == (case.auto_reply or case.bounce), case.name
        assert message["charset_repaired"] == case.repaired, case.name
        assert ticket["mailbox"] == case.rcpt, case.name
        if case.thread is None:
            assert ticket["messages"][0]["id"] == message_id, f"{case.name} opens a ticket"
        else:
            assert ticket["id"] == ticket_of_case[case.thread], f"{case.name} joins {case.thread}"
