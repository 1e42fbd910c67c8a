"""``firstline check-config``: every problem with its line, or a short summary."""

from __future__ import annotations

from pathlib import Path

import click

from ingest.cli.common import config_option, load
from ingest.outbound.smtpfail import smtp_warnings
from policy.config.loading import inline_secrets


@click.command("check-config")
@config_option
def check_config(config_path: str) -> None:
    """Validate the configuration file; exit 1 listing every problem."""
    config = load(config_path)
    server = config.server
    click.echo(f"{config_path}: OK")
    click.echo(f"  hostname {server.hostname}")
    click.echo(f"  smtp {server.smtp.listen if server.smtp else 'off'}, "
               f"lmtp {server.lmtp.listen if server.lmtp else 'off'}")  # fmt: skip
    click.echo(f"  storage {config.storage.url.split('://', 1)[0]}")
    click.echo(f"  {len(config.channels)} channel(s), {len(config.mailboxes)} mailbox(es):")
    for mailbox in config.mailboxes:
        smtp = mailbox.smtp
        relay = f"{smtp.host}:{smtp.port} {smtp.encryption}" if smtp else "no SMTP relay"
        if smtp is not None and smtp.oauth:
            relay += f", OAuth 2.0 ({smtp.auth.provider}, {smtp.auth.flow})"
        click.echo(f"    {mailbox.address} ({mailbox.name}) → {mailbox.channel}; {relay}")
    for warning in smtp_warnings(config):
        click.echo(f"  warning: {warning}")
    for problem in inline_secrets(Path(config_path).read_text(encoding="utf-8"), config_path):
        click.echo(f"  warning: {problem}")
