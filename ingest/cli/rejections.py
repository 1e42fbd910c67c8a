"""``firstline rejections``: what we refused and why, newest first; ``show ID``; ``--follow``."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ingest.cli.common import (
    MessageRef,
    config_option,
    echo_each,
    echo_json,
    echo_verdict,
    json_option,
    load,
    open_store,
    table,
    table_row,
)
from storage import rejections as search
from storage.rejections import RejectionFilter, parse_time


class _When(click.ParamType[datetime]):
    name = "WHEN"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _row(r: dict[str, Any]) -> list[str]:
    client = f"{r['client_name'] or 'unknown'}[{r['client_ip']}]"
    return [str(r["id"]), r["created_at"][:19], r["stage"], r["reason"], client,
            r["mail_from"] or "<>", ",".join(r["rcpt_to"]), r["message_id"] or ""]  # fmt: skip


_HEADERS = ["ID", "TIME (UTC)", "STAGE", "REASON", "CLIENT", "FROM", "TO", "MESSAGE-ID"]
# Room for what usually comes when following, before any row has been seen.
_FOLLOW_WIDTHS = [6, 19, 5, 19, 32, 28, 24, 0]


@click.group(invoke_without_command=True)
@config_option
@json_option
@click.option(
    "--since",
    type=_When(),
    help="a duration back from now (30m, 24h, 7d) or a date/time (UTC); default 24h, "
    "or everything kept when --message-id is given",
)
@click.option("--until", type=_When(), help="same forms as --since")
@click.option("--message-id", help="angle brackets optional")
@click.option("--sender", help="an address, or a domain: envelope sender or header From")
@click.option("--mailbox", help="one of our service addresses")
@click.option("--reason", help="a reason code (see docs/operators.md)")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--follow", is_flag=True, help="keep printing new refusals as they happen")
@click.option(
    "--poll",
    type=click.FloatRange(0.05, 60),
    default=1.0,
    show_default=True,
    help="seconds between checks with --follow",
)
@click.pass_context
def rejections(
    ctx: click.Context,
    config_path: str,
    as_json: bool,
    since: datetime | None,
    until: datetime | None,
    message_id: str | None,
    sender: str | None,
    mailbox: str | None,
    reason: str | None,
    limit: int,
    follow: bool,
    poll: float,
) -> None:
    """List refusals (RCPT, DATA and batch), newest first; --json prints one object per line."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["as_json"] = as_json
    refusal = search.unknown_reason(reason)
    if refusal is not None:
        raise click.BadParameter(refusal, param_hint="--reason")
    if ctx.invoked_subcommand is not None:
        return
    if since is None and not message_id:
        since = parse_time("24h")
    query = RejectionFilter(since, until, message_id, sender, mailbox, reason)
    engine = open_store(load(config_path, secrets=False))
    try:
        with Session(engine) as session:
            rows = search.search(session, query, limit=limit)
            start = search.last_id(session)
        if as_json:
            for row in rows:
                echo_json(row)
        else:
            widths = table([_row(r) for r in rows], _HEADERS,
                           min_widths=_FOLLOW_WIDTHS if follow else None)  # fmt: skip
            if not follow:
                click.echo(f"-- {len(rows)} refusal(s)")
        if follow:
            _follow(engine, RejectionFilter(None, until, message_id, sender, mailbox, reason),
                    start, None if as_json else widths, poll)  # fmt: skip
    finally:
        engine.dispose()


def _follow(
    engine: Engine, query: RejectionFilter, after: int, widths: list[int] | None, poll: float
) -> None:
    """Poll by id (ids only grow), like ``tail -f``; Ctrl-C ends it.

    ``widths`` are the table's columns (None: JSON lines); a later row with a
    longer value than any seen so far pushes only its own line out of line.
    """
    try:
        while True:
            with Session(engine) as session:
                rows = search.newer_than(session, query, after)
            for row in rows:
                if widths is None:
                    echo_json(row)
                else:
                    click.echo(table_row(_row(row), widths))
                after = max(after, row["id"])
            time.sleep(poll)
    except KeyboardInterrupt:
        return


@rejections.command("show")
@click.argument("ref", type=MessageRef())
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="as for `rejections` (either place works)")  # fmt: skip
@json_option
@click.pass_context
def show(ctx: click.Context, ref: int | str, config_path: str | None, as_json: bool) -> None:
    """One refusal (by id, or every one of a queue ID) with everything recorded."""
    engine = open_store(load(config_path or ctx.obj["config_path"], secrets=False))
    try:
        with Session(engine) as session:
            records = [search.detail(session, i) for i in search.ids_named(session, ref)]
    finally:
        engine.dispose()
    found = [r for r in records if r is not None]
    if not found:
        raise click.ClickException(f"no rejection record {ref}")
    echo_each(found, as_json or ctx.obj.get("as_json", False), _print)


def _print(record: dict[str, Any]) -> None:
    headers = record.pop("headers")
    verdict = record.pop("verdict")
    for key, value in record.items():
        if key == "rcpt_to":
            value = ", ".join(value)
        click.echo(f"{key + ':':16}{value if value not in (None, '', {}) else '-'}")
    echo_verdict(verdict)
    click.echo("headers:")
    click.echo(headers.replace("\r\n", "\n") if headers else "  (none: refused before DATA)")
