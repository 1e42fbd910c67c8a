"""``firstline serve`` and ``firstline worker``."""

from __future__ import annotations

import sys

import click

from ingest.cli.common import config_option, load
from ingest.ops.app import App
from ingest.ops.logs import setup_logging
from ingest.ops.processes import IntakeFailed
from ingest.ops.running import run, serve_forever, serve_verifier
from ingest.work.reading import reading_pool
from storage.schema import SchemaMismatch


@click.command()
@config_option
@click.option(
    "--no-worker",
    is_flag=True,
    help="listeners only; `firstline worker` processes elsewhere turn mail into tickets",
)
def serve(config_path: str, no_worker: bool) -> None:
    """Run the SMTP and LMTP listeners (in server.processes processes) and the batch worker."""
    config = load(config_path)
    setup_logging(config.logging.format, config.logging.level)
    _run(
        App(
            config, worker=not no_worker, verifier_factory=serve_verifier,
            batch_pool=reading_pool, processes=config.server.processes,
        )
    )  # fmt: skip


@click.command()
@config_option
def worker(config_path: str) -> None:
    """Run only the batch worker (for separate processes or hosts)."""
    config = load(config_path)
    setup_logging(config.logging.format, config.logging.level)
    _run(App(config, listeners=False, batch_pool=reading_pool))


def _run(app: App) -> None:
    try:
        run(serve_forever(app), app.holder.current.server.event_loop)
    except (SchemaMismatch, IntakeFailed) as exc:
        click.echo(f"firstline: {exc}", err=True)
        sys.exit(1)
