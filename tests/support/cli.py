"""Running the ``firstline`` command in tests: a config file on disk, CliRunner or a process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner, Result

from ingest.cli import main
from tests.support.stores import BASE_CONFIG, merge


def write_config(path: Path, db_url: str, **changes: Any) -> Path:
    """BASE_CONFIG on ``db_url`` plus ``changes``, as the YAML file an admin would edit."""
    data = merge(merge(BASE_CONFIG, {"storage": {"url": db_url}}), changes)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run(*args: str, config: Path | None = None) -> Result:
    """``firstline ARGS -c CONFIG`` in-process; the result carries the exit code and output."""
    argv = [*args, "-c", str(config)] if config is not None else list(args)
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def json_lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
