"""Running under systemd: the notify protocol spoken by a real ``serve``, and the units.

The test plays systemd: it binds the datagram socket ``$NOTIFY_SOCKET``
names (a path, or an abstract ``@name``), starts ``firstline serve`` and
reads what it says through start, reload and stop.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import FIRSTLINE, free_port, write_config

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify")
        sock.bind(name)
    else:
        name = f"@firstline-test-{secrets.token_hex(6)}"
        sock.bind("\0" + name[1:])
    sock.settimeout(60)
    try:
        yield name, sock
    finally:
        sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    datagram = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in datagram.splitlines() if line)


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_serve_tells_systemd_when_it_is_ready_reloading_and_stopping(
    notify_socket: tuple[str, socket.socket], tmp_path: Path
) -> None:
    name, sock = notify_socket
    port = free_port()
    config = write_config(tmp_path / "firstline.yaml", f"sqlite:///{tmp_path}/firstline.db",
                          server={"smtp": {"listen": f"127.0.0.1:{port}"},
                                  "lmtp": None})  # fmt: skip
    environment = {**os.environ, "NOTIFY_SOCKET": name}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([*FIRSTLINE, "serve", "-c", str(config)], env=environment,
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        ready = receive(sock)
        assert ready["READY"] == "1" and ready["MAINPID"] == str(process.pid)
        assert f"SMTP on 127.0.0.1:{port}" in ready["STATUS"]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            assert client.recv(512).startswith(b"220 ")  # ready means listening

        before = monotonic_usec()
        process.send_signal(signal.SIGHUP)
        reloading = receive(sock)
        assert reloading["RELOADING"] == "1"
        assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
        again = receive(sock)
        assert again["READY"] == "1" and again["STATUS"].startswith("reload accepted")

        process.send_signal(signal.SIGTERM)
        assert receive(sock)["STOPPING"] == "1"
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        log.close()


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    units = []
    for unit in ("firstline.service", "firstline-worker.service"):
        text = (CONTRIB / unit).read_text()
        assert "Type=notify" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text
        assert "ProtectSystem=strict" in text and "NoNewPrivileges=yes" in text
        assert "ReadWritePaths=/var/lib/firstline" in text and "LoadCredential=" in text
        # verify checks that the binary exists: point it at the one under test.
        (tmp_path / unit).write_text(text.replace("/usr/local/bin/firstline", FIRSTLINE[0]))
        units.append(str(tmp_path / unit))
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in (CONTRIB / "firstline.service").read_text()
    verified = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True,
                              text=True, check=False, cwd=tmp_path)  # fmt: skip
    assert (verified.returncode, verified.stderr) == (0, ""), verified.stderr
