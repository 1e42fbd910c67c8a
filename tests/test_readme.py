"""The README's first commands, run the way a newcomer types them."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

from ingest.smtp.verification import configured_verifier
from policy.config.loading import parse_config
from tests.support.cli import run
from tests.support.dnsserver import DnsServer
from tests.support.server import running

ROOT = Path(__file__).resolve().parent.parent


def readme_fallback() -> str:
    """The smtplib one-liner offered to readers without swaks, as printed in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^python3 -c .*smtplib.*$", text, re.MULTILINE)
    assert len(commands) == 1, commands
    return commands[0]


def test_readme_smtplib_fallback_makes_a_ticket(tmp_path: Path, dns_server: DnsServer) -> None:
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))
    example["server"].update(smtp={"listen": "127.0.0.1:0"}, lmtp=None)
    example["storage"]["url"] = f"sqlite:///{tmp_path / 'firstline.db'}"
    # The tests' DNS server stands in for the internet (nothing is published: SPF/DMARC none).
    example["dns"] = {"nameservers": [dns_server.address], "timeout": 2}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(example), encoding="utf-8")
    config = parse_config(path.read_text(encoding="utf-8"), str(path))
    with running(config, verifier_factory=configured_verifier) as server:
        _host, port = server.smtp_address
        command = readme_fallback()
        assert '"127.0.0.1", 2525' in command
        command = command.replace('"127.0.0.1", 2525', f'"127.0.0.1", {port}')
        done = subprocess.run(
            ["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        server.process()
    listed = run("tickets", "list", config=path)
    assert listed.exit_code == 0, listed.output
    rows = listed.output.splitlines()[1:]
    assert len(rows) == 1 and "alice@customer.example" in rows[0] and rows[0].endswith("hi")


def test_version() -> None:
    shown = run("--version")
    assert shown.exit_code == 0
    assert shown.output == f"firstline {importlib.metadata.version('firstline')}\n"


def test_every_package_is_listed_for_setuptools() -> None:
    """An unlisted package makes `pip install` (and `make run`) print setuptools' 40-line
    "Package would be ignored" warning, and would be missing from a wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ])  # fmt: skip
    found = {  # setuptools counts every folder of modules, __init__.py or not
        ".".join(module.parent.relative_to(ROOT).parts)
        for top in ("ingest", "policy", "storage")
        for module in (ROOT / top).rglob("*.py")
    }
    assert listed == found
