"""Reason codes: the documented list is the one filters accept, on the CLI and the API."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from ingest.channels.api.routes import create_app
from policy.config.loading import parse_config
from storage.rejections import REASON_CODES
from tests.support.cli import run, write_config
from tests.support.server import ServerThread

OPERATORS = Path(__file__).resolve().parent.parent / "docs" / "operators.md"


def test_reason_codes_are_the_documented_ones() -> None:
    section = OPERATORS.read_text(encoding="utf-8").split("### Reason codes", 1)[1]
    table = section.split("\n\n", 3)[2]
    documented = re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)
    assert documented == list(REASON_CODES)


def test_an_unknown_reason_is_refused_naming_the_codes(tmp_path: Path, db_url: str) -> None:
    path = write_config(tmp_path / "firstline.yaml", db_url)
    result = run("rejections", "--reason", "bogus", config=path)
    assert result.exit_code == 2
    assert "'bogus' is not a reason code; the codes are: unknown_mailbox, " in result.stderr
    assert run("rejections", "--reason", "dmarc_reject", config=path).exit_code == 0


async def test_the_api_refuses_an_unknown_reason(server: ServerThread) -> None:
    token = "token-0123456789abcdef"
    current = parse_config(f"channels: [{{name: helpdesk, token: {token}}}]")
    transport = httpx.ASGITransport(app=create_app(lambda: current, server.engine))
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api",
                                 headers=headers) as client:  # fmt: skip
        refused = await client.get("/api/v1/rejections", params={"reason": "bogus"})
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "invalid_parameter"
        assert (
            "'bogus' is not a reason code; the codes are: unknown_mailbox"
            in (refused.json()["detail"])
        )
        assert (
            await client.get("/api/v1/rejections", params={"reason": "virus"})
        ).status_code == 200
