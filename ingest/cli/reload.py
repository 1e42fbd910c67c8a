"""``firstline reload``: SIGHUP to the running serve/worker processes, and their verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ingest.cli.common import config_option, echo_json, json_option, load
from ingest.ops.reload import request_reload


@click.command()
@config_option
@json_option
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="where the processes keep their pid files (default: server.run_dir); "
    "given, the file is not read here at all, only by the processes",
)
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=15, show_default=True,
              help="seconds to wait for each process's answer")  # fmt: skip
def reload(config_path: str, as_json: bool, run_dir: Path | None, timeout: float) -> None:
    """Make running processes re-read the configuration file.

    The file is checked here first (the same line-numbered problems as
    check-config; nothing is sent when it is invalid), then each process
    validates it again in its own environment and answers; a refused edit
    leaves the running configuration in force. Exits 1 unless all accepted.
    """
    if run_dir is None:
        run_dir = load(config_path).server.run_dir
    if run_dir is None:
        raise click.ClickException(
            "server.run_dir is not set, so running processes leave no pid file: set it, "
            "or send SIGHUP yourself (systemctl reload firstline)"
        )
    outcomes = request_reload(run_dir, timeout=timeout)
    if not outcomes:
        raise click.ClickException(f"no running firstline process has a pid file in {run_dir}")
    failed = False
    for outcome in outcomes:
        result = outcome.result or {}
        failed |= not result.get("accepted", False)
        if as_json:
            echo_json({"role": outcome.role, "pid": outcome.pid, "error": outcome.error, **result})
            continue
        if outcome.error is not None:
            click.echo(f"{outcome.role} (pid {outcome.pid}): {outcome.error}", err=True)
        elif result["accepted"]:
            changes = ", ".join(result["changes"]) or "nothing"
            others = ", ".join(str(pid) for pid in result.get("reached", []))
            also = f"; also in intake processes {others}" if others else ""
            click.echo(f"{outcome.role} (pid {outcome.pid}): reloaded sha256={result['digest']}; "
                       f"changed: {changes}{also}")  # fmt: skip
        else:
            click.echo(f"{outcome.role} (pid {outcome.pid}): refused; the running "
                       "configuration stays in force:", err=True)  # fmt: skip
            for problem in result["problems"]:
                click.echo(f"  {problem}", err=True)
    if failed:
        sys.exit(1)
