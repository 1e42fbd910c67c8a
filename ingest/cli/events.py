"""``firstline events list|retry``: webhook events on their way, dead, or replayed."""

from __future__ import annotations

import click
from sqlalchemy.orm import Session

from ingest.cli.common import config_option, echo_json, json_option, load, open_store, table
from storage import events as store_events
from storage.models import EventState

_PENDING = [EventState.QUEUED, EventState.LEASED, EventState.RETRYING, EventState.DEAD]


@click.group()
def events() -> None:
    """Webhook events: what the helpdesks have not (yet) accepted."""


@events.command("list")
@config_option
@json_option
@click.option("--failed", is_flag=True, help="only dead events (retry window over, or refused)")
@click.option("--all", "everything", is_flag=True, help="delivered events too")
@click.option("--limit", default=1000, show_default=True)
def list_(config_path: str, as_json: bool, failed: bool, everything: bool, limit: int) -> None:
    """Events still on their way and dead ones; --json prints one object per line."""
    states = [EventState.DEAD] if failed else list(EventState) if everything else _PENDING
    engine = open_store(load(config_path, secrets=False))
    try:
        with Session(engine) as session:
            rows = store_events.list_events(session, states, limit=limit)
    finally:
        engine.dispose()
    if as_json:
        for row in rows:
            echo_json(row)
        return
    table(
        [[str(r["id"]), r["event_id"], r["type"], r["channel"], str(r["ticket_id"] or "-"),
          r["state"], str(r["attempts"]), (r["created_at"] or "")[:19],
          (r["last_error"] or "")[:80]] for r in rows],
        ["ID", "EVENT", "TYPE", "CHANNEL", "TICKET", "STATE", "TRIES", "CREATED", "LAST ERROR"],
    )  # fmt: skip
    click.echo(f"-- {len(rows)} event(s)")


def _event_ref(value: str) -> int | str:
    return int(value) if value.isdigit() else value


@events.command("retry")
@config_option
@click.argument("refs", nargs=-1)
@click.option("--failed", "all_failed", is_flag=True, help="every dead event")
def retry(config_path: str, refs: tuple[str, ...], all_failed: bool) -> None:
    """Send events again (by row id or evt_… id): dead ones, or delivered ones named here.

    Each keeps its event id, so a receiver that saw it already can tell.
    """
    if not refs and not all_failed:
        raise click.UsageError("name event ids or use --failed")
    engine = open_store(load(config_path, secrets=False))
    try:
        with Session(engine) as session, session.begin():
            done = store_events.replay(
                session,
                None if all_failed else [_event_ref(r) for r in refs],
                from_states=[EventState.DEAD]
                if all_failed
                else [EventState.DEAD, EventState.DELIVERED],
            )
    finally:
        engine.dispose()
    click.echo(
        f"re-queued {len(done)} event(s)" + (f": {', '.join(map(str, done))}" if done else "")
    )
