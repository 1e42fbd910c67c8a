"""``firstline status``: the queue, the last batches, refusals and the outbox at a glance."""

from __future__ import annotations

import click
from sqlalchemy.orm import Session

from ingest.cli.common import config_option, echo_json, json_option, load, open_store
from storage.space import measure
from storage.status import summary


@click.command()
@config_option
@json_option
def status(config_path: str, as_json: bool) -> None:
    """What the metrics endpoint shows, read from the database."""
    config = load(config_path, secrets=False)
    engine = open_store(config)
    try:
        with Session(engine) as session:
            found = summary(session)
    finally:
        engine.dispose()
    space = measure(config)
    found["storage_space"] = space.as_dict() if space is not None else None
    if as_json:
        echo_json(found)
        return
    queue = found["queue"]
    click.echo("queue:   " + ", ".join(f"{state} {count}" for state, count in queue.items()))
    if found["oldest_waiting"]:
        age = _duration(found["oldest_waiting_seconds"])
        click.echo(f"oldest waiting: {found['oldest_waiting'][:19]} UTC ({age} ago)")
    else:
        click.echo("oldest waiting: -")
    if not found["batches"]:
        click.echo("batches: none recorded yet")
    for run in found["batches"]:
        error = f"  ERROR {run['error']}" if run["error"] else ""
        click.echo(
            f"last batch of {run['owner']}: {run['finished_at'][:19]} UTC, "
            f"{run['duration']:.2f}s, taken {run['taken']}, tickets {run['tickets']}, "
            f"failed {run['failed']}, deferred {run['deferred']}, "
            f"quarantined {run['quarantined']}{error}"
        )
    refused = found["rejections_24h"]
    click.echo("refused in 24h: " + (", ".join(f"{reason} {count}" for reason, count
                                              in sorted(refused.items())) or "none"))  # fmt: skip
    click.echo("outbox:  " + ", ".join(f"{s} {c}" for s, c in found["outbox"].items()))
    if space is not None:
        click.echo(f"storage: {space.describe()}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"
