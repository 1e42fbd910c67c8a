"""``firstline quarantine list|show|release|delete``; every action is audited with who/when."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.orm import Session

from ingest.cli.common import (
    config_option,
    echo_json,
    echo_verdict,
    json_option,
    load,
    open_store,
    table,
)
from storage import quarantine as store


def _by_option(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--note", help="why (kept in the audit trail, e.g. 'customer confirmed it')"
    )(func)
    return click.option(
        "--by", "actor", default=getpass.getuser, show_default="your user name",
        help="who is acting, for the audit trail",
    )(func)  # fmt: skip


@click.group()
def quarantine() -> None:
    """Held mail: look at it, release it into the batch, or delete it."""


@quarantine.command("list")
@config_option
@json_option
def list_(config_path: str, as_json: bool) -> None:
    """Quarantined messages, newest first."""
    engine = open_store(load(config_path))
    try:
        with Session(engine) as session:
            rows = store.list_quarantined(session)
    finally:
        engine.dispose()
    if as_json:
        for row in rows:
            echo_json(row)
        return
    table(
        [[str(r["id"]), r["trace_id"], (r["quarantined_at"] or "")[:19], r["mailbox"],
          r["mail_from"] or "<>", (r["subject"] or "")[:40], (r["reason"] or "")[:60]]
         for r in rows],
        ["ID", "TRACE", "SINCE (UTC)", "MAILBOX", "SENDER", "SUBJECT", "REASON"],
    )  # fmt: skip
    click.echo(f"-- {len(rows)} message(s)")


@quarantine.command("show")
@config_option
@json_option
@click.argument("entry_id", type=int)
def show(config_path: str, as_json: bool, entry_id: int) -> None:
    """One quarantined message: envelope, reason, headers and its audit trail."""
    engine = open_store(load(config_path))
    try:
        with Session(engine) as session:
            detail = store.show(session, entry_id)
    except store.NotQuarantined as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    if as_json:
        echo_json(detail)
        return
    headers = detail.pop("headers")
    history = detail.pop("history")
    verdict = detail.pop("verdict")
    for key, value in detail.items():
        click.echo(f"{key + ':':24}{value if value not in (None, '', {}) else '-'}")
    echo_verdict(verdict, width=24)
    click.echo("history:" + ("" if history else " -"))
    for item in history:
        click.echo(f"  {item['at'][:19]}  {item['action']:<12} by {item['by']}")
    click.echo("headers:")
    click.echo(headers)


def _act(
    config_path: str, entry_id: int, actor: str, action: str, note: str | None
) -> dict[str, Any]:
    engine = open_store(load(config_path))
    try:
        with Session(engine) as session, session.begin():
            if action == "release":
                return store.release(session, entry_id, by=actor, note=note)
            return store.remove(session, entry_id, by=actor, note=note)
    except store.NotQuarantined as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


@quarantine.command("release")
@config_option
@_by_option
@click.argument("entry_id", type=int)
def release(config_path: str, actor: str, note: str | None, entry_id: int) -> None:
    """Queue the message again: the next batch files it like any other."""
    done = _act(config_path, entry_id, actor, "release", note)
    click.echo(f"released {entry_id} ({done['trace_id']}) to {done['mailbox']}, by {actor}; "
               "the next batch (or `firstline process`) files it")  # fmt: skip


@quarantine.command("delete")
@config_option
@_by_option
@click.argument("entry_id", type=int)
def delete(config_path: str, actor: str, note: str | None, entry_id: int) -> None:
    """Delete the message for good (the audit trail keeps who and when)."""
    done = _act(config_path, entry_id, actor, "delete", note)
    click.echo(f"deleted {entry_id} ({done['trace_id']}), by {actor}")
