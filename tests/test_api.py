"""The HTTP API over real HTTP: httpx against ``firstline``'s own uvicorn on loopback.

Mail comes in over SMTP and is filed by the batch; replies leave through a
loopback relay (aiosmtpd with STARTTLS and AUTH, :mod:`tests.support.relay`). Each
channel's token sees its own mailboxes only.
"""

from __future__ import annotations

import email
import json
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from ingest.channels.api.routes import MAX_BODY
from ingest.outbound.replies import send_due_replies
from policy.config.model import Config
from tests.support.mailflow import deliver
from tests.support.relay import PASSWORD, USER, RecordingHandler, Relays
from tests.support.server import ServerThread, running

HELPDESK_TOKEN = "helpdesk-token-0123456789abcdef"
SALES_TOKEN = "sales-token-0123456789abcdef"
OPENAPI = Path(__file__).resolve().parent.parent / "openapi.json"


class Api:
    """A running server, its API client per channel, and the relay replies go through."""

    def __init__(self, server: ServerThread, relay: RecordingHandler) -> None:
        self.server = server
        self.relay = relay
        host, port = server.app.api.address if server.app.api else ("", 0)
        self.base = f"http://{host}:{port}"

    def client(self, token: str | None = HELPDESK_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=10)

    def send_replies(self) -> None:
        """One outbox round now, on the server's loop (``serve`` loops the same function)."""
        config = self.server.app.holder.current
        self.server.call(send_due_replies(self.server.engine, config, owner="test-outbox"))

    def mail(self, raw: bytes, rcpt: str = "support@example.com") -> None:
        deliver(self.server, raw, rcpt=rcpt)
        self.server.process()


def channels() -> list[dict[str, Any]]:
    return [
        {"name": "helpdesk", "token": HELPDESK_TOKEN},
        {"name": "sales-desk", "token": SALES_TOKEN},
    ]


def mailboxes(relays: Relays, port: int) -> list[dict[str, Any]]:
    smtp = {
        "host": "127.0.0.1", "port": port, "account": USER, "password": PASSWORD,
        "encryption": "starttls", "ca_file": str(relays.ca_file), "timeout": 2,
    }  # fmt: skip
    return [
        {"channel": "helpdesk", "name": "Example Support", "address": "support@example.com",
         "smtp": smtp},
        {"channel": "helpdesk", "name": "Example Billing", "address": "billing@example.com"},
        {"channel": "sales-desk", "name": "Sales", "address": "sales@example.org"},
    ]  # fmt: skip


@pytest.fixture
def api(make_config: Callable[..., Config], relays: Relays) -> Iterator[Api]:
    port, handler = relays.start("starttls")
    config = make_config(
        api={"listen": "127.0.0.1:0"},
        channels=channels(),
        mailboxes=mailboxes(relays, port),
    )
    with running(config) as server:
        yield Api(server, handler)


def mail(
    subject: str, message_id: str, *, sender: str = "alice@customer.example",
    to: str = "support@example.com", reply_to: str | None = None,
    attachment: tuple[str, str, bytes] | None = None,
) -> bytes:  # fmt: skip
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}>"
    msg["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
    if reply_to:
        msg["In-Reply-To"] = f"<{reply_to}>"
    msg.set_content(f"Body of {subject}\n")
    if attachment:
        filename, content_type, data = attachment
        maintype, subtype = content_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=policy.SMTP)


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code and body["title"]
    assert body["type"] == f"urn:firstline:problem:{code}"
    return body


def test_a_channel_sees_only_its_own_mailboxes(api: Api) -> None:
    api.mail(mail("Printer on fire", "p1@customer.example"))
    api.mail(mail("Invoice wrong", "b1@customer.example", to="billing@example.com"),
             rcpt="billing@example.com")  # fmt: skip
    api.mail(mail("Buy stuff", "s/1@customer.example", to="sales@example.org"),
             rcpt="sales@example.org")  # fmt: skip

    with api.client() as helpdesk, api.client(SALES_TOKEN) as sales:
        mine = helpdesk.get("/api/v1/tickets").json()["tickets"]
        theirs = sales.get("/api/v1/tickets").json()["tickets"]
        assert sorted(t["mailbox"] for t in mine) == ["billing@example.com", "support@example.com"]
        [sales_ticket] = theirs
        assert sales_ticket["mailbox"] == "sales@example.org" and sales_ticket["message_count"] == 1

        problem(helpdesk.get(f"/api/v1/tickets/{sales_ticket['id']}"), 404, "not_found")
        problem(helpdesk.patch(f"/api/v1/tickets/{sales_ticket['id']}", json={"status": "closed"}),
                404, "not_found")  # fmt: skip
        problem(helpdesk.post(f"/api/v1/tickets/{sales_ticket['id']}/replies",
                              json={"text": "hi"}), 404, "not_found")  # fmt: skip
        assert sales.get(f"/api/v1/tickets/{sales_ticket['id']}").status_code == 200
        assert helpdesk.get("/api/v1/tickets", params={"mailbox": "sales@example.org"}).json() == {
            "tickets": [], "next_cursor": None,
        }  # fmt: skip
        trace = sales.get("/api/v1/trace/<s/1@customer.example>")  # a "/" is allowed
        assert trace.status_code == 200 and trace.json()["found"]
        problem(helpdesk.get("/api/v1/trace/s/1@customer.example"), 404, "not_found")

    with api.client(None) as anonymous, api.client("not-a-token") as wrong:
        answer = anonymous.get("/api/v1/tickets")
        missing = problem(answer, 401, "unauthorized")
        assert answer.headers["www-authenticate"] == "Bearer"
        refused = wrong.get("/api/v1/tickets")
        mistaken = problem(refused, 401, "unauthorized")
        assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert missing["title"] == "a channel's bearer token is required"
        assert mistaken["title"] == "the bearer token is not any channel's token"
        assert anonymous.get("/healthz").json()["status"] == "ok"


def test_pagination_filters_and_status_changes(api: Api) -> None:
    for n in range(5):
        api.mail(mail(f"Question {n}", f"q{n}@customer.example"))
    with api.client() as client:
        seen: list[int] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/api/v1/tickets", params=params).json()
            seen += [t["id"] for t in page["tickets"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3 and len(seen) == 5 and len(set(seen)) == 5

        problem(client.get("/api/v1/tickets", params={"cursor": "garbage!"}), 400,
                "invalid_cursor")  # fmt: skip
        problem(client.get("/api/v1/tickets", params={"limit": 0}), 422, "validation_failed")

        first = client.get(f"/api/v1/tickets/{seen[0]}").json()
        changed = client.patch(f"/api/v1/tickets/{seen[0]}", json={"status": "closed"})
        assert changed.status_code == 200 and changed.json()["status"] == "closed"
        assert changed.json()["updated_at"] > first["updated_at"]
        problem(client.patch(f"/api/v1/tickets/{seen[0]}", json={"status": "solved"}), 422,
                "validation_failed")  # fmt: skip
        closed = client.get("/api/v1/tickets", params={"status": "closed"}).json()["tickets"]
        assert [t["id"] for t in closed] == [seen[0]]
        # Only what changed since: the closed ticket is the most recent change.
        since = client.get(
            "/api/v1/tickets", params={"updated_since": changed.json()["updated_at"]}
        ).json()
        assert [t["id"] for t in since["tickets"]] == [seen[0]]

        # The customer writes again: the closed ticket is open again.
        original = first["messages"][0]["message_id"].strip("<>")
        api.mail(mail("Re: Question 0", "q0-again@customer.example", reply_to=original))
        reopened = client.get(f"/api/v1/tickets/{seen[0]}").json()
        assert reopened["status"] == "open" and len(reopened["messages"]) == 2


def test_attachment_download_is_exact_and_safe(api: Api) -> None:
    hostile = 'résumé "final"\\..\\évil.pdf'
    data = bytes(range(256)) * 10
    api.mail(mail("CV", "cv@customer.example", attachment=(hostile, "application/pdf", data)))
    with api.client() as client, api.client(SALES_TOKEN) as sales:
        [ticket] = client.get("/api/v1/tickets").json()["tickets"]
        detail = client.get(f"/api/v1/tickets/{ticket['id']}").json()
        [attachment] = detail["messages"][0]["attachments"]
        assert attachment["download_url"] == f"/api/v1/attachments/{attachment['id']}"
        download = client.get(attachment["download_url"])
        assert download.status_code == 200 and download.content == data
        assert download.headers["content-type"] == "application/pdf"
        assert download.headers["x-content-type-options"] == "nosniff"
        disposition = download.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="')
        assert attachment["filename"].startswith("résumé") and '"' in attachment["filename"]
        assert disposition.endswith(f"; filename*=UTF-8''{quote(attachment['filename'], safe='')}")
        fallback = disposition.split('filename="', 1)[1].split('";', 1)[0]
        assert fallback.isascii() and '"' not in fallback and "\\" not in fallback
        problem(sales.get(attachment["download_url"]), 404, "not_found")
        problem(client.get("/api/v1/attachments/999999"), 404, "not_found")


def test_reply_round_trip_through_the_relay(api: Api) -> None:
    api.mail(mail("Printer on fire", "fire@customer.example"))
    with api.client() as client:
        [ticket] = client.get("/api/v1/tickets").json()["tickets"]
        problem(client.post(f"/api/v1/tickets/{ticket['id']}/replies", json={}), 422,
                "validation_failed")  # fmt: skip
        problem(client.post(f"/api/v1/tickets/{ticket['id']}/replies",
                            json={"text": "x", "cc": ["boss@example.com\r\nBcc: all@x"]}),
                422, "validation_failed")  # fmt: skip
        problem(client.post(f"/api/v1/tickets/{ticket['id']}/replies",
                            content=b'{"text": "' + b"a" * (3 * 1024 * 1024) + b'"}',
                            headers={"content-type": "application/json"}),
                413, "body_too_large")  # fmt: skip
        problem(client.post(f"/api/v1/tickets/{ticket['id']}/replies",
                            json={"text": "x", "cc": ["a@customer.example, b@customer.example"]}),
                422, "validation_failed")  # fmt: skip
        queued = client.post(
            f"/api/v1/tickets/{ticket['id']}/replies",
            # compose's own reading of an address: a display name is fine
            json={
                "html": "<p>We are <b>on it</b>.</p>",
                "cc": ["The Boss <boss@customer.example>"],
            },
        )
        assert queued.status_code == 202, queued.text
        reply = queued.json()
        assert reply["state"] == "queued" and reply["ticket_id"] == ticket["id"]
        assert queued.headers["location"] == f"/api/v1/replies/{reply['id']}"
        api.send_replies()
        state = client.get(f"/api/v1/replies/{reply['id']}").json()
        assert state["state"] == "sent" and state["server_reply"].startswith("250")
        with api.client(SALES_TOKEN) as sales:
            problem(sales.get(f"/api/v1/replies/{reply['id']}"), 404, "not_found")
        shown = client.get(f"/api/v1/tickets/{ticket['id']}").json()
        assert [r["id"] for r in shown["replies"]] == [reply["id"]]

    [received] = api.relay.received
    assert set(received.rcpt_tos) == {"alice@customer.example", "boss@customer.example"}
    sent = email.message_from_bytes(received.data, policy=policy.default)
    assert isinstance(sent, EmailMessage)
    assert sent["In-Reply-To"] == "<fire@customer.example>"
    assert sent["Cc"] == "The Boss <boss@customer.example>"
    body = sent.get_body(("plain",))
    assert body is not None and "We are on it." in body.get_content()


def test_operators_endpoints_and_the_openapi_document(api: Api) -> None:
    with api.client() as client:
        assert client.get("/api/v1/rejections").json() == {"rejections": []}
        problem(client.get("/api/v1/rejections", params={"since": "yesterday-ish"}), 400,
                "invalid_parameter")  # fmt: skip
        problem(client.get("/api/v1/rejections", params={"since": "99999999999d"}), 400,
                "invalid_parameter")  # fmt: skip
        problem(client.get("/metrics"), 404, "metrics_off")
        not_allowed = client.delete("/api/v1/tickets")
        problem(not_allowed, 405, "method_not_allowed")
        assert not_allowed.headers["allow"] == "GET"
        assert client.put("/api/v1/tickets/1").headers["allow"] == "GET, PATCH"
        assert client.post("/healthz").headers["allow"] == "GET"
        problem(client.get("/api/v1/nowhere"), 404, "not_found")
        # The byte limit stands before every route, bodies declared on a GET included.
        problem(client.request("GET", "/api/v1/tickets", content=b"x" * (MAX_BODY + 1)), 413,
                "body_too_large")  # fmt: skip
        served = client.get("/openapi.json").json()
    assert served == json.loads(OPENAPI.read_text(encoding="utf-8")), (
        "the API changed: regenerate with `python -m ingest.channels.api > openapi.json`"
    )
    undocumented = [
        f"{method.upper()} {path}"
        for path, operations in served["paths"].items()
        for method, operation in operations.items()
        if "413" not in operation["responses"]
    ]
    assert undocumented == [], "the body limit's 413 is not documented for these"
