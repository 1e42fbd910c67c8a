"""The console's views over real HTTP: httpx against firstline's own server on loopback.

Safety first (sessions, CSRF, login limits, headers, roles, hostile mail
shown inert), then what each page reads: the same storage functions as the
CLI, so these tests check the wiring and the rendering, not the queries.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.cli import main
from ingest.console.auth import password_matches
from policy.config.loading import ConfigError, parse_config
from storage import events as event_store
from storage.models import (
    EventState,
    QueueEntry,
    Rejection,
    Reply,
    ReplyState,
    Ticket,
    WebhookEvent,
)
from tests.support.cli import run, write_config
from tests.support.console import (
    HOSTILE_SUBJECT,
    OPERATOR,
    OPERATOR_PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    base_url,
    console_config,
    console_server,
    csrf_of,
    login,
    mail,
    send,
)
from tests.support.dnsserver import DnsServer
from tests.support.server import ServerThread


@pytest.fixture
def server(db_url: str, dns_server: DnsServer) -> Iterator[ServerThread]:
    with console_server(console_config(db_url, dns_server)) as started:
        yield started


@pytest.fixture
def web(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url(server), timeout=30, follow_redirects=True) as client:
        yield client


@pytest.fixture
def operator(web: httpx.Client) -> httpx.Client:
    assert login(web, OPERATOR, OPERATOR_PASSWORD).status_code == 200
    return web


def test_off_unless_configured(db_url: str) -> None:
    config = console_config(db_url).model_copy(update={"console": None})
    with console_server(config) as server, httpx.Client(base_url=base_url(server)) as client:
        assert client.get("/console/").status_code == 404
        assert client.get("/console/login").status_code == 404
        paths = client.get("/openapi.json").json()["paths"]
        assert not [p for p in paths if "console" in p]


def test_pages_need_a_session_and_carry_strict_headers(web: httpx.Client) -> None:
    answer = web.get("/console/rejections?reason=x", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=%2Fconsole%2Frejections%3Freason%3Dx"
    csp = answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    page = web.get("/console/login")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text and "style=" not in page.text
    paths = web.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if "console" in p]


def test_login_sets_a_strict_session_cookie_and_logout_ends_it(web: httpx.Client) -> None:
    page = web.get("/console/login")
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    answer = web.post(
        "/console/login",
        data={"user": OPERATOR, "password": OPERATOR_PASSWORD, "token": token,
              "next": "//evil.example/"},
        headers={"X-Forwarded-Proto": "https"},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/"  # never off-site
    cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie"
                  and v.startswith("firstline_console="))  # fmt: skip
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" in cookie
    web.cookies.set("firstline_console", cookie.split(";")[0].split("=", 1)[1])
    overview = web.get("/console/")
    assert overview.status_code == 200 and f"{OPERATOR} (operator)" in overview.text
    # Logging out needs the session's CSRF token like every other POST.
    assert web.post("/console/logout", data={}).status_code == 403
    assert web.post("/console/logout", data={"csrf": csrf_of(overview.text)}).status_code == 200
    assert web.get("/console/", follow_redirects=False).status_code == 303


def test_login_needs_the_forms_own_token(web: httpx.Client) -> None:
    answer = web.post("/console/login", data={"user": OPERATOR, "password": OPERATOR_PASSWORD,
                                              "token": "forged"})  # fmt: skip
    assert answer.status_code == 403
    assert "firstline_console=" not in answer.headers.get("set-cookie", "")


def test_wrong_passwords_are_limited_even_before_the_right_one(web: httpx.Client) -> None:
    for _ in range(3):  # console.login_attempts in tests.support.console
        answer = login(web, OPERATOR, "wrong")
        assert answer.status_code == 401
        assert "Wrong user name or password." in answer.text
    assert login(web, "nobody", "wrong").status_code == 429  # the address is limited too
    limited = login(web, OPERATOR, OPERATOR_PASSWORD)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert "Too many failed logins" in limited.text


def test_posts_need_the_csrf_token_and_the_operator_role(
    server: ServerThread, web: httpx.Client
) -> None:
    raw, _ = mail("Mallory <m@held.example>", "held")
    assert send(server, raw, "m@held.example") == 250
    with Session(server.engine) as session:
        entry_id = session.scalars(select(QueueEntry.id)).one()
    assert login(web, VIEWER, VIEWER_PASSWORD).status_code == 200
    page = web.get(f"/console/quarantine/{entry_id}")
    assert (
        page.status_code == 200 and 'id="readonly"' in page.text and 'id="release"' not in page.text
    )
    token = csrf_of(page.text)
    refused = web.post(f"/console/quarantine/{entry_id}/release", data={"csrf": token, "note": "x"})
    assert refused.status_code == 403 and "read-only role" in refused.text
    assert web.post("/console/outbox/replies/1/retry", data={"csrf": token}).status_code == 403
    web.post("/console/logout", data={"csrf": token})
    assert login(web, OPERATOR, OPERATOR_PASSWORD).status_code == 200
    forged = web.post(f"/console/quarantine/{entry_id}/release", data={"csrf": "x", "note": "x"})
    assert forged.status_code == 403
    other_site = web.post(
        f"/console/quarantine/{entry_id}/release",
        data={"csrf": csrf_of(web.get("/console/").text), "note": "x"},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403
    with Session(server.engine) as session:
        assert session.get(QueueEntry, entry_id).state == "quarantined"  # type: ignore[union-attr]


def test_a_hostile_subject_is_shown_inert_everywhere(
    server: ServerThread, operator: httpx.Client
) -> None:
    raw, _ = mail("Mallory <m@refused.example>", HOSTILE_SUBJECT)
    assert send(server, raw, "m@refused.example") == 550
    held, held_id = mail("Mallory <m@held.example>", HOSTILE_SUBJECT)
    assert send(server, held, "m@held.example") == 250
    listing = operator.get("/console/rejections")
    detail_link = re.search(r'href="(/console/rejections/\d+)"', listing.text)
    assert detail_link is not None
    with Session(server.engine) as session:
        entry_id = session.scalars(select(QueueEntry.id)).one()
    pages = [listing, operator.get(detail_link.group(1)), operator.get("/console/quarantine"),
             operator.get(f"/console/quarantine/{entry_id}"),
             operator.get("/console/trace", params={"q": held_id})]  # fmt: skip
    for page in pages:
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert '"onmouseover=' not in page.text
        assert (
            "&lt;script&gt;alert(1)&lt;/script&gt;&#34;onmouseover=&#34;alert(2)&#34;" in page.text
        )
        assert "\u202e" not in page.text and "⟨U+202E⟩e" in page.text
    for listed in (pages[0], pages[2]):
        assert listed.text.count("lorem ipsum") < 20  # cut in lists
    for record in (pages[1], pages[3]):
        assert record.text.count("lorem ipsum") >= 860  # whole in the record


def test_rejection_detail_explains_and_filters_combine(
    server: ServerThread, operator: httpx.Client
) -> None:
    raw, message_id = mail("Mallory <m@refused.example>", "spoofed")
    assert send(server, raw, "m@refused.example") == 550
    found = operator.get("/console/rejections", params={"message_id": f"<{message_id}>",
                                                         "client_ip": "127.0.0.1"})  # fmt: skip
    rows = re.findall(r'href="(/console/rejections/\d+)"', found.text)
    assert len(rows) == 1
    assert operator.get("/console/rejections", params={"message_id": message_id,
                                                        "client_ip": "192.0.2.1"}).text.count(
        'href="/console/rejections/'
    ) == 0  # fmt: skip
    detail = operator.get(rows[0]).text
    assert "550 5.7.1" in detail and "p=reject" in detail and "DKIM" in detail
    assert "dmarc=fail (p=reject)" in html.unescape(detail)
    bad = operator.get("/console/rejections", params={"since": "yesterday"})
    assert bad.status_code == 200 and "is neither a duration" in html.unescape(bad.text)


def test_live_stream_sends_new_refusals_after_the_page(
    server: ServerThread, operator: httpx.Client
) -> None:
    first, _ = mail("Mallory <m@refused.example>", "before")
    send(server, first, "m@refused.example")
    page = operator.get("/console/rejections", params={"live": "true", "reason": "dmarc_reject"})
    stream = re.search(r'data-stream="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    second, second_id = mail("Mallory <m@refused.example>", "after")
    send(server, second, "m@refused.example")
    with operator.stream("GET", html.unescape(stream)) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        for line in events.iter_lines():
            if line.startswith("data: "):
                row = json.loads(line[len("data: ") :])
                break
    assert row["subject"] == "after" and row["reason"] == "dmarc_reject"
    with Session(server.engine) as session:
        newest = session.scalars(select(Rejection).where(Rejection.message_id == second_id)).one()  # type: ignore[arg-type]
    assert row["id"] == newest.id


def test_where_is_my_mail_from_pasted_headers(
    server: ServerThread, operator: httpx.Client, tmp_path: Path, db_url: str
) -> None:
    sent_at = datetime.now(UTC)
    raw, message_id = mail("Alice <alice@fine.example>", "Invoice 4711", date=sent_at)
    assert send(server, raw, "alice@fine.example") == 250
    pasted = raw.split(b"\r\n\r\n")[0].decode()
    by_id = operator.get("/console/trace", params={"q": pasted}).text
    assert "Matched by message-id" in by_id and "queued" in by_id
    # A forwarder rewrote the ID: sender, date and subject still find it.
    rewritten = (
        "Received: from gateway.example\r\nFrom: Alice <ALICE@fine.example>\r\n"
        "Subject: [EXT] Invoice 4711\r\n"
        f"Date: {format_datetime(sent_at + timedelta(minutes=3))}\r\n"
        "Message-ID: <rewritten-by-gateway@gw.example>\r\n"
    )
    by_likeness = operator.get("/console/trace", params={"q": rewritten}).text
    assert "Matched by sender+date+subject" in by_likeness and message_id in by_likeness
    nothing = operator.get("/console/trace", params={"q": "From: x@y.example\nSubject: z\n"})
    assert 'id="nothing"' in nothing.text
    # The command line shares the matching.
    config_path = write_config(tmp_path / "firstline.yaml", db_url)
    headers = tmp_path / "headers.txt"
    headers.write_text(rewritten, encoding="utf-8")
    shown = run("trace", "--headers", str(headers), config=config_path)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("matched by sender+date+subject")
    assert f"<{message_id}>" in shown.stdout
    assert run("trace", config=config_path).exit_code == 2


def test_overview_and_mailboxes_show_the_state_and_no_secret(
    server: ServerThread, operator: httpx.Client
) -> None:
    raw, _ = mail("Alice <alice@fine.example>", "hello")
    send(server, raw, "alice@fine.example")
    refused, _ = mail("Mallory <m@refused.example>", "spoofed")
    send(server, refused, "m@refused.example")
    overview = operator.get("/console/").text
    assert "<svg" in overview and 'class="accepted"' in overview
    assert "1 accepted" in overview and "1 refused" in overview
    assert "dmarc_reject" in overview
    boxes = operator.get("/console/mailboxes").text
    assert "console-test.yaml:" in boxes and "support@example.com" in boxes


def test_console_passwords_in_the_file_must_be_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(password: str, api: dict[str, str] | None = None) -> None:
        users = [{"name": "a", "password": password}]
        api = {"listen": "127.0.0.1:0"} if api is None else api
        parse_config(yaml.safe_dump({"api": api, "console": {"users": users}}))

    with pytest.raises(ConfigError) as refused:
        parse("plain text")
    assert "argon2 or bcrypt hash" in str(refused.value.problems[0])
    monkeypatch.setenv("CONSOLE_PW", "from the environment")
    parse("${CONSOLE_PW}")
    parse("$2b$12$" + "a" * 53)
    with pytest.raises(ConfigError) as no_api:
        parse("${CONSOLE_PW}", api={})
    assert "set api.listen too" in str(no_api.value.problems[0])
    printed = CliRunner().invoke(main, ["console-password"], input="s3cret\ns3cret\n")
    stored = printed.stdout.strip().splitlines()[-1]
    assert stored.startswith("$argon2id$") and password_matches(stored, "s3cret")
    assert not password_matches(stored, "s3cret!")


def test_outbox_lists_failed_replies_and_dead_events_and_retries_them(
    server: ServerThread, operator: httpx.Client
) -> None:
    with Session(server.engine) as session, session.begin():
        ticket = Ticket(mailbox="support@example.com", subject="s", requester="a@b.example")
        session.add(ticket)
        session.flush()
        reply = Reply(ticket_id=ticket.id, mailbox="support@example.com", message_id="<r@x>",  # type: ignore[arg-type]
                      raw=b"x", recipients=["a@b.example"], state=ReplyState.FAILED,
                      last_error="550 5.7.1 <script>relay said no</script>",
                      error_class="message rejected")  # fmt: skip
        session.add(reply)
        added = event_store.add(
            session, type="ticket.created", channel="helpdesk", mailbox="support@example.com",
            ticket_id=ticket.id, data={},
        )  # fmt: skip
        event = session.scalars(select(WebhookEvent).where(WebhookEvent.event_id == added)).one()
        event.state = EventState.DEAD
        reply_id, event_id = reply.id, event.id
    page = operator.get("/console/outbox")
    assert "&lt;script&gt;relay said no&lt;/script&gt;" in page.text
    assert f"/console/outbox/replies/{reply_id}/retry" in page.text
    assert f"/console/outbox/events/{event_id}/retry" in page.text
    token = csrf_of(page.text)
    assert (
        operator.post(f"/console/outbox/replies/{reply_id}/retry", data={"csrf": token}).status_code
        == 200
    )
    assert (
        operator.post(f"/console/outbox/events/{event_id}/retry", data={"csrf": token}).status_code
        == 200
    )
    again = operator.post(f"/console/outbox/replies/{reply_id}/retry", data={"csrf": token})
    assert again.status_code == 404  # not failed any more
    with Session(server.engine) as session:
        assert session.get(Reply, reply_id).state == ReplyState.QUEUED  # type: ignore[union-attr]
        assert session.get(WebhookEvent, event_id).state == EventState.QUEUED  # type: ignore[union-attr]
    overview = operator.get("/console/").text
    assert "dead webhook events" in overview
