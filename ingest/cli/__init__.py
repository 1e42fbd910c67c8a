"""The ``firstline`` command: one module per command, registered here."""

from __future__ import annotations

import click

from ingest.cli import (
    backup,
    check_config,
    db,
    events,
    mailqueue,
    mailtrace,
    oauth,
    outbox,
    process,
    purge,
    quarantine,
    rejections,
    reload,
    serve,
    status,
    tickets,
)
from ingest.cli.console_password import console_password
from ingest.cli.reply import reply
from ingest.cli.smtptest import smtp_test


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="firstline", message="firstline %(version)s")
def main() -> None:
    """firstline: mail ingestion for helpdesks."""


main.add_command(serve.serve)
main.add_command(serve.worker)
main.add_command(check_config.check_config)
main.add_command(process.process)
main.add_command(tickets.tickets)
main.add_command(mailqueue.queue)
main.add_command(db.db)
main.add_command(rejections.rejections)
main.add_command(mailtrace.trace)
main.add_command(purge.purge)
main.add_command(quarantine.quarantine)
main.add_command(reload.reload)
main.add_command(status.status)
main.add_command(events.events)
main.add_command(oauth.oauth)
main.add_command(outbox.outbox)
main.add_command(backup.backup)
main.add_command(smtp_test)
main.add_command(reply)
main.add_command(console_password)
