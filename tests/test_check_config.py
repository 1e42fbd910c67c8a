"""check-config as an admin at 3 a.m. needs it: every problem, the right line, a hint."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import run


def check(tmp_path: Path, text: str) -> tuple[int, str, str]:
    path = tmp_path / "firstline.yaml"
    path.write_text(text, encoding="utf-8")
    result = run("check-config", config=path)
    return result.exit_code, result.stdout, result.stderr.replace(f"{path}:", "LINE ")


def test_every_problem_is_reported_with_cross_checks_and_in_line_order(tmp_path: Path) -> None:
    code, _out, err = check(
        tmp_path,
        """\
server:
  max_recipients: 0
  max_connections: 0
  timeout: -1
batch: {size: 0, interval: 0}
channels: [{name: helpdesk}]
mailboxes:
  - {channel: nowhere, name: A, address: a@example.com}
  - {channel: helpdesk, name: B, address: A@example.com}
""",
    )
    assert code == 1
    assert err.splitlines() == [
        "LINE 2: server.max_recipients: Input should be greater than or equal to 1",
        "LINE 3: server.max_connections: Input should be greater than or equal to 1",
        "LINE 4: server.timeout: Input should be greater than 0",
        "LINE 5: batch.interval: Input should be greater than 0",
        "LINE 5: batch.size: Input should be greater than or equal to 1",
        "LINE 8: mailboxes[0].channel: channel 'nowhere' is not defined under channels",
        "LINE 9: mailboxes[1].address: A@example.com is already the address of mailboxes[0]; "
        "aliases are not supported",
    ]


def test_a_typo_gets_the_nearest_key(tmp_path: Path) -> None:
    code, _out, err = check(
        tmp_path,
        """\
channels: [{name: helpdesk}]
mailboxes:
  - channel: helpdesk
    name: A
    address: a@example.com
    smtp: {host: smtp.example.com, port: 587, encrytion: starttls}
retenton: {days: 3}
""",
    )
    assert code == 1
    assert "LINE 6: mailboxes[0].smtp.encrytion: unknown setting; did you mean 'encryption'?" in err
    assert "LINE 7: retenton: unknown setting; did you mean 'retention'?" in err


def test_a_bad_indent_points_at_the_line_out_of_step(tmp_path: Path) -> None:
    # The first line of the block is the odd one: YAML only notices on the next.
    _code, _out, err = check(tmp_path, "server:\n    hostname: mx.example.com\n  timeout: 30\n")
    assert err.startswith("LINE 2: invalid YAML: this line is indented by 4 spaces and the next")
    _code, _out, err = check(tmp_path, "server:\n  hostname: mx.example.com\n timeout: 30\n")
    assert err.startswith("LINE 3: invalid YAML: this line is indented by 1 space but line 2")


def test_inline_secrets_are_warned_about_without_being_printed(tmp_path: Path) -> None:
    code, out, _err = check(
        tmp_path,
        """\
channels: [{name: helpdesk, token: "file:/dev/null"}]
mailboxes:
  - channel: helpdesk
    name: A
    address: a@example.com
    smtp: {host: smtp.example.com, port: 587, account: a, password: hunter2secret}
  - channel: helpdesk
    name: B
    address: b@example.com
    smtp: {host: relay.lan, port: 2525, encryption: none}
""",
    )
    assert code == 0, out
    assert "hunter2secret" not in out
    warnings = [line for line in out.splitlines() if "warning:" in line]
    assert len(warnings) == 2, warnings
    assert (
        "6: mailboxes[0].smtp.password: the secret is written in the file: use ${ENV_VAR} "
        "or file:/path/to/secret" in warnings[1]
    )
    # A relay without a password has none to send in plain text.
    assert "encryption is 'none': replies cross the network in plain text" in warnings[0]
    assert "password" not in warnings[0]
