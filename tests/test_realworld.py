"""Real customers' odd mail, end to end with verification: 250 and a ticket, never a 4xx.

One listener and one batch per round for the whole corpus (tests/corpus/realworld.py),
over a raw SMTP connection so that every byte (bare LFs, a BOM, 8-bit field
names) arrives as written. It is also the differential test for that corpus:
the author DMARC judged, the ``header.from`` of our Authentication-Results
and the ticket message's From are one address.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.smtp.verification import configured_verifier
from policy.config.model import Config
from storage.models import StoredMessage
from tests.support.corpus.realworld import CASES, DOMAIN, Real
from tests.support.dnsserver import DnsServer
from tests.support.mailflow import queue_outcomes, tickets, transmit
from tests.support.server import RawClient, running


def deliver_all(connect: Callable[[], RawClient], cases: list[Real]) -> dict[str, str]:
    """Thirty transactions a session (a session may repeat a command 100 times)."""
    replies: dict[str, str] = {}
    for start in range(0, len(cases), 30):
        client = connect()
        client.cmd(b"EHLO mx.customer.example")
        for case in cases[start : start + 30]:
            replies[case.name] = transmit(client, case.raw, case.mail_from)
        client.cmd(b"QUIT")
        client.close()
    return replies


def test_real_world_corpus_end_to_end(
    make_config: Callable[..., Config], dns_server: DnsServer
) -> None:
    assert len(CASES) >= 100
    dns_server.add(DOMAIN, "TXT", "v=spf1 -all")
    dns_server.add(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=none")
    config = make_config(dns={"nameservers": [dns_server.address], "timeout": 2.0})
    first = [c for c in CASES if c.reports_on is None]
    second = [c for c in CASES if c.reports_on is not None]
    with running(config, verifier_factory=configured_verifier) as server:
        replies = deliver_all(server.raw, first)
        server.process()
        replies |= deliver_all(server.raw, second)
        server.process()
        server.flush()
        outcomes = queue_outcomes(server)
        shown = tickets(server)
        with Session(server.engine) as session:
            verdicts = {
                m.header_message_id: m.verdict for m in session.scalars(select(StoredMessage))
            }

    for case in CASES:
        reply = replies[case.name]
        assert not reply.startswith("4"), (case.name, reply)
        if case.refused:
            assert reply.startswith("550 5.7.1 "), (case.name, reply)
        else:
            assert reply.startswith("250 "), (case.name, reply)
    assert {e.state.value for e, _ in outcomes} == {"done"}
    where = {m["message_id"]: (t, m) for t in shown for m in t["messages"]}
    for case in CASES:
        if case.refused:
            assert case.message_id not in where, case.name
            continue
        ticket, message = where[case.message_id]
        verdict = verdicts[case.message_id.strip("<>")]
        assert message["from"] == case.requester, case.name
        # One author: the address DMARC judged is the address the ticket shows.
        assert verdict["author"] == case.requester, case.name
        results = " ".join((message["authentication_results"] or "").split())
        if case.requester:
            domain = case.requester.rpartition("@")[2]
            assert verdict["dmarc"]["author"] == domain, case.name
            assert f"header.from={domain}" in results, (case.name, results)
        else:
            assert verdict["reason"] == "null_author_bounce", case.name
            assert "header.from" not in results, case.name
        if case.reports_on is None:
            assert ticket["requester"] == case.requester, case.name
            assert ticket["messages"][0]["message_id"] == case.message_id, case.name
        else:
            original = next(c for c in CASES if c.name == case.reports_on)
            assert where[original.message_id][0]["id"] == ticket["id"], case.name
            assert message["auto_reply"], case.name
