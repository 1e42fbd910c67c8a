"""One ticket, three readers: the API, ``tickets show --json`` and a webhook see one document.

The ticket's message is HTML with an inline image (``<img src="cid:…">``)
and a PDF beside it, so the attachments' ``content_id`` — which the API's
own model once dropped while the webhook carried it — and ``download_url``
(absolute, from ``api.base_url``) are on every path. The three are compared
whole, not key by key: one class builds them all (storage/documents.py); and
that one has, at every depth, the keys docs/json.md lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from policy.config.model import Config
from storage import documents, models
from tests.support.cli import json_lines, run, write_config
from tests.support.helpdesk import Receiver, file_mail, wait_for, webhook
from tests.support.server import ServerThread, running
from tests.support.vocabulary import documented

TOKEN = "documents-token-0123456789abcdef"
BASE_URL = "https://mail-api.example.com"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def settings(receiver: Receiver) -> dict[str, Any]:
    """What the server and the CLI both read: the webhook channel and the API's address."""
    return {
        "api": {"listen": "127.0.0.1:0", "base_url": BASE_URL},
        "channels": [webhook(receiver, token=TOKEN), {"name": "sales-desk"}],
    }


@pytest.fixture
def server(make_config: Callable[..., Config], receiver: Receiver) -> Iterator[ServerThread]:
    with running(make_config(**settings(receiver))) as started:
        yield started


def with_inline_image() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@customer.example>"
    msg["To"] = "support@example.com"
    msg["Subject"] = "The broken display"
    msg["Message-ID"] = "<display@customer.example>"
    msg["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
    msg.set_content("The display shows this (see the picture).\n")
    msg.add_alternative('<p>The display shows this:</p><img src="cid:shot@customer.example">',
                        subtype="html")  # fmt: skip
    html = msg.get_payload()[1]
    assert isinstance(html, EmailMessage)
    html.add_related(PNG, maintype="image", subtype="png", cid="<shot@customer.example>",
                     filename="shot.png")  # fmt: skip
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                       filename="invoice.pdf")  # fmt: skip
    return msg.as_bytes(policy=policy.SMTP)


def test_api_cli_and_webhook_show_one_ticket_document(
    server: ServerThread, receiver: Receiver, tmp_path: Path, db_url: str
) -> None:
    file_mail(server, with_inline_image())
    [created] = wait_for(lambda: receiver.of_type("ticket.created"), "the ticket's event")
    pushed = created.event["data"]["ticket"]

    path = write_config(tmp_path / "firstline.yaml", db_url, **settings(receiver))
    [printed] = json_lines(run("tickets", "show", str(pushed["id"]), "--json", config=path))

    assert server.app.api is not None
    host, port = server.app.api.address
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=f"http://{host}:{port}", headers=headers, timeout=10) as api:
        answered = api.get(f"/api/v1/tickets/{pushed['id']}").json()
        [image, pdf] = answered["messages"][0]["attachments"]
        downloaded = api.get(image["download_url"].removeprefix(BASE_URL))

    assert answered == printed == pushed
    shapes = documented()
    shapes["ticket"].check(answered, alone=True, where="ticket")
    for message in answered["messages"]:
        shapes["message"].check(message, alone=True, where="message")
        for attachment in message["attachments"]:
            shapes["attachment"].check(attachment, alone=True, where="attachment")
    assert image["inline"] and image["content_id"] == "shot@customer.example"
    assert 'src="cid:shot@customer.example"' in (answered["messages"][0]["html"] or "")
    assert not pdf["inline"] and pdf["content_id"] is None
    assert image["download_url"] == f"{BASE_URL}/api/v1/attachments/{image['id']}"
    assert downloaded.status_code == 200 and downloaded.content == PNG


def test_the_documents_states_are_the_tables_states() -> None:
    """The OpenAPI schema lists states in place; they must be the tables' enums, all of them."""
    assert set(get_args(documents.TicketStatus)) == set(models.TicketStatus)
    assert set(get_args(documents.ReplyState)) == set(models.ReplyState)
