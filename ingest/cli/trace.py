"""``firstline trace MESSAGE-ID``: "my customer sent it yesterday at 14:05 — where is it?"."""

from __future__ import annotations

import sys
from typing import Any

import click
from sqlalchemy.orm import Session

from ingest.cli.common import config_option, echo_json, json_option, load, open_store
from storage.trace import trace as find


@click.command()
@config_option
@json_option
@click.argument("message_id")
def trace(config_path: str, as_json: bool, message_id: str) -> None:
    """Everything we know about a Message-ID (angle brackets optional) or a trace id.

    Exits 1 when nothing is known about it: never received, or older than
    the retention window.
    """
    engine = open_store(load(config_path))
    try:
        with Session(engine) as session:
            found = find(session, message_id)
    finally:
        engine.dispose()
    if as_json:
        echo_json(found)
    else:
        _print(found)
    if not found["found"]:
        sys.exit(1)


def _print(found: dict[str, Any]) -> None:
    message_id = found["message_id"]
    if not found["found"]:
        click.echo(f"<{message_id}>: nothing known (never received, or purged after the "
                   "retention window)")  # fmt: skip
        return
    click.echo(f"<{message_id}>")
    for item in found["status"]:
        click.echo(f"  {item['mailbox'] or '-'}: {item['status']}")
    click.echo("events:")
    for event in found["events"]:
        details = "  ".join(
            f"{key}={value}"
            for key, value in event.items()
            if key not in ("at", "event") and value not in (None, "", [], {})
        )
        click.echo(f"  {(event['at'] or '')[:19]}  {event['event']:<20} {details}")
