"""check-config: every problem with its YAML line, and no secret ever printed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest.cli import main
from policy.config.loading import ConfigError, load_config, parse_config
from policy.message.headerblock import MAX_HEADER_BYTES

VALID = textwrap.dedent(
    """\
    server:
      hostname: mx.example.test
    channels:
      - name: helpdesk
    mailboxes:
      - channel: helpdesk
        name: Example Support
        address: support@example.com
        smtp:
          host: smtp.example.com
          port: 587
          account: support@example.com
          password: ${FIRSTLINE_TEST_SECRET}
          encryption: starttls
    """
)

SECRET = "hunter2-very-secret-value"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_example_config_is_valid() -> None:
    config = load_config(Path(__file__).parent.parent / "config.example.yaml")
    assert config.mailboxes[0].address == "support@example.test"
    assert config.server.smtp is not None and config.server.smtp.listen == "127.0.0.1:2525"
    assert config.server.max_message_size == 25 * 1024 * 1024


def test_valid_file_prints_summary_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRSTLINE_TEST_SECRET", SECRET)
    code, output = run("check-config", "-c", write(tmp_path, VALID))
    assert code == 0, output
    assert "support@example.com" in output
    assert "smtp.example.com:587 starttls" in output
    assert SECRET not in output
    config = load_config(tmp_path / "config.yaml")
    assert config.mailboxes[0].smtp is not None
    assert config.mailboxes[0].smtp.password is not None
    assert config.mailboxes[0].smtp.password.get_secret_value() == SECRET
    assert SECRET not in repr(config) and SECRET not in str(config.model_dump())


def test_password_from_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET + "\n")
    config = parse_config(VALID.replace("${FIRSTLINE_TEST_SECRET}", f"file:{tmp_path}/pw"))
    assert config.mailboxes[0].smtp is not None and config.mailboxes[0].smtp.password is not None
    assert config.mailboxes[0].smtp.password.get_secret_value() == SECRET


def test_password_from_a_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LoadCredential=smtp-password:…`` puts the file under $CREDENTIALS_DIRECTORY."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "smtp-password").write_text(SECRET)
    text = VALID.replace("${FIRSTLINE_TEST_SECRET}", "file:${CREDENTIALS_DIRECTORY}/smtp-password")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = parse_config(text)
    assert config.mailboxes[0].smtp is not None and config.mailboxes[0].smtp.password is not None
    assert config.mailboxes[0].smtp.password.get_secret_value() == SECRET
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    code, output = run("check-config", "-c", write(tmp_path, text))
    assert code == 1 and "environment variable CREDENTIALS_DIRECTORY is not set" in output


def test_port_25_is_refused_with_line_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRSTLINE_TEST_SECRET", SECRET)
    path = write(tmp_path, VALID.replace("port: 587", "port: 25"))
    code, output = run("check-config", "-c", path)
    assert code == 1
    assert f"{path}:11: mailboxes[0].smtp.port: port 25 is not allowed for sending" in output
    assert SECRET not in output


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        server:
          max_recipients: 0
          smtp: {listen: "nowhere"}
        channels:
          - name: helpdesk
        mailboxes:
          - channel: helpdesk
            name: Support
            address: support+sales@example.com
          - channel: helpdesk
            name: ""
            address: not-an-address
            colour: blue
            smtp:
              host: smtp.example.com
              port: 465
              password: ${FIRSTLINE_UNSET_VARIABLE}
        """
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    lines = [str(p) for p in info.value.problems]
    assert "c.yaml:2: server.max_recipients: Input should be greater than or equal to 1" in lines
    assert any(
        line.startswith("c.yaml:3: server.smtp.listen: 'nowhere' is neither") for line in lines
    )
    assert any(
        line.startswith("c.yaml:9: mailboxes[0].address: email aliases are not supported")
        for line in lines
    )
    assert any(line.startswith("c.yaml:11: mailboxes[1].name:") for line in lines)
    assert any(
        line.startswith("c.yaml:12: mailboxes[1].address: 'not-an-address'") for line in lines
    )
    assert "c.yaml:13: mailboxes[1].colour: unknown setting" in lines
    assert (
        "c.yaml:17: mailboxes[1].smtp.password: environment variable "
        "FIRSTLINE_UNSET_VARIABLE is not set"
    ) in lines


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "channel: nowhere",
            "c.yaml:6: mailboxes[1].channel: channel 'nowhere' is not defined under channels",
        ),
        (
            "address: SUPPORT@example.com",
            "c.yaml:8: mailboxes[1].address: SUPPORT@example.com is already the address "
            "of mailboxes[0]; aliases are not supported",
        ),
    ],
)
def test_cross_field_errors_point_at_the_field(change: str, expected: str) -> None:
    text = textwrap.dedent(
        """\
        channels: [{name: helpdesk}]
        mailboxes:
          - channel: helpdesk
            name: Support
            address: support@example.com
          - CHANNEL
            name: Other
            ADDRESS
        """
    )
    key = change.split(":")[0]
    text = text.replace("CHANNEL", change if key == "channel" else "channel: helpdesk")
    text = text.replace("ADDRESS", change if key == "address" else "address: other@example.com")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert [str(p) for p in info.value.problems] == [expected]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    code, output = run("check-config", "-c", write(tmp_path, "server:\n  hostname: [unclosed\n"))
    assert code == 1
    assert "config.yaml:3: invalid YAML" in output or "config.yaml:2: invalid YAML" in output


def test_serve_refuses_an_invalid_file(tmp_path: Path) -> None:
    code, output = run("serve", "-c", write(tmp_path, "mailboxes: 3\n"))
    assert code == 1
    assert "config.yaml:1: mailboxes: Input should be a valid list" in output


def test_sender_verification_can_be_left_to_the_mta_in_front() -> None:
    from ingest.cli.serve import serve_verifier

    assert serve_verifier(parse_config("policy: {verify_senders: false}\n"), b"k") is None
    assert parse_config("").policy.verify_senders is True


def test_the_header_limit_cannot_exceed_the_one_reading() -> None:
    assert parse_config(f"limits: {{max_header_bytes: {MAX_HEADER_BYTES}}}").limits
    with pytest.raises(ConfigError, match="max_header_bytes"):
        parse_config(f"limits: {{max_header_bytes: {MAX_HEADER_BYTES + 1}}}")
