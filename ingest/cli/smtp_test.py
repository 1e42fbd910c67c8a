"""``firstline smtp-test MAILBOX [--to ADDR]``: try the mailbox's relay step by step.

An admin setting up a mailbox needs to know which step fails and what to
change, not a traceback: each step prints the server's answer, and a failure
prints its class, the server's own words and the hint from
:mod:`ingest.smtpfail` — the same diagnosis a failed reply shows.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from datetime import UTC, datetime

import click

from ingest.cli.common import config_option, load
from ingest.compose import InvalidReply, Sender, parse_address, send_test_message, to_bytes
from ingest.relay import Relay, StepDone, deliver
from ingest.smtpfail import SmtpFailure
from policy.config import Config, MailboxConfig, SmtpConfig
from policy.errors import PermFail


def _find(config: Config, name: str) -> MailboxConfig | None:
    wanted = name.strip().lower()
    return config.mailbox(wanted) or next(
        (m for m in config.mailboxes if m.name.strip().lower() == wanted), None
    )


def _show(done: StepDone) -> None:
    first_line = done.reply.splitlines()[0] if done.reply else ""
    click.echo(f"  {done.step:<9} {done.detail}: ok, {first_line}")


async def _run(config: Config, mailbox: MailboxConfig, smtp: SmtpConfig, to: str | None) -> None:
    hostname = config.server.hostname
    if to is None:
        async with Relay(smtp, hostname, _show):
            return
    message_id = f"<smtp-test.{secrets.token_hex(8)}@{hostname}>"
    sender = Sender(mailbox.name, mailbox.address)
    raw = to_bytes(send_test_message(sender, to, message_id, datetime.now(UTC)))
    delivered = await deliver(mailbox, smtp, hostname, raw, [to], _show)
    queued = f" (queue id {delivered.queue_id})" if delivered.queue_id else ""
    click.echo(f"test message {message_id} accepted{queued}")


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
    box = _find(config, mailbox)
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
    try:
        asyncio.run(_run(config, box, smtp, to))
    except SmtpFailure as exc:
        d = exc.diagnosis
        when = "temporary" if d.temporary else "permanent"
        click.echo(f"  {d.step:<9} FAILED")
        click.echo(f"FAILED at step '{d.step}': {d.kind} ({when})")
        click.echo(f"  server said: {d.server_text}")
        click.echo(f"  check: {d.hint}")
        sys.exit(1)
    except PermFail as exc:
        click.echo(f"FAILED: {exc}")
        sys.exit(1)
    click.echo("OK")
