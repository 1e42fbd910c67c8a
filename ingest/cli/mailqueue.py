"""``firstline queue list|retry``, like ``postqueue -p`` / ``postsuper -r``."""

from __future__ import annotations

import click
from sqlalchemy.orm import Session

from ingest.cli.common import (
    MessageRef,
    config_option,
    echo_json,
    json_option,
    load,
    open_store,
    table,
)
from storage import mailqueue as store_queue
from storage import views
from storage.models import QueueState

_VISIBLE = [QueueState.QUEUED, QueueState.LEASED, QueueState.FAILED]


@click.group()
def queue() -> None:
    """Inspect and re-queue inbound messages."""


@queue.command("list")
@config_option
@json_option
@click.option("--state", "states", multiple=True,
              type=click.Choice([s.value for s in QueueState]),
              help="only these states (default: queued, leased, failed)")  # fmt: skip
def list_(config_path: str, as_json: bool, states: tuple[str, ...]) -> None:
    """Messages waiting, in progress or failed; --json prints one object per line."""
    engine = open_store(load(config_path, secrets=False))
    try:
        with Session(engine) as session:
            rows = views.list_queue(session, list(states) or [s.value for s in _VISIBLE])
    finally:
        engine.dispose()  # a pooled PostgreSQL connection left for the GC warns
    if as_json:
        for row in rows:
            echo_json(row)
        return
    table(
        [[str(r["id"]), r["trace_id"], r["state"], str(r["attempts"]),
          (r["received_at"] or "")[:19], r["mail_from"] or "<>", r["mailbox"],
          (r["last_error"] or "")[:80]] for r in rows],
        ["ID", "TRACE", "STATE", "TRIES", "ARRIVED", "SENDER", "MAILBOX", "REASON"],
    )  # fmt: skip
    click.echo(f"-- {len(rows)} message(s)")


@queue.command("retry")
@config_option
@click.argument("refs", nargs=-1, type=MessageRef())
@click.option("--failed", "all_failed", is_flag=True, help="every failed message")
def retry(config_path: str, refs: tuple[int | str, ...], all_failed: bool) -> None:
    """Put failed messages (by id or queue ID) back in the queue with a fresh attempt count."""
    if not refs and not all_failed:
        raise click.UsageError("name ids or queue IDs, or use --failed")
    engine = open_store(load(config_path, secrets=False))
    try:
        with Session(engine) as session, session.begin():
            named = None if all_failed else store_queue.entries_named(session, refs)
            done = store_queue.requeue(session, named, from_states=[QueueState.FAILED])
    finally:
        engine.dispose()
    click.echo(
        f"re-queued {len(done)} message(s)" + (f": {', '.join(map(str, done))}" if done else "")
    )
