"""``firstline process``: one batch now, for cron jobs and impatient admins."""

from __future__ import annotations

import asyncio

import click

from ingest.cli.common import config_option, echo_json, json_option, load, open_store
from ingest.ops.logs import setup_logging
from ingest.work.batch import Batch
from ingest.work.reading import reading_pool
from ingest.work.tickets import file_message


@click.command()
@config_option
@json_option
def process(config_path: str, as_json: bool) -> None:
    """Process everything that is due now, print the counts and exit."""
    config = load(config_path)
    setup_logging(config.logging.format, "WARNING")
    engine = open_store(config)
    try:
        batch = Batch(
            engine, file_message, executor=reading_pool(), new_executor=reading_pool
        )  # fmt: skip
        try:
            result = asyncio.run(batch.drain(config))
        finally:
            batch.close()
    finally:
        engine.dispose()
    if as_json:
        echo_json(result.__dict__)
    else:
        click.echo(
            f"taken {result.taken}, tickets {result.tickets}, failed {result.failed}, "
            f"deferred {result.deferred}, quarantined {result.quarantined}"
        )
