"""``server.processes``: more intake processes on the same ports, run by ``serve``.

One Python process shares one GIL between its event loop, the group-commit
writer's thread and the header work, which held durable intake near half a
bare aiosmtpd sink. ``serve`` therefore starts ``server.processes - 1`` more
intake processes (:mod:`ingest.ops.replica`) that bind the same TCP ports with
``SO_REUSEPORT`` (the kernel spreads new connections over them), each with its
own group-commit writer. Only intake is replicated: the batch worker, the
outbox, webhooks, the API, metrics, housekeeping, the pid and reload files and
the systemd notifications stay in the first process, the one that runs this.

- Each other process has a socket pair to the first (JSON lines): it says when
  it listens, and it is asked to reload and answers with its outcome. It reads
  the end of the pair when the first process dies, however it dies (SIGKILL
  too), and then drains and exits: no orphans.
- SIGTERM: they drain as the first does (sessions in DATA finish, commits land,
  nothing answered ``250`` is lost); one that has not ended when the first
  process's own stop is over is killed, which loses only unanswered mail.
- One that dies is logged and started again after a back-off (1 s, doubling
  to 60 s; back to 1 s once one has run for a minute).
- A reload runs in the first process first; only if it is accepted there are
  the others asked, and the one outcome (``run_dir``, ``systemctl status``)
  says accepted only when every process applied it, naming any that did not.
- A unix-socket listener is not shared: ``SO_REUSEPORT`` is for TCP, and a
  second bind of the path would take it from the first process. The first
  process serves it alone.
- The others count in prometheus-client's multiprocess mode, in a folder made
  here; the first process's ``/metrics`` adds their counts to its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ingest.ops.reload import ReloadResult
from ingest.ops.shutdown import finished_within
from policy.errors import PermFail

log = logging.getLogger("mail.app")

# prometheus-client's multiprocess mode: set before the other processes import it.
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
BACKOFF_FIRST, BACKOFF_MAX, STEADY = 1.0, 60.0, 60.0
READY_TIMEOUT = 60.0  # seconds for a new process to bind and say so
ANSWER_TIMEOUT = 10.0  # seconds for a process to answer a reload

# proto -> the "host:port" the first process is bound to (None: not shared)
Addresses = dict[str, str | None]


class IntakeFailed(PermFail):
    """An intake process exited before it listened: serve does not start (a port
    taken, a configuration the first process accepted and this one did not)."""


@dataclass
class _Slot:
    """One intake process's place, taken again by a new process when it dies."""

    number: int
    first: asyncio.Future[None]  # the first process in this place is listening
    process: asyncio.subprocess.Process | None = None
    channel: asyncio.StreamWriter | None = None  # set while it listens
    answer: asyncio.Future[dict[str, Any] | None] | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0


class IntakeProcesses:
    """The other intake processes of one ``serve``, kept running until :meth:`stop`."""

    def __init__(self, source: str, count: int, digest: str) -> None:
        self.source = source
        self.digest = digest
        self.metrics_dir = tempfile.mkdtemp(prefix="firstline-metrics-")
        self._slots: list[_Slot] = []
        self._count = count
        self._addresses: Addresses = {}
        self._stopping = asyncio.Event()

    async def start(self, addresses: Addresses) -> None:
        """Start them all; return once every one listens (raise if one cannot)."""
        self._addresses = dict(addresses)
        loop = asyncio.get_running_loop()
        self._slots = [_Slot(n, loop.create_future()) for n in range(1, self._count + 1)]
        for slot in self._slots:
            slot.task = asyncio.create_task(self._keep(slot), name=f"intake-{slot.number}")
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await asyncio.gather(*(slot.first for slot in self._slots))
        except BaseException:
            await self.stop(0)
            raise

    def health(self) -> str:
        running = sum(slot.channel is not None for slot in self._slots)
        if running == len(self._slots):
            return "ok"
        return f"{running + 1} of {len(self._slots) + 1} intake processes running"

    async def reload(self, result: ReloadResult, addresses: Addresses) -> ReloadResult:
        """Reload the others after the first process's ``result``; the outcome of all."""
        self._addresses = dict(addresses)
        if not result.accepted:  # they keep the configuration in force, as the first did
            return result
        asked: list[_Slot] = []
        for slot in self._slots:
            if slot.channel is None:  # starting again: it reads the file when it starts
                log.info("intake process %d is not running; it reads the file at its start",
                         slot.number)  # fmt: skip
                continue
            slot.answer = asyncio.get_running_loop().create_future()
            _send(slot.channel, {"op": "reload", "addresses": addresses})
            asked.append(slot)
        reached: list[int] = []
        problems: list[str] = []
        for slot in asked:
            answer = None
            if slot.answer is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ANSWER_TIMEOUT):
                        answer = await slot.answer
            if answer is None:
                problems.append(f"intake process {slot.pid}: no answer; see its log")
            elif answer["accepted"]:
                reached.append(slot.pid)
            else:
                problems += [f"intake process {slot.pid}: {text}" for text in answer["problems"]]
        if not problems:
            return replace(result, reached=reached)
        log.error("reload applied by pid %d but refused by other intake processes", result.pid)
        applied = f"applied by the first process (pid {result.pid}), not by every intake process"
        return replace(result, accepted=False, problems=[applied, *problems], reached=reached)

    def terminate(self) -> None:
        """Begin the stop: every process drains from now on."""
        self._stopping.set()
        for slot in self._slots:
            _signal(slot.process, signal.SIGTERM)

    async def stop(self, patience: float) -> None:
        """Stop them (see :meth:`terminate`); kill what has not ended after ``patience`` s."""
        self.terminate()
        tasks = [slot.task for slot in self._slots if slot.task is not None]
        if not await finished_within(asyncio.gather(*tasks), patience):
            for slot in self._slots:
                if slot.process is not None and slot.process.returncode is None:
                    log.error("intake process %d did not stop in time; killing it", slot.pid)
                    _signal(slot.process, signal.SIGKILL)
            await finished_within(asyncio.gather(*tasks), 5)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def _keep(self, slot: _Slot) -> None:
        delay = BACKOFF_FIRST
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                ended = await self._run(slot)
            except OSError as exc:
                ended = f"could not be started: {exc.strerror}"
            if not slot.first.done():  # never listened: a start-up problem, not a crash
                slot.first.set_exception(
                    IntakeFailed(f"intake process {slot.number} {ended} before it listened")
                )
                return
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STEADY:
                delay = BACKOFF_FIRST
            log.error("intake process %d (pid %d) %s; starting another in %gs",
                      slot.number, slot.pid, ended, delay)  # fmt: skip
            await finished_within(self._stopping.wait(), delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _run(self, slot: _Slot) -> str:
        """One process in ``slot``, from its start to its exit: how it ended."""
        ours, theirs = socket.socketpair()
        try:
            slot.process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from ingest.ops.replica import main; main()",
                self.source, str(theirs.fileno()), self.digest, json.dumps(self._addresses),
                pass_fds=(theirs.fileno(),), env=self._environment(),
                stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            theirs.close()
        if self._stopping.is_set():  # stopped while it was being started
            _signal(slot.process, signal.SIGTERM)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        try:
            while line := await _line(reader):
                message = json.loads(line)
                if message["op"] == "ready":
                    slot.channel = writer
                    log.info("intake process %d listening (pid %d)", slot.number, slot.pid)
                    if not slot.first.done():
                        slot.first.set_result(None)
                elif message["op"] == "reloaded" and slot.answer and not slot.answer.done():
                    slot.answer.set_result(message["result"])
        finally:
            slot.channel = None
            if slot.answer is not None and not slot.answer.done():
                slot.answer.set_result(None)
            writer.close()
        return _how(await slot.process.wait())

    def _environment(self) -> dict[str, str]:
        """Ours, with this code first on the path, its own metrics and no systemd socket
        (the first process alone speaks to systemd)."""
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        environment = {**os.environ, METRICS_ENV: self.metrics_dir,
                       "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root}  # fmt: skip
        environment.pop("NOTIFY_SOCKET", None)
        return environment


async def _line(reader: asyncio.StreamReader) -> bytes:
    """The next line from a process; b"" once it is gone (ended, or reset by its death)."""
    try:
        return await reader.readline()
    except ConnectionError:
        return b""


def _send(channel: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):  # it died: its task says so
        channel.write(json.dumps(message).encode() + b"\n")


def _signal(process: asyncio.subprocess.Process | None, number: int) -> None:
    if process is not None and process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(number)


def _how(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"
