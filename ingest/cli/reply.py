"""``firstline reply TICKET --body-file F [--html-file H] [--cc ADDR]``: queue an answer.

The reply is composed and stored at once (its bytes are what every attempt
sends) and its id printed, so a script can follow its delivery state in
``firstline tickets show TICKET``. Sending is the worker's job, with retries.
"""

from __future__ import annotations

import sys
from typing import TextIO

import click
from sqlalchemy.orm import Session

from ingest.cli.common import config_option, load, open_store
from ingest.outbound.compose import InvalidReply
from ingest.outbound.replies import queue_reply


@click.command("reply")
@click.argument("ticket_id", type=int)
@click.option(
    "--body-file",
    type=click.File("r", encoding="utf-8"),
    required=True,
    help="the text of the reply (- for standard input)",
)
@click.option(
    "--html-file", type=click.File("r", encoding="utf-8"), help="an HTML version (sanitised)"
)
@click.option("--cc", multiple=True, metavar="ADDR", help="also send to ADDR (repeatable)")
@config_option
def reply(
    ticket_id: int,
    body_file: TextIO,
    html_file: TextIO | None,
    cc: tuple[str, ...],
    config_path: str,
) -> None:
    """Queue a reply to TICKET's requester; print the reply's id."""
    config = load(config_path)
    try:
        text = body_file.read()
        html = html_file.read() if html_file is not None else None
    except UnicodeDecodeError as exc:
        raise click.UsageError(
            f"the body and HTML files must be UTF-8 text ({exc.reason})"
        ) from None
    engine = open_store(config)
    try:
        with Session(engine) as session, session.begin():
            queued = queue_reply(session, config, ticket_id, text=text, html=html, cc=cc)
    except InvalidReply as exc:
        click.echo(f"firstline reply: {exc}", err=True)
        sys.exit(1)
    finally:
        engine.dispose()
    click.echo(str(queued.reply_id))
