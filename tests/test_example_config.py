"""config.example.yaml says it shows every setting with its default: hold it to that."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from policy.config.loading import parse_config
from policy.config.model import ChannelConfig, Config

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"
# A commented-out setting: "# key: value", "#   key: value" or "# - key: value".
_COMMENTED_SETTING = re.compile(r"^(\s*)# ((?:\s*)(?:- )?[A-Za-z_]+:(?: |$).*)$")


def uncommented(text: str) -> str:
    """The example with every commented-out setting switched on, where it stands."""
    return "\n".join(
        _COMMENTED_SETTING.sub(r"\1\2", line) if _COMMENTED_SETTING.match(line) else line
        for line in text.splitlines()
    )


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("HELPDESK_API_TOKEN", "t" * 32)
    monkeypatch.setenv("WEBHOOK_SECRET", "s" * 32)
    monkeypatch.setenv("CONSOLE_AGENT_PASSWORD", "p" * 32)
    monkeypatch.setenv("CONTOSO_SMTP_SECRET", "c" * 32)
    return parse_config(uncommented(EXAMPLE.read_text(encoding="utf-8")), str(EXAMPLE))


def test_every_setting_shown_has_its_default(example: Config) -> None:
    defaults = Config()
    # Examples by nature (no default could be shown): names, addresses, paths.
    examples = {
        "server": {"hostname", "tls", "run_dir", "processes"},
        "dns": {"nameservers"},
        "antivirus": {"clamd"},
        # Derived defaults (4 x server.max_message_size; the core count): the example
        # shows a figure.
        "storage": {"min_free"},
    }
    for section in ("server", "storage", "batch", "outbox", "dns", "policy", "retention",
                    "antivirus", "logging"):  # fmt: skip
        shown = getattr(example, section).model_dump(exclude=examples.get(section, set()))
        default = getattr(defaults, section).model_dump(exclude=examples.get(section, set()))
        assert shown == default, section


def test_the_commented_webhook_channel_shows_the_defaults(example: Config) -> None:
    webhook = next(c for c in example.channels if c.type == "webhook")
    default = ChannelConfig(name="x")
    for key in ("events", "retry_window", "backoff", "timeout"):
        assert getattr(webhook, key) == getattr(default, key), key


def test_every_section_of_the_model_is_in_the_example(example: Config) -> None:
    text = uncommented(EXAMPLE.read_text(encoding="utf-8"))
    for section, field in Config.model_fields.items():
        if field.exclude:
            continue
        assert re.search(rf"^{section}:", text, re.MULTILINE), section
        model = getattr(example, section)
        if isinstance(model, BaseModel):
            for key in type(model).model_fields:
                assert re.search(rf"^\s+{key}:", text, re.MULTILINE), f"{section}.{key}"
