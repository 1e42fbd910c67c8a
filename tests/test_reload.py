"""Live reload: valid edits apply to new commands and sessions, invalid ones change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.ops.reload import ReloadResult
from policy.config.loading import load_config
from tests.support.cli import run, write_config
from tests.support.server import ServerThread, running
from tests.support.stores import BASE_CONFIG, SQLITE_ONLY

# A reload swaps configuration, listeners and verifiers; the store is untouched.
pytestmark = SQLITE_ONLY

NEW_MAILBOX = {"channel": "helpdesk", "name": "Returns", "address": "returns@example.com"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rcpt(client: smtplib.SMTP, address: str) -> int:
    client.rset()
    client.mail("alice@customer.example")
    return client.rcpt(address)[0]


@pytest.fixture
def config_path(tmp_path: Path, db_url: str) -> Path:
    return write_config(tmp_path / "firstline.yaml", db_url)


@pytest.fixture
def live(config_path: Path) -> Iterator[ServerThread]:
    with running(load_config(config_path)) as server:
        yield server


def reload(server: ServerThread) -> ReloadResult:
    result: ReloadResult = server.call(server.app.reloader.reload())
    return result


def edit(config_path: Path, db_url: str, **changes: Any) -> str:
    write_config(config_path, db_url, **changes)
    return hashlib.sha256(config_path.read_bytes()).hexdigest()


def test_valid_edit_applies_to_open_sessions_and_limits(
    live: ServerThread, config_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mail.config")
    with live.smtp() as client:
        client.ehlo("relay.test")
        assert rcpt(client, "returns@example.com") == 550
        digest = edit(
            config_path, db_url,
            mailboxes=[*BASE_CONFIG["mailboxes"], NEW_MAILBOX],
            server={"max_connections_per_ip": 7},
        )  # fmt: skip
        result = reload(live)
        # The session opened before the reload carries on, with the new mailboxes.
        assert rcpt(client, "returns@example.com") == 250
    assert (result.accepted, result.digest, result.problems) == (True, digest, [])
    assert result.changes == ["mailboxes", "server"]
    assert live.app.holder.current.digest == digest
    assert live.app.gate.per_ip == 7
    [line] = [r.getMessage() for r in caplog.records if r.name == "mail.config"]
    assert line == f"reload accepted: {config_path} sha256={digest} changed=mailboxes,server"


def test_invalid_edit_is_refused_and_the_running_config_stays(
    live: ServerThread, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mail.config")
    before = live.app.holder.current
    text = config_path.read_text()
    broken = text.replace("max_recipients: 5", "max_recipients: 0") + "surprise: 1\n"
    config_path.write_text(broken)
    result = reload(live)
    assert not result.accepted
    assert result.digest == hashlib.sha256(broken.encode()).hexdigest()
    line = next(n for n, t in enumerate(broken.splitlines(), 1) if "max_recipients" in t)
    assert f"{config_path}:{line}: server.max_recipients: Input should be greater than or " \
           "equal to 1" in result.problems  # fmt: skip
    assert any(p.endswith("surprise: unknown setting") for p in result.problems)
    assert live.app.holder.current is before
    messages = [r.getMessage() for r in caplog.records if r.name == "mail.config"]
    assert messages[0].startswith(f"reload refused: {config_path} sha256={result.digest};")
    assert [m.strip() for m in messages[1:]] == result.problems
    with live.smtp() as client:
        client.ehlo("relay.test")
        assert rcpt(client, "support@example.com") == 250


def test_changed_listener_address_is_rebound_without_dropping_sessions(
    live: ServerThread, config_path: Path, db_url: str
) -> None:
    old_host, old_port = live.smtp_address
    port = free_port()
    with live.smtp() as before:
        before.ehlo("relay.test")
        edit(config_path, db_url, server={"smtp": {"listen": f"127.0.0.1:{port}"}})
        assert reload(live).accepted
        assert live.smtp_address == ("127.0.0.1", port)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as after:
            after.ehlo("relay.test")
            assert rcpt(after, "support@example.com") == 250
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((old_host, old_port), timeout=5).close()
        assert rcpt(before, "support@example.com") == 250  # still open on the old socket


def test_unbindable_address_and_database_change_are_refused(
    live: ServerThread, config_path: Path, db_url: str, tmp_path: Path
) -> None:
    before = live.app.holder.current
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        edit(config_path, db_url, server={"lmtp": {"listen": f"127.0.0.1:{busy}"}})
        refused = reload(live)
    assert not refused.accepted
    [problem] = refused.problems
    assert problem.startswith(f"{config_path}: server.lmtp.listen: cannot bind 127.0.0.1:{busy}")
    edit(config_path, f"sqlite:///{tmp_path}/other.db")
    [problem] = reload(live).problems
    assert problem.endswith("restart needed for: storage.url (nothing was changed)")
    assert live.app.holder.current is before
    assert live.app.servers["LMTP"].is_serving()


def test_reload_command_needs_a_run_dir(config_path: Path) -> None:
    result = run("reload", config=config_path)
    assert result.exit_code == 1
    assert "server.run_dir is not set" in result.stderr


@pytest.mark.slow
def test_sighup_and_firstline_reload_on_a_real_serve_process(
    config_path: Path, db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    run_dir = tmp_path / "run"
    changes: dict[str, Any] = {
        "server": {"smtp": {"listen": f"127.0.0.1:{port}"}, "lmtp": None, "run_dir": str(run_dir)},
    }
    edit(config_path, db_url, **changes)
    firstline = str(Path(sys.executable).with_name("firstline"))
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file, subprocess.Popen(
        [firstline, "serve", "-c", str(config_path), "--no-worker"],
        stdout=subprocess.DEVNULL, stderr=log_file,
    ) as process:  # fmt: skip
        try:
            # Written once every intake process listens (server.processes: two starts).
            _wait_for(lambda: (run_dir / "serve.pid").exists() and _accepts(port), timeout=120)
            assert (run_dir / "serve.pid").read_text().strip() == str(process.pid)
            digest = edit(config_path, db_url, mailboxes=[*BASE_CONFIG["mailboxes"], NEW_MAILBOX],
                          **changes)  # fmt: skip
            accepted = run("reload", config=config_path)
            assert accepted.exit_code == 0, accepted.output
            assert f"serve (pid {process.pid}): reloaded sha256={digest}" in accepted.stdout
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo("relay.test")
                assert rcpt(client, "returns@example.com") == 250

                config_path.write_text(config_path.read_text() + "mailboxes: oops\n")
                refused = run("reload", "--run-dir", str(run_dir))
                assert refused.exit_code == 1
                assert "refused; the running configuration stays in force" in refused.stderr
                assert f"{config_path}:" in refused.stderr
                assert rcpt(client, "returns@example.com") == 250  # still the accepted version

            os.kill(process.pid, signal.SIGHUP)  # a plain SIGHUP, as systemd's reload sends
            _wait_for(lambda: log_path.read_bytes().count(b"] ERROR reload refused") == 2)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)
    assert process.returncode == 0
    assert not (run_dir / "serve.pid").exists()
    log = log_path.read_bytes()
    # The first process's lines (other intake processes, server.processes, log theirs).
    ours = f"mail.config[{process.pid}] ".encode()
    assert log.count(ours + b"INFO reload accepted") == 1
    assert log.count(ours + b"ERROR reload refused") == 2


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _wait_for(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


async def retired(server: ServerThread) -> None:
    await asyncio.gather(*server.app._retiring)


def test_a_dns_change_retires_the_old_verifier_and_its_workers(
    config_path: Path, db_url: str
) -> None:
    """A reload that rebuilds the verifier must close the old one's process pool."""
    from concurrent.futures import ProcessPoolExecutor

    from ingest.smtp.verification import configured_verifier
    from policy.verify.authenticate import Authenticator

    pools: list[ProcessPoolExecutor] = []

    def verifier(config: Any, sampling_key: bytes) -> Authenticator:
        pool = ProcessPoolExecutor(max_workers=1)
        pool.submit(int).result()  # a live worker process
        pools.append(pool)
        return configured_verifier(config, sampling_key, pool)

    with running(load_config(config_path), verifier_factory=verifier) as server:
        [first] = pools
        workers = list(first._processes.values())
        assert workers and all(p.is_alive() for p in workers)
        edit(config_path, db_url, dns={"nameservers": ["127.0.0.1:5399"], "timeout": 1})
        assert reload(server).accepted
        assert len(pools) == 2
        server.call(retired(server))
        assert not any(p.is_alive() for p in workers)
        pools[1].submit(int).result()
        second = list(pools[1]._processes.values())
        assert second and all(p.is_alive() for p in second)
    assert not any(p.is_alive() for p in second)  # closed at stop too


def test_adding_and_removing_the_api_and_metrics_binds_and_closes_them(
    live: ServerThread, config_path: Path, db_url: str
) -> None:
    assert live.app.api is None and live.app.metrics is None
    api_port, metrics_port = free_port(), free_port()
    edit(config_path, db_url, api={"listen": f"127.0.0.1:{api_port}"},
         metrics={"listen": f"127.0.0.1:{metrics_port}"})  # fmt: skip
    added = reload(live)
    assert added.accepted, added.problems
    assert {"api", "metrics"} <= set(added.changes)
    assert httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=10).status_code == 200

    edit(config_path, db_url)  # both removed again
    assert reload(live).accepted
    assert live.app.api is None and live.app.metrics is None
    for port in (api_port, metrics_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_what_needs_a_restart_is_refused_by_name(
    live: ServerThread, config_path: Path, db_url: str
) -> None:
    before = live.app.holder.current
    edit(config_path, db_url, logging={"level": "DEBUG"}, storage={"commit_timeout": 5},
         mailboxes=[*BASE_CONFIG["mailboxes"], NEW_MAILBOX])  # fmt: skip
    refused = reload(live)
    assert not refused.accepted
    assert refused.problems == [
        f"{config_path}: restart needed for: storage.commit_timeout, logging.level "
        "(nothing was changed)"
    ]
    assert live.app.holder.current is before
    with live.smtp() as client:
        client.ehlo("relay.test")
        assert rcpt(client, "returns@example.com") == 550  # the edit's new mailbox: not applied
