"""The console in a real browser: Debian's chromium driven by Playwright, against a real server.

One browser per module (a fresh context, so fresh cookies, per test). Each
test takes screenshots of the pages it visits: into a temporary folder, or
into ``$FIRSTLINE_SCREENSHOTS`` when set — ``make screenshots`` renews the
set committed in ``docs/console/``, which the README shows (a plain test run
leaves the working tree as it was). Chromium comes from apt (the Makefile installs it when it
can); ``playwright install`` cannot download here. Without chromium these
tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import QueueEntry, Ticket
from tests.support.console import (
    HOSTILE_SUBJECT,
    OPERATOR,
    OPERATOR_PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    base_url,
    console_config,
    console_server,
    mail,
    send,
)
from tests.support.dnsserver import DnsServer
from tests.support.relay import Relays
from tests.support.server import ServerThread

CHROMIUM = os.environ.get("FIRSTLINE_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
WAIT = 20_000  # ms: generous, the machine is shared; every wait ends on an event


def _chromium_or_skip() -> str:
    if shutil.which(CHROMIUM) is None:
        message = f"chromium not found at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " — under CI this is a failure, not a skip")
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium_or_skip()
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("FIRSTLINE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def server(tmp_path: Path, dns_server: DnsServer) -> Iterator[ServerThread]:
    with console_server(console_config(f"sqlite:///{tmp_path}/console.db", dns_server)) as s:
        yield s


@pytest.fixture
def page(browser: Any, server: ServerThread) -> Iterator[Any]:
    context = browser.new_context(
        base_url=base_url(server), viewport={"width": 1280, "height": 800}
    )
    tab = context.new_page()
    tab.set_default_timeout(WAIT)
    dialogs: list[str] = []
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield tab
    context.close()
    assert not dialogs, f"a script ran: {dialogs}"


def sign_in(page: Any, user: str = OPERATOR, password: str = OPERATOR_PASSWORD) -> None:
    page.goto("/console/login")
    page.fill("#user", user)
    page.fill("#password", password)
    page.click("#login")


def shoot(page: Any, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 0


def test_log_in_wrong_password_and_out(page: Any, server: ServerThread, shots: Path) -> None:
    page.goto("/console/rejections")
    assert page.url.endswith("/console/login?next=%2Fconsole%2Frejections")
    sign_in(page, password="not the password")
    assert page.text_content("#login-error") == "Wrong user name or password."
    shoot(page, shots, "login")
    page.fill("#user", OPERATOR)
    page.fill("#password", OPERATOR_PASSWORD)
    page.click("#login")
    page.wait_for_selector("svg.chart")
    assert page.url.endswith("/console/")
    shoot(page, shots, "overview")
    page.click("#logout")
    page.wait_for_selector("#login")
    page.goto("/console/")
    assert "/console/login" in page.url


def test_follow_live_refusals_then_find_one_by_message_id(
    page: Any, server: ServerThread, shots: Path
) -> None:
    sign_in(page)
    page.goto("/console/rejections?live=true")
    # A selector, not wait_for_function: a string predicate that is false at first
    # is polled through eval, which the console's CSP (script-src 'self') forbids.
    page.wait_for_selector("#live-status:has-text('following')")
    raw, message_id = mail("Mallory <ceo@refused.example>", HOSTILE_SUBJECT)
    assert send(server, raw, "ceo@refused.example") == 550  # spoofed: DMARC p=reject
    row = page.wait_for_selector("#rejections tbody tr.new")
    assert "dmarc_reject" in row.text_content()
    subject = page.text_content("#rejections tbody tr.new td.subject")
    assert subject.startswith("<script>alert(1)</script>") and "⟨U+202E⟩" in subject
    shoot(page, shots, "rejections-live")
    page.uncheck("#live")
    page.fill("#message-id", f"<{message_id}>")
    page.click("#search")
    page.wait_for_selector("#rejections tbody tr")
    assert page.locator("#rejections tbody tr").count() == 1
    page.click("#rejections tbody tr a")
    page.wait_for_selector("#explanation")
    assert "p=reject" in page.text_content("#explanation")
    assert page.text_content("#reply").startswith("550 5.7.1")
    # Hostile subject inert: shown as text, no element or handler made of it.
    assert page.text_content("#subject").startswith('<script>alert(1)</script>"onmouseover=')
    assert page.locator("main script, main img, [onmouseover], [onerror]").count() == 0
    page.hover("#subject")
    shoot(page, shots, "rejection")


def test_release_a_quarantined_message_and_see_its_ticket(
    page: Any, server: ServerThread, shots: Path
) -> None:
    raw, message_id = mail("Dana <dana@held.example>", "Held by DMARC p=quarantine")
    assert send(server, raw, "dana@held.example") == 250
    sign_in(page)
    page.goto("/console/quarantine")
    shoot(page, shots, "quarantine")
    page.click("#quarantine tbody tr a")
    page.wait_for_selector("#held-reason")
    assert page.text_content("#held-reason") == "dmarc_quarantine"
    assert "<b>not bold</b>" in page.text_content("#preview-text")
    shoot(page, shots, "quarantined")
    page.fill("#release-note", "the customer confirmed it is theirs")
    page.click("#release")
    page.wait_for_selector("#quarantine")
    assert page.locator("#quarantine tbody tr").count() == 0
    server.process()  # the batch files it
    with Session(server.engine) as session:
        ticket_id = session.scalars(select(Ticket.id)).one()
    page.goto("/console/trace")
    page.fill("#q", message_id)
    page.click("#find")
    page.wait_for_selector("#status")
    assert f"on ticket {ticket_id}" in page.text_content("#status")
    assert "by=console:ann" in page.text_content("#timeline")
    shoot(page, shots, "trace")
    page.click(f"#status a[href='/console/tickets/{ticket_id}']")
    page.wait_for_selector("#ticket-subject")
    assert page.text_content("#ticket-subject") == "Held by DMARC p=quarantine"


def test_send_test_shows_the_classified_authentication_failure(
    browser: Any, tmp_path: Path, dns_server: DnsServer, relays: Relays, shots: Path
) -> None:
    port, _ = relays.start("starttls")
    smtp = {"host": "127.0.0.1", "port": port, "account": "support@example.com",
            "password": "wrong password", "encryption": "starttls",
            "ca_file": str(relays.ca_file), "timeout": 10}  # fmt: skip
    config = console_config(f"sqlite:///{tmp_path}/console.db", dns_server)
    boxes = [m.model_dump(exclude_none=True) for m in config.mailboxes]
    boxes[0]["smtp"] = smtp
    config = console_config(f"sqlite:///{tmp_path}/console.db", dns_server, mailboxes=boxes)
    with console_server(config) as server:
        context = browser.new_context(base_url=base_url(server), viewport=VIEWPORT)
        tab = context.new_page()
        tab.set_default_timeout(WAIT)
        try:
            sign_in(tab)
            tab.goto("/console/mailboxes")
            assert "wrong password" not in tab.content()
            tab.click("button.send-test[data-mailbox='support@example.com']")
            tab.wait_for_selector("#send-test-result")
            failure = tab.text_content("#send-test-failure")
            assert failure == "FAILED at step 'login': authentication (permanent)"
            assert tab.text_content("#server-said").startswith("535 5.7.8")
            assert "app password" in tab.text_content("#hint")
            assert "wrong password" not in tab.content()
            shoot(tab, shots, "mailboxes")
        finally:
            context.close()


def test_read_only_role_is_refused_an_action(page: Any, server: ServerThread, shots: Path) -> None:
    raw, _ = mail("Dana <dana@held.example>", "held")
    assert send(server, raw, "dana@held.example") == 250
    with Session(server.engine) as session:
        entry_id = session.scalars(select(QueueEntry.id)).one()
    sign_in(page, VIEWER, VIEWER_PASSWORD)
    page.goto(f"/console/quarantine/{entry_id}")
    page.wait_for_selector("#readonly")
    assert page.locator("#release").count() == 0
    # Forge the form the page does not offer, with this session's own CSRF token.
    token = page.get_attribute("input[name=csrf]", "value")
    answer = page.request.post(
        f"/console/quarantine/{entry_id}/release", form={"csrf": token, "note": "let me"}
    )
    assert answer.status == 403
    assert re.search(r"read-only role", answer.text())
    page.goto("/console/outbox")
    page.wait_for_selector("#failed-replies")
    shoot(page, shots, "outbox")
    with Session(server.engine) as session:
        assert session.get(QueueEntry, entry_id).state == "quarantined"  # type: ignore[union-attr]
