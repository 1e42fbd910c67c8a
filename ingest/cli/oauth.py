"""``firstline oauth login MAILBOX``: sign a mailbox in for the delegated OAuth flow.

The device authorization grant (RFC 8628): we print where to go and the code
to enter, the mailbox's user signs in there (on any device), and the refresh
token the provider then hands us goes straight into the database — never to
the terminal or a log. Replies held for this mailbox's login are queued again.
"""

from __future__ import annotations

import asyncio
import sys

import click
from sqlalchemy.orm import Session

from ingest.cli.common import config_option, load, open_store
from ingest.outbound.oauth import finish_device_login, start_device_login
from ingest.outbound.sendtest import find_mailbox
from ingest.outbound.smtpfail import SmtpFailure
from storage import oauth_tokens as store_oauth
from storage import outbox as store_outbox


@click.group("oauth")
def oauth() -> None:
    """OAuth 2.0 sign-in for the mailboxes' relays."""


@oauth.command("login")
@click.argument("mailbox")
@config_option
def login(mailbox: str, config_path: str) -> None:
    """Sign MAILBOX's account in (device code) and store its refresh token."""
    config = load(config_path)
    box = find_mailbox(config, mailbox)
    if box is None:
        raise click.UsageError(f"no mailbox {mailbox!r} in {config_path}")
    smtp = box.smtp
    if smtp is None or not smtp.oauth:
        raise click.UsageError(f"mailbox {box.address} does not use smtp.auth.method: oauth2")
    if smtp.auth.flow != "delegated":
        raise click.UsageError(
            f"mailbox {box.address} uses the app flow, which needs no sign-in "
            "(firstline smtp-test shows whether its token works)"
        )
    if smtp.auth.device_endpoint is None:
        raise click.UsageError(
            f"mailbox {box.address}: {smtp.auth.provider} offers no device sign-in here "
            "(Google's does not allow the Gmail scope); give a refresh_token instead, "
            "see docs/oauth.md"
        )
    engine = open_store(config)
    try:
        try:
            code = asyncio.run(start_device_login(smtp))
            click.echo(f"To sign in as {smtp.account}, open {code.uri}")
            click.echo(f"and enter the code {code.user_code}")
            click.echo("waiting for the sign-in …")
            grant = asyncio.run(finish_device_login(smtp, code))
        except SmtpFailure as exc:
            d = exc.diagnosis
            click.echo(f"FAILED: {d.server_text}")
            click.echo(f"  check: {d.hint}")
            sys.exit(1)
        if grant.refresh_token is None:
            click.echo("FAILED: the provider gave no refresh token")
            click.echo("  check: the scope must allow offline access (offline_access)")
            sys.exit(1)
        with Session(engine) as session, session.begin():
            store_oauth.store_login(session, box.key, smtp.credentials(), grant.refresh_token)
            released = store_outbox.retry_held(session, mailbox=box.address)
    finally:
        engine.dispose()
    click.echo(f"signed in: the refresh token for {box.address} is stored")
    if released:
        click.echo(f"{len(released)} held repl{'y' if len(released) == 1 else 'ies'} queued again")
