"""Free space on the storage volume, so mail is refused before a write can fail.

Like Postfix's ``queue_minfree``: when the volume holding the SQLite database
has less than ``storage.min_free`` bytes free (default: four times
``server.max_message_size``), new mail gets ``452 4.3.1 Insufficient system
storage`` at MAIL and again before its commit, and the sender retries later.
The batch and the retention purge keep running: they are what gives space
back. ``statvfs`` is cheap but not free, so its answer is kept for
``INTERVAL`` seconds rather than asked for every message.

PostgreSQL keeps its data on the database server's disk, which this process
cannot see; there the database's own "disk full" errors become ``452`` where
the commit fails (:func:`storage.engine.storage_error`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from policy.config.model import Config

INTERVAL = 1.0
INSUFFICIENT = "452 4.3.1 Insufficient system storage"


@dataclass(frozen=True)
class Space:
    """One look at the volume: bytes free (for us, not root's reserve) and the threshold."""

    folder: str
    free: int
    total: int
    min_free: int

    @property
    def low(self) -> bool:
        return self.free < self.min_free

    def as_dict(self) -> dict[str, object]:
        return {"folder": self.folder, "free_bytes": self.free, "total_bytes": self.total,
                "min_free_bytes": self.min_free, "low": self.low}  # fmt: skip

    def describe(self) -> str:
        state = "LOW, refusing mail" if self.low else "ok"
        return (f"{_size(self.free)} free of {_size(self.total)} in {self.folder} "
                f"(refusing mail under {_size(self.min_free)}): {state}")  # fmt: skip


def storage_folder(url: str) -> Path | None:
    """The folder of a SQLite database file; None for PostgreSQL or in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().absolute().parent


def measure(config: Config) -> Space | None:
    """The storage volume now (None: not ours to see, or not there)."""
    folder = storage_folder(config.storage.url)
    if folder is None:
        return None
    try:
        found = os.statvfs(folder)
    except OSError:
        return None
    return Space(str(folder), found.f_bavail * found.f_frsize, found.f_blocks * found.f_frsize,
                 config.min_free_bytes)  # fmt: skip


class SpaceGuard:
    """Answers "is the storage volume low?" from a measurement at most ``interval`` old."""

    def __init__(self, current: Callable[[], Config], interval: float = INTERVAL) -> None:
        self._current = current
        self._interval = interval
        self._measured: Space | None = None
        self._at = -interval

    def space(self) -> Space | None:
        now = time.monotonic()
        if now - self._at >= self._interval:
            self._measured = measure(self._current())
            self._at = now
        return self._measured


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
