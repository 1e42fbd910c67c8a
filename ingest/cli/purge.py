"""``firstline purge``: the retention purge the worker runs hourly, now (or only shown)."""

from __future__ import annotations

import click

from ingest.cli.common import config_option, echo_json, json_option, load, open_store
from storage.retention import purge as run_purge


@click.command()
@config_option
@json_option
@click.option("--dry-run", is_flag=True, help="show what would be purged; change nothing")
def purge(config_path: str, as_json: bool, dry_run: bool) -> None:
    """Purge raw mail of finished work, rejection records and quarantined mail past retention."""
    config = load(config_path, secrets=False)
    engine = open_store(config)
    try:
        report = run_purge(engine, days=config.retention.days, dry_run=dry_run)
    finally:
        engine.dispose()
    if as_json:
        echo_json({"dry_run": dry_run, **report.as_dict()})
        return
    verb = "would purge" if dry_run else "purged"
    click.echo(f"retention {config.retention.days} days: older than {report.cutoff.isoformat()}")
    raw = report.raw_messages
    click.echo(f"  {verb} the raw bytes of {len(raw)} finished message(s){_some(raw)}")
    oldest = f" (oldest {report.oldest_rejection.isoformat()})" if report.oldest_rejection else ""
    click.echo(f"  {verb} {report.rejections} rejection record(s){oldest}")
    held = [str(entry) for entry in report.quarantined]
    click.echo(f"  {verb} {len(held)} quarantined message(s){_some(held)}")
    click.echo(f"  {verb} {report.webhook_events} delivered or dead webhook event(s)")


def _some(names: list[str], most: int = 20) -> str:
    if not names:
        return ""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ": " + ", ".join(names[:most]) + more
