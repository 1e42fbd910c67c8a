"""What every command shares: the ``-c`` option, config loading, the store."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click
from sqlalchemy import Engine

from policy.config.loading import ConfigError, load_config
from policy.config.model import Config
from policy.verify.verdict import explain, summary
from storage.engine import make_engine
from storage.schema import SchemaMismatch, prepare

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    return click.option(
        "-c",
        "--config",
        "config_path",
        envvar="FIRSTLINE_CONFIG",
        default="config.yaml",
        show_default=True,
        type=click.Path(dir_okay=False),
        help="the YAML configuration file (or $FIRSTLINE_CONFIG)",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="machine-readable output")(func)


def load(config_path: str, *, secrets: bool = True) -> Config:
    """Load the configuration or exit 1 listing every problem with its line.

    ``secrets=False`` for commands that send nothing (status, trace, tickets,
    …): they leave ``${ENV}`` and ``file:`` references unresolved, so they work
    on a host, or in a shell, without the relays' passwords.
    """
    try:
        return load_config(config_path, resolve_secrets=secrets)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)


def open_store(config: Config) -> Engine:
    """The engine for ``storage.url``; exit 1 if its schema is not this version's."""
    engine = make_engine(config.storage.url)
    try:
        prepare(engine)
    except SchemaMismatch as exc:
        engine.dispose()
        click.echo(f"firstline: {exc}", err=True)
        sys.exit(1)
    return engine


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, default=str))


def echo_each(
    objects: list[dict[str, Any]], as_json: bool, show: Callable[[dict[str, Any]], None]
) -> None:
    """Shown objects (one queue ID may name several): JSON lines, or ``show``'s text apart."""
    for index, value in enumerate(objects):
        if as_json:
            echo_json(value)
            continue
        if index:
            click.echo("")
        show(value)


def table(
    rows: list[list[str]], headers: list[str], *, min_widths: list[int] | None = None
) -> list[int]:
    """A plain, aligned table for humans (the JSON output is for scripts).

    Returns the column widths, so rows printed later (``--follow``) line up too.
    """
    widths = [max(len(h), m) for h, m in zip(headers, min_widths or [0] * len(headers),
                                                 strict=True)]  # fmt: skip
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    click.echo(table_row(headers, widths))
    for row in rows:
        click.echo(table_row(row, widths))
    return widths


def table_row(row: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()


def echo_verdict(details: Mapping[str, Any] | None, *, indent: str = "", width: int = 16) -> None:
    """A recorded verdict as people read it: the one-line summary, then a line per check."""
    click.echo(f"{indent}{'verdict:':{width}}{summary(details)}")
    for label, text in explain(details):
        click.echo(f"{indent}  {label + ':':{width - 2}}{text}")


_QUEUE_ID = re.compile(r"^[0-9A-Fa-f]{12}$")


class MessageRef(click.ParamType[int | str]):
    """A message as operators name it: a numeric id, or our queue ID from
    ``250 2.0.0 Ok: queued as 063B14587ED5`` (12 hex digits, any case)."""

    name = "ID|QUEUE-ID"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | str:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if _QUEUE_ID.match(text):
            return text.upper()
        if text.isdigit():
            return int(text)
        self.fail(
            f"{text!r} is neither a number nor a queue ID (the 12 hex digits of "
            "'250 … queued as ID')",
            param,
            ctx,
        )
