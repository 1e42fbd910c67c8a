"""Group commit: many SMTP sessions, one fsync.

A ``250`` may only be sent once the message is committed durably, and an
fsync costs milliseconds on a real disk. Paying it once per message would cap
ingest at a few hundred messages a second; instead one writer task collects
whatever sessions are waiting, commits them in one transaction (in a thread,
so the event loop keeps serving), and resolves every session's future. Under
load the batches grow by themselves, so the fsync cost per message shrinks
exactly when it matters.

If a batch fails, each item is retried on its own, so one poisoned row
cannot make its neighbours answer ``451``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from policy.errors import StorageUnavailable
from storage.models import QueueEntry, QueueState, Rejection, StoredMessage

log = logging.getLogger("mail.storage")


@dataclass
class Incoming:
    """One accepted message and the mailboxes it is queued for."""

    message: StoredMessage
    mailboxes: list[str]
    state: QueueState = QueueState.QUEUED
    queue_ids: list[int] = field(default_factory=list)


Item = Incoming | Rejection
# Runs in the commit's transaction after each item is written (webhook events).
WriteHook = Callable[[Session, Item], None]


class GroupCommitWriter:
    def __init__(
        self, engine: Engine, *, max_batch: int = 256, on_write: WriteHook | None = None
    ) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._on_write = on_write
        self._pending: list[tuple[Item, asyncio.Future[Item]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def close(self) -> None:
        """Commit what is pending, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def submit(self, item: Item) -> Item:
        """Return once ``item`` is committed; raise :class:`StorageUnavailable` if not."""
        if self._task is None or self._task.done():
            raise StorageUnavailable("the intake writer is not running")
        future: asyncio.Future[Item] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._idle.clear()
        self._wakeup.set()
        return await future

    def submit_nowait(self, item: Item, on_error: Callable[[BaseException], None]) -> None:
        """Queue a write nobody waits for (rejection records); report failures."""
        if self._task is None or self._task.done():
            on_error(StorageUnavailable("the intake writer is not running"))
            return
        future: asyncio.Future[Item] = asyncio.get_running_loop().create_future()

        def _report(done: asyncio.Future[Item]) -> None:
            error = None if done.cancelled() else done.exception()
            if error is not None:
                on_error(error)

        future.add_done_callback(_report)
        self._pending.append((item, future))
        self._idle.clear()
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until everything submitted so far has been written (or has failed)."""
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit_batch(batch)
            self._idle.set()
            if self._closing:
                return

    async def _commit_batch(self, batch: list[tuple[Item, asyncio.Future[Item]]]) -> None:
        items = [item for item, _ in batch]
        try:
            await asyncio.to_thread(self._write, items)
        except Exception as exc:
            if len(batch) == 1:
                log.error("commit failed: %s", exc.__class__.__name__, exc_info=exc)
                _resolve(batch[0][1], error=StorageUnavailable(str(exc)))
                return
            for single in batch:
                await self._commit_batch([single])
            return
        self.batches += 1
        self.items += len(items)
        for item, future in batch:
            _resolve(future, result=item)

    def _write(self, items: list[Item]) -> None:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            for item in items:
                if isinstance(item, Rejection):
                    session.add(item)
                    if self._on_write is not None:
                        session.flush()
                        self._on_write(session, item)
                    continue
                session.add(item.message)
                session.flush()
                assert item.message.id is not None
                entries = [
                    QueueEntry(
                        message_id=item.message.id,
                        mailbox=mailbox,
                        digest=item.message.digest,
                        state=item.state,
                    )
                    for mailbox in item.mailboxes
                ]
                session.add_all(entries)
                session.flush()
                item.queue_ids = [e.id for e in entries if e.id is not None]
                if self._on_write is not None:
                    self._on_write(session, item)


def _resolve(
    future: asyncio.Future[Any], *, result: Any = None, error: Exception | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
