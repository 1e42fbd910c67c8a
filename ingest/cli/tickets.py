"""``firstline tickets list|show``: ``--json`` prints the API's documents."""

from __future__ import annotations

import sys

import click
from sqlalchemy.orm import Session

from ingest.channels.emit import ticket_document
from ingest.cli.common import config_option, echo_json, json_option, load, open_store, table
from storage import views


@click.group()
def tickets() -> None:
    """Look at tickets."""


@tickets.command("list")
@config_option
@json_option
@click.option("--limit", default=100, show_default=True)
def list_(config_path: str, as_json: bool, limit: int) -> None:
    """The newest tickets first; --json prints one object per line."""
    engine = open_store(load(config_path, secrets=False))
    try:
        with Session(engine) as session:
            rows = views.list_tickets(session, limit=limit)
    finally:
        engine.dispose()
    if as_json:
        for row in rows:
            echo_json(row.dump())
        return
    table(
        [[str(r.id), r.status, r.mailbox, r.requester, str(r.message_count),
          (r.created_at or "")[:19], r.subject[:60]] for r in rows],
        ["ID", "STATUS", "MAILBOX", "REQUESTER", "MSGS", "CREATED", "SUBJECT"],
    )  # fmt: skip


@tickets.command("show")
@config_option
@json_option
@click.argument("ticket_id", type=int)
def show(config_path: str, as_json: bool, ticket_id: int) -> None:
    """One ticket with its messages and replies, as GET /api/v1/tickets/ID has it."""
    config = load(config_path, secrets=False)
    engine = open_store(config)
    try:
        with Session(engine) as session:
            detail = ticket_document(session, config, ticket_id)
    finally:
        engine.dispose()
    if detail is None:
        click.echo(f"no ticket {ticket_id}", err=True)
        sys.exit(1)
    if as_json:
        echo_json(detail.dump())
        return
    click.echo(f"Ticket #{detail.id}  [{detail.status}]  {detail.mailbox}")
    click.echo(f"Subject:   {detail.subject}")
    click.echo(f"Requester: {detail.requester}")
    click.echo(f"Created:   {detail.created_at}")
    for message in detail.messages:
        click.echo("")
        click.echo(f"--- message {message.id}  {message.message_id}")
        click.echo(f"From: {message.from_name} <{message.from_}>".replace(" <", " <", 1))
        click.echo(f"Date: {message.date or ''}   forwarding: {message.forwarding}")
        if message.auto_reply:
            click.echo("(automatic reply)")
        for attachment in message.attachments:
            click.echo(
                f"Attachment: {attachment.filename} ({attachment.content_type}, "
                f"{attachment.size} bytes{', inline' if attachment.inline else ''})"
            )
        if message.text:
            click.echo("")
            click.echo(message.text)
    for reply in detail.replies:
        click.echo("")
        click.echo(f"--- reply {reply.id}  {reply.message_id}  [{reply.state}]")
        click.echo(f"To: {', '.join(reply.recipients)}   attempts: {reply.attempts}")
        if reply.state == "sent":
            relay_queue_id = reply.relay_queue_id or "-"
            click.echo(f"Server: {reply.server_reply}   relay queue id: {relay_queue_id}")
        elif reply.state in ("retrying", "failed", "held"):
            click.echo(f"Error ({reply.error_class}): {reply.last_error}")
            if reply.state == "held":
                click.echo(
                    "Held until the mailbox's credentials change (or: firstline outbox retry)"
                )
            if reply.state == "retrying":
                click.echo(f"Next attempt: {reply.next_attempt_at}")
