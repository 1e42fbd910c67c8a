"""A real clamd for tests: Debian's clamav-daemon with a tiny signature database.

The database is written by the test (no freshclam, no internet): one
signature for the EICAR test file and one for :data:`MARKER`, a string the
built-in scanner does not know, so a test can tell clamd's verdict apart.
``make test`` installs clamav-daemon where it can; where clamd is missing or
cannot start, the tests that need it skip and say why, except under CI
(``CI=true``), where that is a failure: the backend must not silently stop
being tested.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from policy.antivirus import EICAR

MARKER = b"FIRSTLINE-CLAMD-TEST-MARKER-7f3a"
EICAR_NAME = "Firstline.Test.Eicar.UNOFFICIAL"
MARKER_NAME = "Firstline.Test.Marker.UNOFFICIAL"
STREAM_MAX_LENGTH = 1024 * 1024
_STARTUP_SECONDS = 60


def _skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " — under CI this is a failure, not a skip")
    pytest.skip(reason)


def clamd_binary() -> str | None:
    return shutil.which("clamd") or shutil.which("clamd", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ping(address: str) -> bool:
    family, target = (
        (socket.AF_UNIX, address)
        if "/" in address
        else (socket.AF_INET, (address.rpartition(":")[0], int(address.rpartition(":")[2])))
    )
    try:
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.settimeout(2)
            client.connect(target)
            client.sendall(b"zPING\0")
            return client.recv(16).startswith(b"PONG")
    except OSError:
        return False


@contextlib.contextmanager
def running_clamd(directory: Path, *, tcp: bool) -> Iterator[str]:
    """Start clamd in ``directory``; yield its address (``127.0.0.1:port`` or a socket path)."""
    binary = clamd_binary()
    if binary is None:
        _skip_or_fail("clamd is not installed (Debian: apt-get install clamav-daemon)")
    database = directory / "db"
    database.mkdir()
    (database / "firstline-test.ndb").write_text(
        f"{EICAR_NAME.removesuffix('.UNOFFICIAL')}:0:*:{EICAR.hex()}\n"
        f"{MARKER_NAME.removesuffix('.UNOFFICIAL')}:0:*:{MARKER.hex()}\n"
    )
    if tcp:
        address = f"127.0.0.1:{free_port()}"
        listen = f"TCPSocket {address.rpartition(':')[2]}\nTCPAddr 127.0.0.1\n"
    else:
        address = str(directory / "clamd.sock")
        listen = f"LocalSocket {address}\n"
    config = directory / "clamd.conf"
    config.write_text(
        "Foreground yes\n"
        f"{listen}"
        f"DatabaseDirectory {database}\n"
        f"TemporaryDirectory {directory}\n"
        f"PidFile {directory / 'clamd.pid'}\n"
        f"LogFile {directory / 'clamd.log'}\n"
        f"StreamMaxLength {STREAM_MAX_LENGTH}\n"
        "SelfCheck 0\n"
    )
    process = subprocess.Popen(
        [binary, "--config-file", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + _STARTUP_SECONDS
        while not _ping(address):
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                _, stderr = process.communicate()
                error = stderr.decode(errors="replace")
                _skip_or_fail(f"clamd could not start: {error.strip()[-500:] or 'no answer'}")
            time.sleep(0.05)
        yield address
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
