"""``firstline trace MESSAGE-ID``: "my customer sent it yesterday at 14:05 — where is it?"."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import click
from sqlalchemy.orm import Session

from ingest.cli.common import (
    config_option,
    echo_json,
    echo_verdict,
    json_option,
    load,
    open_store,
)
from ingest.ops.lookup import MAX_PASTE, where_is


@click.command()
@config_option
@json_option
@click.option(
    "--headers",
    "headers_file",
    type=click.File("r", encoding="utf-8", errors="replace"),
    help="a pasted header block (- for stdin): matched by Message-ID, else by sender, "
    "date and subject",
)
@click.argument("message_id", required=False)
def trace(
    config_path: str, as_json: bool, headers_file: TextIO | None, message_id: str | None
) -> None:
    """Everything we know about a Message-ID (angle brackets optional) or a queue ID.

    The queue ID is the one in our "250 … queued as ID" reply and Received header.

    Exits 1 when nothing is known about it: never received, or older than
    the retention window.
    """
    if (headers_file is None) == (message_id is None):
        raise click.UsageError("give a MESSAGE_ID or --headers FILE (one of them)")
    query = headers_file.read(MAX_PASTE) if headers_file is not None else message_id
    assert query is not None
    if headers_file is not None and "\n" not in query.strip():
        query = query.strip() + "\n"  # one header line is still a header block
    engine = open_store(load(config_path, secrets=False))
    try:
        with Session(engine) as session:
            found = where_is(session, query)
    finally:
        engine.dispose()
    if as_json:
        echo_json(found)
    else:
        _print(found, from_headers=headers_file is not None)
    if not found["found"]:
        sys.exit(1)


def _heading(found: dict[str, Any]) -> str:
    """What was asked for, named as what it is: a queue ID or a Message-ID."""
    query, message_id, trace_ids = found["query"], found["message_id"], found["trace_ids"]
    if query.upper() in trace_ids and "@" not in query:
        return f"queue ID {query.upper()}, Message-ID {message_id or '(none)'}"
    ids = f", queue ID {', '.join(trace_ids)}" if trace_ids else ""
    return f"Message-ID {message_id}{ids}"


def _print(found: dict[str, Any], *, from_headers: bool) -> None:
    match = found["match"]
    if from_headers and match["rule"] is None:
        click.echo("no message matches these headers (by Message-ID, or by sender, date "
                   "and subject)")  # fmt: skip
        return
    if from_headers:
        others = match["candidates"] - 1
        more = f"; {others} other candidate(s), the nearest in time is shown" if others else ""
        click.echo(f"matched by {match['rule']}{more}")
    if not found["found"]:
        click.echo(f"{found['query']}: nothing known (never received, or purged after the "
                   "retention window)")  # fmt: skip
        return
    click.echo(_heading(found))
    for item in found["status"]:
        click.echo(f"  {item['mailbox'] or '-'}: {item['status']}")
    click.echo("events:")
    for event in found["events"]:
        client = _client(event)
        details = "  ".join(
            f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
            for key, value in event.items()
            if key not in _NOT_INLINE and value not in (None, "", [], {})
        )
        click.echo(f"  {(event['at'] or '')[:19]}  {event['event']:<20} {client}{details}")
        if "verdict" in event:
            echo_verdict(event["verdict"], indent=" " * 23)


_NOT_INLINE = {"at", "event", "verdict", "client_ip", "client_name"}


def _client(event: dict[str, Any]) -> str:
    if not event.get("client_ip"):
        return ""
    return f"client={event.get('client_name') or 'unknown'}[{event['client_ip']}]  "
