"""``firstline smtp-test`` against real loopback relays, as an admin would run it."""

from __future__ import annotations

import base64
import email
import logging
from email import policy
from pathlib import Path
from typing import Any

import dkim
import pytest
import yaml
from click.testing import CliRunner, Result

from ingest.cli import main
from ingest.outbound.smtpfail import smtp_warnings
from policy.config.loading import parse_config
from tests.support.relay import PASSWORD, USER, RecordingHandler, Relays, free_port
from tests.support.signing import rsa_key


def write_config(tmp_path: Path, relays: Relays, port: int, **smtp: Any) -> Path:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "account": USER,
        "password": "${TEST_RELAY_PASSWORD}",
        "encryption": "starttls",
        "ca_file": str(relays.ca_file),
        "timeout": 10,
    }
    settings.update(smtp)
    data = {
        "server": {"hostname": "mx.firstline.test"},
        "storage": {"url": f"sqlite:///{tmp_path}/unused.db"},
        "channels": [{"name": "helpdesk"}],
        "mailboxes": [
            {
                "channel": "helpdesk",
                "name": "Example Support",
                "address": "support@example.com",
                "smtp": settings,
            }
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run(path: Path, *args: str, password: str = PASSWORD) -> Result:
    return CliRunner().invoke(
        main,
        ["smtp-test", *args, "-c", str(path)],
        env={"TEST_RELAY_PASSWORD": password},
    )


def secret_forms(secret: str) -> list[str]:
    """The password as it could leak: plain, or base64 as AUTH PLAIN/LOGIN send it."""
    plain = base64.b64encode(f"\0{USER}\0{secret}".encode()).decode()
    return [secret, base64.b64encode(secret.encode()).decode(), plain]


def test_every_step_is_shown_and_the_test_message_arrives(
    tmp_path: Path, relays: Relays, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port, handler = relays.start("starttls")
    result = run(write_config(tmp_path, relays, port), "support@example.com", "--to", "me@x.test")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"support@example.com via 127.0.0.1:{port} (starttls)"
    steps = [line.split()[0] for line in lines[1:-2]]
    assert steps == ["connect", "starttls", "starttls", "login", "sender", "recipient", "data"]
    assert "  login     as support@example.com: ok, 235 2.7.0 Authentication successful" in lines
    assert lines[-2].endswith("accepted (queue id Q1ABC)")
    assert lines[-1] == "OK"
    [received] = handler.received
    assert received.rcpt_tos == ("me@x.test",)
    msg = email.message_from_bytes(received.data, policy=policy.default)
    assert msg["Subject"] == "firstline send test for Example Support"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert str(msg["Message-ID"]).endswith("@mx.firstline.test>")
    for form in secret_forms(PASSWORD):
        assert form not in result.output and form not in caplog.text


def test_without_to_nothing_is_sent(tmp_path: Path, relays: Relays) -> None:
    port, handler = relays.start("ssl")
    result = run(write_config(tmp_path, relays, port, encryption="ssl"), "Example Support")
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()[1:-1]] == ["connect", "login"]
    assert handler.data_attempts == 0


def test_wrong_password_names_the_step_and_class_without_the_password(
    tmp_path: Path, relays: Relays, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port, _ = relays.start("starttls")
    wrong = "hunter2-wrong-secret"
    result = run(write_config(tmp_path, relays, port), "support@example.com", password=wrong)
    assert result.exit_code == 1
    assert "FAILED at step 'login': authentication (permanent)" in result.output
    assert "server said: 535 5.7.8 Authentication credentials invalid" in result.output
    assert "app password" in result.output
    for form in secret_forms(wrong):
        assert form not in result.output and form not in caplog.text


def test_swapped_port_and_method_says_so(tmp_path: Path, relays: Relays) -> None:
    port, _ = relays.start("starttls")
    result = run(write_config(tmp_path, relays, port, encryption="ssl"), "support@example.com")
    assert result.exit_code == 1
    assert "FAILED at step 'connect': tls (permanent)" in result.output
    assert "try encryption: starttls" in result.output


def test_nothing_listening_is_a_connection_failure(tmp_path: Path, relays: Relays) -> None:
    port = free_port()
    result = run(write_config(tmp_path, relays, port), "support@example.com")
    assert result.exit_code == 1
    assert "FAILED at step 'connect': connection (temporary)" in result.output
    assert "check: check the server location (host name) and port" in result.output
    # No server spoke: our words say what happened, not "server said".
    assert "server said" not in result.output
    assert (f"what happened: nothing is listening on 127.0.0.1:{port}: the connection was "
            "refused") in result.output  # fmt: skip


def test_an_unknown_host_name_says_no_server_was_reached(tmp_path: Path, relays: Relays) -> None:
    path = write_config(tmp_path, relays, 587, host="no-such-relay.invalid", timeout=5)
    result = run(path, "support@example.com")
    assert result.exit_code == 1
    assert "server said" not in result.output
    assert ("what happened: the host name 'no-such-relay.invalid' could not be resolved (DNS): "
            "no server was reached") in result.output  # fmt: skip


def test_refused_recipient_is_reported(tmp_path: Path, relays: Relays) -> None:
    handler = RecordingHandler(rcpt_replies=["550 5.1.1 <nobody@x.test>: Recipient unknown"])
    port, _ = relays.start("starttls", handler=handler)
    result = run(
        write_config(tmp_path, relays, port), "support@example.com", "--to", "nobody@x.test"
    )
    assert result.exit_code == 1
    assert "FAILED at step 'recipient': recipient rejected (permanent)" in result.output
    assert "server said: 550 5.1.1 <nobody@x.test>: Recipient unknown" in result.output


@pytest.mark.parametrize("to", ["me@x.test\r\nBcc: victim@y.test", "a@x.test, b@y.test"])
def test_hostile_to_is_refused_before_connecting(tmp_path: Path, relays: Relays, to: str) -> None:
    port, handler = relays.start("starttls")
    result = run(write_config(tmp_path, relays, port), "support@example.com", "--to", to)
    assert result.exit_code == 2
    assert handler.data_attempts == 0 and "connect" not in result.output


def test_unknown_mailbox_is_a_usage_error(tmp_path: Path, relays: Relays) -> None:
    result = run(write_config(tmp_path, relays, free_port()), "nobody@example.com")
    assert result.exit_code == 2
    assert "no mailbox 'nobody@example.com'" in result.output


RELAYS = [("a", 2525, "none"), ("b", 587, "ssl"), ("c", 465, "starttls")]
RELAYS_FINE = [("d", 587, "starttls"), ("e", 465, "ssl")]


def test_check_config_warns_about_plain_text_and_swaps() -> None:
    mailboxes = [
        {
            "channel": "c",
            "name": name,
            "address": f"{name}@example.com",
            "smtp": {"host": "smtp.example.com", "port": port, "encryption": encryption},
        }
        for name, port, encryption in RELAYS + RELAYS_FINE
    ]
    text = yaml.safe_dump({"channels": [{"name": "c"}], "mailboxes": mailboxes})
    warnings = smtp_warnings(parse_config(text))
    assert len(warnings) == 3
    assert warnings[0].startswith("mailboxes[0].smtp (a@example.com): encryption is 'none'")
    assert warnings[1].startswith("mailboxes[1].smtp (b@example.com): port 587")
    assert "try encryption: starttls" in warnings[1]
    assert "try encryption: ssl" in warnings[2]


def test_check_config_warns_about_files_it_cannot_read(tmp_path: Path) -> None:
    readable = tmp_path / "ca.pem"
    readable.write_text("x", encoding="utf-8")
    smtp = {"host": "smtp.example.com", "port": 587, "ca_file": str(readable)}
    missing = {"ca_file": str(tmp_path / "no-ca.pem"),
               "dkim": {"selector": "s1", "key_file": str(tmp_path / "no-key.pem")}}  # fmt: skip
    mailboxes = [
        {"channel": "c", "name": n, "address": f"{n}@example.com", "smtp": settings}
        for n, settings in [("a", smtp), ("b", {**smtp, **missing})]
    ]
    text = yaml.safe_dump({"channels": [{"name": "c"}], "mailboxes": mailboxes})
    assert smtp_warnings(parse_config(text)) == [
        f"mailboxes[1].smtp (b@example.com): ca_file {tmp_path}/no-ca.pem cannot be read: "
        "replies will fail",
        f"mailboxes[1].smtp (b@example.com): dkim.key_file {tmp_path}/no-key.pem cannot be "
        "read: replies will fail",
    ]


def test_check_config_prints_the_warnings(tmp_path: Path, relays: Relays) -> None:
    path = write_config(tmp_path, relays, 2525, encryption="none")
    result = CliRunner().invoke(
        main, ["check-config", "-c", str(path)], env={"TEST_RELAY_PASSWORD": PASSWORD}
    )
    assert result.exit_code == 0, result.output
    assert (
        "  warning: mailboxes[0].smtp (support@example.com): encryption is 'none'" in result.output
    )
    assert PASSWORD not in result.output


def test_test_message_is_dkim_signed_when_configured(tmp_path: Path, relays: Relays) -> None:
    pem, record = rsa_key(2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem)
    port, handler = relays.start("starttls")
    dkim_settings = {"selector": "s1", "key_file": str(key_file)}
    path = write_config(tmp_path, relays, port, dkim=dkim_settings)
    result = run(path, "support@example.com", "--to", "me@x.test")
    assert result.exit_code == 0, result.output
    [received] = handler.received
    assert received.data.startswith(b"DKIM-Signature:")
    looked_up: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        looked_up.append(name)
        return record.encode()

    assert dkim.verify(received.data, dnsfunc=dns)
    assert looked_up == [b"s1._domainkey.example.com."]


def test_unreadable_dkim_key_fails_the_send_test(tmp_path: Path, relays: Relays) -> None:
    port, handler = relays.start("starttls")
    dkim_settings = {"selector": "s1", "key_file": str(tmp_path / "missing.pem")}
    path = write_config(tmp_path, relays, port, dkim=dkim_settings)
    result = run(path, "support@example.com", "--to", "me@x.test")
    assert result.exit_code == 1
    assert "cannot read DKIM key file" in result.output and "missing.pem" in result.output
    assert handler.data_attempts == 0
