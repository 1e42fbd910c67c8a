"""``server.processes``: a real ``firstline serve`` with two intake processes on one port.

Real clients on loopback; which process accepted a message is read from its
log line (each line names its process, ``mail.smtp[1234]``) by the queue ID
of the ``250``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import yaml

from ingest.smtp.protocol import Gate
from policy.config.model import ServerConfig
from tests.support.fleet import FIRSTLINE, free_port, write_config
from tests.support.stores import BASE_CONFIG

LISTENING = re.compile(rb"intake process 1 listening \(pid (\d+)\)")
ACCEPTED = re.compile(rb"mail\.smtp\[(\d+)\] INFO ([0-9A-F]{12}): accepted")
NEW_MAILBOX = {"channel": "helpdesk", "name": "Returns", "address": "returns@example.com"}


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    log: Path
    config: Path
    port: int
    changes: dict[str, Any]

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> bytes:
        return self.log.read_bytes()

    def others(self) -> list[int]:
        """The pids of the other intake process, in the order they started."""
        return [int(pid) for pid in LISTENING.findall(self.text())]

    def accepted_by(self) -> dict[str, int]:
        """queue ID -> the pid that answered 250 for it."""
        return {queue.decode(): int(pid) for pid, queue in ACCEPTED.findall(self.text())}


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def gone(pid: int) -> bool:
    """Ended (a zombie nobody reaps counts as ended: it runs no code)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@contextmanager
def serve(tmp_path: Path, **server: Any) -> Iterator[Serve]:
    port = free_port()
    changes: dict[str, Any] = {
        "server": {"smtp": {"listen": f"127.0.0.1:{port}"}, "lmtp": None, "processes": 2,
                   "run_dir": str(tmp_path / "run"), **server},
    }  # fmt: skip
    config = write_config(tmp_path / "firstline.yaml", f"sqlite:///{tmp_path}/firstline.db",
                          policy={"verify_senders": False}, **changes)  # fmt: skip
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(90)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*FIRSTLINE, "serve", "-c", str(config), "--no-worker"], stdout=out,
            stderr=subprocess.STDOUT, env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")},
        )  # fmt: skip
    running = Serve(process, log, config, port, changes)
    try:
        ready = notify.recv(4096).decode()
        assert "READY=1" in ready and "(2 intake processes)" in ready, ready
        assert len(running.others()) == 1, "READY=1 before every intake process listened"
        yield running
    finally:
        notify.close()
        if process.poll() is None:
            process.kill()
            process.wait(30)


def message(rcpt: str) -> str:
    return (f"From: alice@customer.example\r\nTo: {rcpt}\r\nDate: {formatdate()}\r\n"
            f"Message-ID: {make_msgid()}\r\nSubject: hello\r\n\r\nhello\r\n")  # fmt: skip


def send(port: int, rcpt: str = "support@example.com") -> str:
    """One message in its own session; the queue ID of its 250."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("relay.test")
        client.mail("alice@customer.example")
        assert client.rcpt(rcpt)[0] == 250
        code, reply = client.data(message(rcpt))
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


def send_until(running: Serve, pids: set[int], rcpt: str = "support@example.com") -> set[str]:
    """Messages, one session each, until every one of ``pids`` has accepted one (the
    kernel picks a process per connection: 64 sessions all to one is 2^-63)."""
    queued: set[str] = set()
    for _ in range(64):
        queued.add(send(running.port, rcpt))
        by = wait_for(lambda: running.accepted_by().keys() >= queued and running.accepted_by(),
                      "the accepted log lines")  # fmt: skip
        if {by[q] for q in queued} >= pids:
            return queued
    raise AssertionError(f"not every process accepted: {pids}")


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        body = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name))  # fmt: skip


def reload(running: Serve) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FIRSTLINE, "reload", "-c", str(running.config)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def test_intake_processes_share_the_port_reload_reaches_both_a_dead_one_is_replaced(
    tmp_path: Path,
) -> None:
    metrics = free_port()
    lmtp = tmp_path / "lmtp.sock"
    with serve(tmp_path, lmtp={"listen": str(lmtp)}) as running:
        [other] = running.others()
        queued = send_until(running, {running.pid, other})
        # The unix socket is the first process's alone; the other did not take the path.
        with smtplib.LMTP(str(lmtp), timeout=30) as client:
            client.ehlo("relay.test")
            refused = client.sendmail("alice@customer.example", ["support@example.com"],
                                      message("support@example.com"))  # fmt: skip
        assert refused == {}

        # Metrics: the other process's counts are added to the first's.
        config = yaml.safe_load(running.config.read_text())
        config["metrics"] = {"listen": f"127.0.0.1:{metrics}"}
        config["mailboxes"] = [*BASE_CONFIG["mailboxes"], NEW_MAILBOX]
        running.config.write_text(yaml.safe_dump(config))
        result = reload(running)
        assert result.returncode == 0, result.stderr
        assert f"serve (pid {running.pid}): reloaded" in result.stdout
        assert f"also in intake processes {other}" in result.stdout
        accepted = 'firstline_messages_accepted_total{proto="SMTP",state="queued"}'
        assert metric(metrics, accepted) == len(queued)
        lmtp_accepted = 'firstline_messages_accepted_total{proto="LMTP",state="queued"}'
        assert metric(metrics, lmtp_accepted) == 1
        assert metric(metrics, "firstline_config_reloads_total") == 1  # once, not per process
        # The new mailbox is known to both processes.
        send_until(running, {running.pid, other}, rcpt="returns@example.com")

        os.kill(other, signal.SIGKILL)
        log = running.text
        wait_for(lambda: b"was killed by SIGKILL; starting another in 1s" in log(), "the log")
        [_, replacement] = wait_for(lambda: len(running.others()) == 2 and running.others(),
                                    "a new intake process")  # fmt: skip
        assert replacement != other
        send_until(running, {replacement})
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz"))
        assert health["checks"]["intake_processes"] == "ok"

        # However the first process ends, the others end with it.
        environ = Path(f"/proc/{replacement}/environ").read_bytes().split(b"\0")
        [metrics_dir] = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"PROMETHEUS_")]
        os.kill(running.pid, signal.SIGKILL)
        running.process.wait(30)
        wait_for(lambda: gone(replacement), "the other intake process to exit")
    assert b"the first process is gone; draining" in running.text()
    assert not Path(metrics_dir.decode()).exists()  # nothing left behind in /tmp


def test_sigterm_mid_load_drains_every_process_and_loses_nothing(tmp_path: Path) -> None:
    with serve(tmp_path) as running:
        [other] = running.others()
        acknowledged: list[str] = []

        def client() -> None:
            while True:
                try:
                    acknowledged.append(send(running.port))
                except (OSError, smtplib.SMTPException, AssertionError):
                    return  # the server stopped accepting: no 250, nothing promised

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: {running.pid, other} <= set(running.accepted_by().values()),
                 "both processes accepting")  # fmt: skip
        running.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(120)
            assert not thread.is_alive()
        assert running.process.wait(120) == 0
        assert gone(other)
    by = running.accepted_by()
    assert {by[queued] for queued in acknowledged} == {running.pid, other}
    with sqlite3.connect(tmp_path / "firstline.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = dict(db.execute(
            "SELECT m.trace_id, COUNT(q.id) FROM stored_messages m "
            "LEFT JOIN queue q ON q.message_id = m.id GROUP BY m.id"
        ).fetchall())  # fmt: skip
    assert set(acknowledged) <= set(stored)  # every 250 was committed
    assert set(stored.values()) == {1}  # no message without its queue entry
    assert not (tmp_path / "run" / "serve.pid").exists()


def replica_of(parent: int) -> int | None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"ingest.ops.replica" in command:
            return int(stat.parent.name)
    return None


def test_an_intake_process_still_starting_ends_with_the_first(tmp_path: Path) -> None:
    """Killed before the other said "ready", the first process leaves no orphan
    (its "ready" then meets a reset connection, not an end of file)."""
    port = free_port()
    config = write_config(tmp_path / "firstline.yaml", f"sqlite:///{tmp_path}/firstline.db",
                          server={"smtp": {"listen": f"127.0.0.1:{port}"}, "lmtp": None,
                                  "processes": 2},
                          policy={"verify_senders": False})  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*FIRSTLINE, "serve", "-c", str(config), "--no-worker"],
                                   stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        other = wait_for(lambda: replica_of(process.pid), "the other intake process")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        wait_for(lambda: gone(other), "the other intake process to exit")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def test_connection_limits_are_shared_out_between_intake_processes() -> None:
    gate = Gate(0, 0)
    server = ServerConfig(hostname="mx.test", max_connections=201, max_connections_per_ip=10,
                          max_trusted_connections=1, processes=2)  # fmt: skip
    gate.configure(server, server.processes)
    assert (gate.total, gate.per_ip, gate.trusted_total) == (101, 5, 1)
    gate.configure(server)
    assert (gate.total, gate.per_ip, gate.trusted_total) == (201, 10, 1)
