"""Start servers under test as subprocesses and wait until they answer."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.load import LoadResult


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = (
                process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
            )
            raise RuntimeError(f"server exited with {process.returncode}:\n{stderr}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


@contextlib.contextmanager
def process(
    args: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serving(
    tmp: Path, config: Path, port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``firstline serve -c config`` once ``READY=1`` says every intake process
    listens: the first one's port opens about two seconds before the others'."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp / "notify"))
        notify.settimeout(120)
        env = {**(env or {}), "NOTIFY_SOCKET": str(tmp / "notify")}
        with process(firstline_cmd("serve", "-c", str(config)), port, env) as server:
            while b"READY=1" not in notify.recv(4096):
                pass
            yield server


def bench_config(
    tmp: Path,
    smtp_port: int,
    lmtp_port: int,
    *,
    processes: int = 1,
    event_loop: str = "auto",
    **extra: Any,
) -> Path:
    """``processes``: ``server.processes`` (one unless a section compares; the
    server's default is the core count); ``event_loop``: ``server.event_loop``."""
    config = {
        "server": {
            "hostname": "mx.bench.test",
            "smtp": {"listen": f"127.0.0.1:{smtp_port}"},
            "lmtp": {"listen": f"127.0.0.1:{lmtp_port}"},
            "max_connections": 1000,
            "max_connections_per_ip": 1000,
            "processes": processes,
            "event_loop": event_loop,
        },
        "storage": {"url": f"sqlite:///{tmp}/bench.db"},
        "batch": {"interval": 86400},
        "logging": {"level": "WARNING"},
        # The durable-ingest figure measures storage; verification has its own bench.
        "policy": {"verify_senders": False},
        "channels": [{"name": "helpdesk"}],
        "mailboxes": [{"channel": "helpdesk", "name": "Support", "address": "support@example.com"}],
        **extra,
    }
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="firstline-bench-") as name:
        yield Path(name)


def firstline_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ingest.cli import main; main()", *args]


def sink_cmd(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.sink", str(port)]


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _family(pids: list[int]) -> list[int]:
    """``pids`` and their live descendants (a worker's fork server and parsing pool)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError):
            parents[int(entry.name)] = int(_stat(int(entry.name))[1])
    family = set(pids)
    while grown := {p for p, parent in parents.items() if parent in family} - family:
        family |= grown
    return sorted(family)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of live processes and their descendants, from /proc (Linux)."""
    total = 0
    for pid in _family(pids):
        with contextlib.suppress(OSError):
            fields = _stat(pid)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def settle(pid: int, timeout: float = 30) -> None:
    """Wait until the process tree of ``pid`` is idle: a server that has just
    opened its port is still starting in the background (its other intake
    processes importing, its pools forking: over a second of CPU), which a
    measured round must not share the cores with. Idle: under 10 ms of CPU
    in 0.2 s."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds([pid])
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = cpu_seconds([pid])
        if now - last < 0.01:
            return
        last = now
    raise TimeoutError(f"process {pid} still busy after {timeout:g} seconds")


@dataclass
class Measured:
    result: LoadResult
    cpu: float  # the server's CPU seconds (all its processes) per accepted message


def measure(pid: int, run: Callable[[], LoadResult]) -> Measured:
    """``run``'s load result and the CPU it cost the process tree of ``pid``."""
    before = cpu_seconds([pid])
    result = run()
    return Measured(result, (cpu_seconds([pid]) - before) / max(result.accepted, 1))


def load_average() -> str:
    """The one-minute load average, printed beside every figure (the machine is shared)."""
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "?"
