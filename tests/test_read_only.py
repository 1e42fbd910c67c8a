"""Commands that only read the database work without the relays' and webhooks' secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import run, write_config
from tests.support.stores import BASE_CONFIG

MISSING = "ACME_SMTP_PASSWORD_NOT_SET_HERE"


@pytest.fixture
def secret_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(MISSING, raising=False)
    smtp = {"host": "smtp.example.com", "port": 587, "account": "support@example.com",
            "password": f"${{{MISSING}}}"}  # fmt: skip
    mailboxes = [{**BASE_CONFIG["mailboxes"][0], "smtp": smtp}, *BASE_CONFIG["mailboxes"][1:]]
    webhook = {"name": "helpdesk", "type": "webhook", "url": "https://desk.example/hook",
               "secret": f"file:{tmp_path / 'no-such-secret'}"}  # fmt: skip
    return write_config(
        tmp_path / "firstline.yaml",
        f"sqlite:///{tmp_path / 'firstline.db'}",
        mailboxes=mailboxes,
        channels=[webhook, {"name": "sales-desk"}],
    )


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["trace", "<nobody@nowhere.example>"],
        ["tickets", "list"],
        ["tickets", "show", "1"],
        ["queue", "list"],
        ["rejections"],
        ["quarantine", "list"],
        ["events", "list"],
        ["purge", "--dry-run"],
        ["db", "current"],
    ],
)
def test_read_only_commands_resolve_no_secret(secret_config: Path, command: list[str]) -> None:
    result = run(*command, config=secret_config)
    assert MISSING not in result.output and "no-such-secret" not in result.output, result.output
    # Nothing found is exit 1 for trace and tickets show; never a configuration error.
    assert result.exit_code in (0, 1), result.output


def test_what_sends_still_needs_them(secret_config: Path) -> None:
    for command in (["check-config"], ["smtp-test", "support@example.com"]):
        result = run(*command, config=secret_config)
        assert result.exit_code == 1
        assert f"environment variable {MISSING} is not set" in result.stderr
        assert "cannot read secret file" in result.stderr
