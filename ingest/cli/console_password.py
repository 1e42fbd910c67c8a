"""``firstline console-password``: an argon2id hash for ``console.users[].password``."""

from __future__ import annotations

import click

from ingest.console.auth import hash_password


@click.command("console-password")
def console_password() -> None:
    """Ask for a password twice and print its argon2id hash for the config file."""
    password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    click.echo(hash_password(password))
