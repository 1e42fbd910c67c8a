"""docs/json.md is the vocabulary: the CLI, the API and webhook payloads are held to it.

One server with a webhook channel, the HTTP API and the tests' DNS server
receives a ticket, a quarantined mail and a refused one; every shape a
ticket, a rejection, a queue entry and a quarantine item takes on the
command line, over HTTP and in an event must have exactly the keys the page
lists (what it shows "always", plus "alone" for an object shown by itself,
plus any "when …" key), and every Message-ID its angle brackets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.smtp.verification import configured_verifier
from policy.config.model import Config
from tests.support.cli import json_lines, run, write_config
from tests.support.dnsserver import DnsServer
from tests.support.helpdesk import SECRET, Receiver, poke, wait_for
from tests.support.server import ServerThread, running
from tests.support.signing import message
from tests.support.vocabulary import documented

TOKEN = "vocabulary-token-0123456789abcdef"


def message_ids(value: Any) -> list[str]:
    """Every value of a ``message_id`` key, at any depth."""
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k == "message_id" and isinstance(v, str)]
        return found + [m for v in value.values() for m in message_ids(v)]
    if isinstance(value, list):
        return [m for v in value for m in message_ids(v)]
    return []


@pytest.fixture
def busy(
    make_config: Callable[..., Config], dns_server: DnsServer, receiver: Receiver
) -> Iterator[ServerThread]:
    dns_server.add("_dmarc.held.example", "TXT", "v=DMARC1; p=quarantine")
    dns_server.add("_dmarc.refused.example", "TXT", "v=DMARC1; p=reject")
    helpdesk = {
        "name": "helpdesk", "type": "webhook", "url": receiver.url, "secret": SECRET,
        "token": TOKEN, "backoff": 0.05, "timeout": 2,
        "events": ["ticket.created", "message.quarantined", "message.rejected"],
    }  # fmt: skip
    config = make_config(
        dns={"nameservers": [dns_server.address], "timeout": 2},
        api={"listen": "127.0.0.1:0"},
        channels=[helpdesk, {"name": "sales-desk"}],
    )
    with running(config, verifier_factory=configured_verifier) as server:
        yield server


def send(server: ServerThread, domain: str, subject: str) -> None:
    raw = message(sender=f"Bob <bob@{domain}>", to="support@example.com", subject=subject)
    with server.smtp() as client:
        try:
            client.sendmail(f"bob@{domain}", ["support@example.com"], raw)
        except Exception as refused:  # refused.example's DMARC reject
            assert "5.7.1" in str(refused)


def test_cli_api_and_webhooks_speak_docs_json(
    busy: ServerThread, receiver: Receiver, tmp_path: Path, db_url: str
) -> None:
    shapes = documented()
    assert {"ticket", "rejection", "queue entry", "quarantine item"} <= set(shapes)
    path = write_config(tmp_path / "firstline.yaml", db_url)
    send(busy, "customer.example", "a ticket")
    send(busy, "held.example", "held")
    send(busy, "refused.example", "refused")
    busy.flush()
    seen: list[Any] = []

    def cli(*args: str) -> list[dict[str, Any]]:
        found = json_lines(run(*args, "--json", config=path))
        seen.extend(found)
        return found

    [queued] = cli("queue", "list")
    shapes["queue entry"].check(queued, alone=False, where="queue list")
    busy.process()
    poke(busy)

    [listed] = cli("tickets", "list")
    shapes["ticket"].check(listed, alone=False, where="tickets list")
    [shown] = cli("tickets", "show", str(listed["id"]))
    shapes["ticket"].check(shown, alone=True, where="tickets show")
    [rejection] = cli("rejections")
    shapes["rejection"].check(rejection, alone=False, where="rejections")
    [detail] = cli("rejections", "show", str(rejection["id"]))
    shapes["rejection"].check(detail, alone=True, where="rejections show")
    # --json before the subcommand, as `rejections --json` is written, works too.
    assert json_lines(run("rejections", "-c", str(path), "--json", "show",
                          str(rejection["id"]))) == [detail]  # fmt: skip
    [held] = cli("quarantine", "list")
    shapes["quarantine item"].check(held, alone=False, where="quarantine list")
    [held_detail] = cli("quarantine", "show", str(held["id"]))
    shapes["quarantine item"].check(held_detail, alone=True, where="quarantine show")

    assert busy.app.api is not None
    host, port = busy.app.api.address
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=f"http://{host}:{port}", headers=headers, timeout=10) as api:
        [page_ticket] = api.get("/api/v1/tickets").json()["tickets"]
        shapes["ticket"].check(page_ticket, alone=False, where="GET /api/v1/tickets")
        one = api.get(f"/api/v1/tickets/{listed['id']}").json()
        shapes["ticket"].check(one, alone=True, where="GET /api/v1/tickets/{id}")
        [api_rejection] = api.get("/api/v1/rejections").json()["rejections"]
        shapes["rejection"].check(api_rejection, alone=False, where="GET /api/v1/rejections")
        seen += [page_ticket, one, api_rejection]

    wait_for(lambda: len(receiver.deliveries) >= 3, "the three events")
    by_type = {d.type: d.event["data"] for d in receiver.deliveries}
    shapes["ticket"].check(by_type["ticket.created"]["ticket"], alone=True, where="event ticket")
    assert set(by_type["ticket.created"]) == {"ticket", "ticket_message_id"}
    shapes["rejection"].check(by_type["message.rejected"]["rejection"], alone=False,
                              where="event message.rejected")  # fmt: skip
    shapes["quarantine item"].check(by_type["message.quarantined"]["message"], alone=True,
                                    where="event message.quarantined")  # fmt: skip
    seen += list(by_type.values())

    # The same thing has the same value everywhere, and Message-IDs one form.
    assert api_rejection == rejection and by_type["message.rejected"]["rejection"] == rejection
    assert one == by_type["ticket.created"]["ticket"] | {"replies": one["replies"]}
    ids = message_ids(seen)
    assert ids and all(re.fullmatch(r"<[^<>\s]+@[^<>\s]+>", m) for m in ids), ids
    shown_text = run("tickets", "show", str(listed["id"]), config=path).stdout
    assert "<<" not in shown_text and shown["messages"][0]["message_id"] in shown_text
    # Every Message-ID input takes both forms.
    bare = rejection["message_id"].strip("<>")
    for form in (bare, rejection["message_id"]):
        assert cli("rejections", "--message-id", form) == [rejection]
        [story] = cli("trace", form)
        assert story["message_id"] == rejection["message_id"]
    assert json.loads(json.dumps(seen)) == seen


def test_diagnostics_read_as_a_verdict_summary_and_labelled_lines(
    busy: ServerThread, tmp_path: Path, db_url: str
) -> None:
    path = write_config(tmp_path / "firstline.yaml", db_url)
    send(busy, "held.example", "held")
    send(busy, "refused.example", "refused")
    busy.flush()
    [rejection] = json_lines(run("rejections", "--json", config=path))
    [held] = json_lines(run("quarantine", "list", "--json", config=path))
    outputs = {
        "rejections show": run("rejections", "-c", str(path), "show", str(rejection["id"])),
        "quarantine show": run("quarantine", "show", str(held["id"]), config=path),
        "trace": run("trace", held["trace_id"], config=path),
    }
    for name, result in outputs.items():
        assert result.exit_code == 0, result.output
        assert not re.search(r"[{\[]'|': ", result.stdout), name  # no Python reprs
        [verdict] = [line for line in result.stdout.splitlines() if "verdict:" in line]
        assert re.search(r"verdict:\s+spf=\w+ dkim=\S+ .*dmarc=fail \(p=(reject|quarantine)\) "
                         r"forwarding=direct$", verdict), (name, verdict)  # fmt: skip
        assert re.search(r"^\s+dmarc:\s+fail for (held|refused)\.example", result.stdout,
                         re.MULTILINE), name  # fmt: skip
    assert "dmarc=fail (p=reject)" in outputs["rejections show"].stdout
    assert "dmarc=fail (p=quarantine)" in outputs["quarantine show"].stdout
    heading = outputs["trace"].stdout.splitlines()[0]
    assert heading == f"queue ID {held['trace_id']}, Message-ID {held['message_id']}"
