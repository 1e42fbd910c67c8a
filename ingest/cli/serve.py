"""``firstline serve`` and ``firstline worker``."""

from __future__ import annotations

import asyncio

import click

from ingest.app import App
from ingest.cli.common import config_option, load
from ingest.logs import setup_logging
from policy.authenticate import production_verifier


@click.command()
@config_option
def serve(config_path: str) -> None:
    """Run the SMTP and LMTP listeners and the batch worker."""
    config = load(config_path)
    setup_logging(config.logging.format, config.logging.level)
    asyncio.run(App(config, verifier_factory=production_verifier).serve_forever())


@click.command()
@config_option
def worker(config_path: str) -> None:
    """Run only the batch worker (for separate processes or hosts)."""
    config = load(config_path)
    setup_logging(config.logging.format, config.logging.level)
    asyncio.run(App(config, listeners=False).serve_forever())
