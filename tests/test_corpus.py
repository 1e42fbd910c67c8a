"""Every corpus message through the parser: subject, sender, text, attachments, flags."""

from __future__ import annotations

import pytest

from ingest.mime import parse_message
from tests.corpus.cases import CASES, Case


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
