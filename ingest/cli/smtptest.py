"""``firstline smtp-test MAILBOX [--to ADDR]``: try the mailbox's relay step by step.

An admin setting up a mailbox needs to know which step fails and what to
change, not a traceback: each step prints the server's answer, and a failure
prints its class, the server's own words and the hint from
:mod:`ingest.outbound.smtpfail` — the same diagnosis a failed reply shows. With OAuth
2.0 the first step is the access token, taken from (and kept in) the same
store the worker uses, so a token obtained here is the one replies use.
"""

from __future__ import annotations

import asyncio
import sys

import click

from ingest.cli.common import config_option, load, open_store
from ingest.outbound.compose import InvalidReply, parse_address
from ingest.outbound.relay import StepDone
from ingest.outbound.sendtest import find_mailbox, send_test


def _show(done: StepDone) -> None:
    first_line = done.reply.splitlines()[0] if done.reply else ""
    click.echo(f"  {done.step:<9} {done.detail}: ok, {first_line}")


@click.command("smtp-test")
@click.argument("mailbox")
@click.option("--to", "to", metavar="ADDR", help="also send a test message to ADDR")
@config_option
def smtp_test(mailbox: str, to: str | None, config_path: str) -> None:
    """Connect, negotiate encryption, log in and (with --to) send through MAILBOX's relay.

    MAILBOX is the mailbox's address or name. Exit 0 when every step worked,
    1 when one failed, 2 when the mailbox or the address is unusable.
    """
    config = load(config_path)
    box = find_mailbox(config, mailbox)
    if box is None:
        raise click.UsageError(f"no mailbox {mailbox!r} in {config_path}")
    if box.smtp is None:
        raise click.UsageError(f"mailbox {box.address} has no smtp section")
    if to is not None:
        try:
            parse_address(to)
        except InvalidReply as exc:
            raise click.BadParameter(str(exc), param_hint="--to") from None
    smtp = box.smtp
    click.echo(f"{box.address} via {smtp.host}:{smtp.port} ({smtp.encryption})")
    engine = open_store(config) if smtp.oauth else None
    try:
        outcome = asyncio.run(send_test(config, box, to, _show, engine=engine))
    finally:
        if engine is not None:
            engine.dispose()
    if outcome.failure is not None:
        d = outcome.failure
        when = "temporary" if d.temporary else "permanent"
        click.echo(f"  {d.step:<9} FAILED")
        click.echo(f"FAILED at step '{d.step}': {d.kind} ({when})")
        if d.code is not None:
            click.echo(f"  server said: {d.server_text}")
        else:  # no SMTP reply: our words, then the library's
            click.echo(f"  what happened: {d.happened or d.server_text}")
            if d.happened:
                click.echo(f"  details: {d.server_text}")
        click.echo(f"  check: {d.hint}")
        sys.exit(1)
    if outcome.error is not None:
        click.echo(f"FAILED: {outcome.error}")
        sys.exit(1)
    if outcome.message_id is not None:
        queued = f" (queue id {outcome.queue_id})" if outcome.queue_id else ""
        click.echo(f"test message {outcome.message_id} accepted{queued}")
    click.echo("OK")
