"""``firstline quarantine list|show|release|delete``; every action is audited with who/when."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any

import click
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
)
from storage import quarantine as store
from storage.mailqueue import entries_named
from storage.models import QueueState


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
    engine = open_store(load(config_path, secrets=False))
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


def _named(session: Session, ref: int | str) -> list[int]:
    """The quarantined entries ``ref`` names (a queue ID names one per mailbox held)."""
    found = entries_named(session, [ref], states=[QueueState.QUARANTINED])
    if not found:
        raise click.ClickException(f"no quarantined message with id {ref}")
    return found


@quarantine.command("show")
@config_option
@json_option
@click.argument("ref", type=MessageRef())
def show(config_path: str, as_json: bool, ref: int | str) -> None:
    """One quarantined message (by id or queue ID): envelope, reason, verdict, headers, history."""
    engine = open_store(load(config_path, secrets=False))
    try:
        with Session(engine) as session:
            details = [store.show(session, entry_id) for entry_id in _named(session, ref)]
    except store.NotQuarantined as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    echo_each(details, as_json, _print)


def _print(detail: dict[str, Any]) -> None:
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
    config_path: str, ref: int | str, actor: str, action: str, note: str | None
) -> list[dict[str, Any]]:
    engine = open_store(load(config_path, secrets=False))
    try:
        with Session(engine) as session, session.begin():
            act = store.release if action == "release" else store.remove
            return [
                act(session, entry_id, by=actor, note=note) for entry_id in _named(session, ref)
            ]
    except store.NotQuarantined as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


@quarantine.command("release")
@config_option
@_by_option
@click.argument("ref", type=MessageRef())
def release(config_path: str, actor: str, note: str | None, ref: int | str) -> None:
    """Queue the message (by id or queue ID) again: the next batch files it like any other."""
    for done in _act(config_path, ref, actor, "release", note):
        click.echo(f"released {done['id']} ({done['trace_id']}) to {done['mailbox']}, by {actor}; "
                   "the next batch (or `firstline process`) files it")  # fmt: skip


@quarantine.command("delete")
@config_option
@_by_option
@click.argument("ref", type=MessageRef())
def delete(config_path: str, actor: str, note: str | None, ref: int | str) -> None:
    """Delete the message (by id or queue ID) for good; the audit trail keeps who and when."""
    for done in _act(config_path, ref, actor, "delete", note):
        click.echo(f"deleted {done['id']} ({done['trace_id']}), by {actor}")
