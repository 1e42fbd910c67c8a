"""A consistent copy of the SQLite store while ``serve`` keeps accepting mail.

SQLite's online backup API copies every page inside one read transaction:
in WAL mode a reader never blocks the writers, so intake goes on and the
copy is the database as of one commit. The copy is checked with
``PRAGMA integrity_check`` and synced before it takes its final name, so a
file at ``PATH`` is always a whole, verified backup. PostgreSQL has its own
tools (``pg_dump``), see docs/operators.md.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from policy.errors import PermFail


class BackupError(PermFail):
    """The backup could not be made; nothing was left at the target path."""


@dataclass(frozen=True)
class BackupReport:
    path: str
    size: int
    integrity: str


def backup(url: str, target: Path) -> BackupReport:
    """Copy the SQLite database at ``url`` to ``target`` (which must not exist yet)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        raise BackupError(
            "firstline backup copies a SQLite database; for PostgreSQL use pg_dump "
            "(docs/operators.md, Backups)"
        )
    source_path = Path(parsed.database).expanduser()
    if not source_path.is_file():
        raise BackupError(f"no database at {source_path}")
    if target.exists():
        raise BackupError(f"{target} exists; choose a new file name")
    partial = target.with_name(f".{target.name}.partial")
    try:
        # timeout: the copy's read transaction may wait for a checkpoint in progress.
        source = sqlite3.connect(source_path, timeout=30)
        try:
            copy = sqlite3.connect(partial)
            try:
                source.backup(copy)  # all pages in one step: one snapshot
                integrity = "; ".join(row[0] for row in copy.execute("PRAGMA integrity_check"))
                # The copy is read on its own: a single file, not a WAL beside it.
                copy.execute("PRAGMA journal_mode=DELETE")
            finally:
                copy.close()
        finally:
            source.close()
        if integrity != "ok":
            raise BackupError(f"the copy failed its integrity check: {integrity[:500]}")
        _sync(partial)
        partial.rename(target)
        _sync(target.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy the database: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return BackupReport(path=str(target), size=target.stat().st_size, integrity=integrity)


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
