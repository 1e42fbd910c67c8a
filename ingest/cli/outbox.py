"""``firstline outbox retry``: send held replies again once the login is fixed.

A reply whose login was refused waits as ``held`` (see :mod:`storage.outbox`);
the worker requeues it by itself when the mailbox's credentials change, and
this is for the other fixes an admin makes (consent granted, SMTP AUTH turned
on in Exchange) that the configuration cannot show.
"""

from __future__ import annotations

import click
from sqlalchemy.orm import Session

from ingest.cli.common import config_option, load, open_store
from storage import outbox as store_outbox


@click.group("outbox")
def outbox() -> None:
    """Replies on their way out."""


@outbox.command("retry")
@config_option
@click.argument("reply_ids", nargs=-1, type=int)
@click.option("--mailbox", metavar="ADDR", help="every held reply of this mailbox")
@click.option("--held", "all_held", is_flag=True, help="every held reply")
def retry(
    config_path: str, reply_ids: tuple[int, ...], mailbox: str | None, all_held: bool
) -> None:
    """Queue held replies again (by id, by --mailbox, or --held for all)."""
    if not (reply_ids or mailbox or all_held):
        raise click.UsageError("name reply ids, or use --mailbox ADDR or --held")
    engine = open_store(load(config_path))
    try:
        with Session(engine) as session, session.begin():
            done = store_outbox.retry_held(session, list(reply_ids), mailbox=mailbox)
    finally:
        engine.dispose()
    click.echo(
        f"re-queued {len(done)} repl{'y' if len(done) == 1 else 'ies'}"
        + (f": {', '.join(map(str, done))}" if done else "")
    )
