"""Live configuration reload: SIGHUP, or ``firstline reload``.

Admins edit the YAML by hand while mail flows. A reload reads the file again
and either replaces the configuration in force as a whole, or refuses the
edit with the same line-numbered problems ``check-config`` prints and keeps
running on the old one; both outcomes are logged with the file's sha256, so
"which version was live at 14:05?" has an answer in the logs.

What a reload changes (see ``App.apply``): mailboxes, policy, limits and the
DNS settings apply to the next command of every session (the listener reads
the configuration per command), connection limits to the next connection,
and a listener whose address changed is bound anew before the old one
closes; sessions already open finish undisturbed; so are the metrics and API
ports. What it cannot change without a restart (:data:`RESTART_NEEDED`: the
database, the pid files, logging) is refused, naming it: the reload never
reports success for a change that did not happen.

``firstline reload`` finds running processes through pid files in
``server.run_dir`` (``serve.pid``, ``worker.pid``), sends SIGHUP, and waits
for the process to write the outcome to ``<role>.reload`` (JSON) beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ingest.ops.metrics import RELOADS
from policy.config.loading import ConfigError, ConfigProblem, load_config
from policy.config.model import Config
from storage.models import utcnow

log = logging.getLogger("mail.config")

ROLES = ("serve", "worker")


@dataclass(frozen=True)
class ReloadResult:
    accepted: bool
    digest: str
    source: str
    problems: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    pid: int = field(default_factory=os.getpid)
    # The other intake processes (``server.processes``) that applied it too.
    reached: list[int] = field(default_factory=list)
    at: str = field(default_factory=lambda: utcnow().isoformat())


def file_digest(path: str) -> str:
    """sha256 of the file's bytes, as :attr:`Config.digest` has it ("" if unreadable)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def changed_sections(old: Config, new: Config) -> list[str]:
    """Top-level sections whose values differ, for the log line."""
    before, after = old.model_dump(), new.model_dump()
    return sorted(key for key in after if before.get(key) != after[key])


# What a running process holds from its start and cannot swap: the database,
# its commit deadline, the pid files, the log handlers, its intake processes and their event
# loop. Everything else is
# applied (``App.apply``), listeners, metrics and the API included.
RESTART_NEEDED = (
    ("storage", "url"),
    ("storage", "commit_timeout"),
    ("server", "run_dir"),
    ("server", "processes"),
    ("server", "event_loop"),
    ("logging", "format"),
    ("logging", "level"),
)


def restart_needed(old: Config, new: Config) -> list[str]:
    """The settings a reload would have to change but cannot, as ``section.key``."""
    return [
        f"{section}.{key}"
        for section, key in RESTART_NEEDED
        if getattr(getattr(old, section), key) != getattr(getattr(new, section), key)
    ]


# (new configuration) -> problems that stop it from being applied; applies it otherwise
Apply = Callable[[Config], Awaitable[list[ConfigProblem]]]


class Reloader:
    """Reads the file, validates it, hands it to ``apply``; one reload at a time."""

    def __init__(self, current: Callable[[], Config], apply: Apply, *, count: bool = True) -> None:
        """``count``: whether reloads count in the metrics (not in the other intake
        processes, whose reloads are part of the first one's)."""
        self._current = current
        self._apply = apply
        self._count = count
        self._lock = asyncio.Lock()

    async def reload(self) -> ReloadResult:
        async with self._lock:
            result = await self._reload()
        if self._count:
            RELOADS.labels("accepted" if result.accepted else "refused").inc()
        return result

    async def _reload(self) -> ReloadResult:
        old = self._current()
        source = old.source
        try:
            new = await asyncio.to_thread(load_config, source)
        except ConfigError as exc:
            return self._refused(source, file_digest(source), exc.problems)
        needed = restart_needed(old, new)
        if needed:
            problem = ConfigProblem(
                source, None, "", f"restart needed for: {', '.join(needed)} (nothing was changed)"
            )
            return self._refused(source, new.digest, [problem])
        changes = changed_sections(old, new)
        problems = await self._apply(new)
        if problems:
            return self._refused(source, new.digest, problems)
        log.info(
            "reload accepted: %s sha256=%s changed=%s",
            source, new.digest, ",".join(changes) or "nothing",
            extra={"digest": new.digest, "changes": changes},
        )  # fmt: skip
        return ReloadResult(True, new.digest, source, changes=changes)

    @staticmethod
    def _refused(source: str, digest: str, problems: list[ConfigProblem]) -> ReloadResult:
        texts = [str(p) for p in problems]
        log.error(
            "reload refused: %s sha256=%s; the running configuration stays in force",
            source, digest or "unreadable", extra={"digest": digest, "problems": texts},
        )  # fmt: skip
        for text in texts:
            log.error("  %s", text)
        return ReloadResult(False, digest, source, problems=texts)


# --- the control files ------------------------------------------------------


class ControlFiles:
    """This process's pid file and its last reload outcome, under ``run_dir``."""

    def __init__(self, run_dir: Path, role: str) -> None:
        self.run_dir = run_dir
        self.pid_file = run_dir / f"{role}.pid"
        self.result_file = run_dir / f"{role}.reload"

    def claim(self) -> bool:
        """Write our pid file, unless a live firstline process already has it."""
        other = read_pid(self.pid_file)
        if other is not None and other != os.getpid() and _is_firstline(other):
            log.warning(
                "%s belongs to running process %d; `firstline reload` will not reach this "
                "one (give each process its own server.run_dir)", self.pid_file, other,
            )  # fmt: skip
            return False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.pid_file, f"{os.getpid()}\n")
        return True

    def release(self) -> None:
        """Remove our files at exit (a pid file another process has since claimed stays)."""
        with contextlib.suppress(FileNotFoundError):
            self.result_file.unlink()
        if read_pid(self.pid_file) == os.getpid():
            self.pid_file.unlink(missing_ok=True)

    def publish(self, result: ReloadResult) -> None:
        _write_atomically(self.result_file, json.dumps(asdict(result)) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _is_firstline(pid: int) -> bool:
    """Guard against a stale pid file naming a recycled pid: SIGHUP kills most programs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's; the kill below will say so
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True  # no /proc to ask (not Linux): trust the pid file
    try:
        command = cmdline.read_bytes()
    except OSError:
        return False
    return b"firstline" in command or b"ingest.cli" in command


@dataclass(frozen=True)
class Outcome:
    role: str
    pid: int | None
    result: dict[str, Any] | None
    error: str | None = None


def request_reload(run_dir: Path, *, timeout: float = 15.0) -> list[Outcome]:
    """SIGHUP every running firstline process found in ``run_dir``; wait for their outcomes."""
    waiting: list[tuple[ControlFiles, str, int, bytes]] = []
    outcomes: list[Outcome] = []
    for role in ROLES:
        files = ControlFiles(run_dir, role)
        pid = read_pid(files.pid_file)
        if pid is None:
            continue
        if not _is_firstline(pid):
            outcomes.append(Outcome(role, pid, None, "stale pid file: no such firstline process"))
            continue
        before = _read_bytes(files.result_file)
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            outcomes.append(Outcome(role, pid, None, f"cannot signal: {exc.strerror}"))
            continue
        waiting.append((files, role, pid, before))
    deadline = time.monotonic() + timeout
    for files, role, pid, before in waiting:
        outcomes.append(_await_result(files, role, pid, before, deadline))
    return outcomes


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _await_result(
    files: ControlFiles, role: str, pid: int, before: bytes, deadline: float
) -> Outcome:
    while time.monotonic() < deadline:
        now = _read_bytes(files.result_file)
        if now and now != before:
            try:
                return Outcome(role, pid, json.loads(now))
            except ValueError:
                pass  # caught between write and rename on a filesystem without atomic rename
        time.sleep(0.05)
    return Outcome(role, pid, None, "no answer in time; see the process's log")
