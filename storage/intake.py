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
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from policy.errors import StorageUnavailable
from policy.message.headers import HeaderSummary, one_line
from policy.verify.verdict import Action, Envelope, Verdict
from storage.bulkinsert import compiled_insert, driver_cursor, new_row, row_of
from storage.engine import storage_error
from storage.models import QueueEntry, QueueState, Rejection, StoredMessage
from storage.writelock import lock_path, turn

log = logging.getLogger("mail.storage")


@dataclass
class Incoming:
    """One accepted message and the mailboxes it is queued for.

    ``message`` holds the ``stored_messages`` column values (built by
    :meth:`accepted` with :func:`new_row`), not an ORM object: building a
    SQLModel instance for every message cost more CPU than the rest of DATA
    handling. Its ``raw`` is stored after ``prefix`` (our trace headers),
    joined only when the row is written (:meth:`row`): until then the
    session holds one copy of its message, not two.
    """

    message: dict[str, Any]
    mailboxes: list[str]
    state: QueueState = QueueState.QUEUED
    message_id: int | None = None
    queue_ids: list[int] = field(default_factory=list)
    prefix: bytes = b""

    @classmethod
    def accepted(
        cls,
        body: bytes,
        *,
        prefix: bytes,
        as_sent: bytes,
        trace_id: str,
        envelope: Envelope,
        headers: HeaderSummary,
        verdict: Verdict,
        mailboxes: list[str],
    ) -> Incoming:
        """What the listener accepted, stored as ``prefix`` (our trace headers) and
        ``body`` (``as_sent`` less forged results), queued for ``mailboxes`` —
        quarantined if the verdict says so.

        The digest is of the bytes as the client sent them: the same mail
        retried after a lost ``250`` has the same one.
        """
        message = new_row(
            StoredMessage,
            trace_id=trace_id,
            digest=hashlib.sha256(as_sent).hexdigest(),
            size=len(prefix) + len(body),
            raw=body,
            proto=envelope.proto,
            client_ip=envelope.client_ip,
            client_name=envelope.client_name,
            helo=one_line(envelope.helo, 255),
            mail_from=one_line(envelope.mail_from, 512),
            rcpt_tos=list(envelope.rcpt_tos),
            header_message_id=headers.message_id,
            header_from=headers.header_from,
            subject=headers.subject,
            forwarding=verdict.forwarding.value,
            authentication_results=verdict.authentication_results,
            verdict={"action": verdict.action.value, "reason": verdict.reason, **verdict.details},
        )
        quarantined = verdict.action == Action.QUARANTINE
        state = QueueState.QUARANTINED if quarantined else QueueState.QUEUED
        return cls(message, mailboxes, state, prefix=prefix)

    def row(self) -> dict[str, Any]:
        """The ``stored_messages`` row as written: the stored bytes joined here."""
        if not self.prefix:
            return self.message
        return {**self.message, "raw": self.prefix + self.message["raw"]}


Item = Incoming | Rejection
# Runs in the commit's transaction after each item is written (webhook events).
WriteHook = Callable[[Session, Item], None]


class GroupCommitWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 256,
        on_write: WriteHook | None = None,
        commit_timeout: float = 60,
        max_batch_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self._engine = engine
        self._turns = lock_path(engine)
        self._max_batch_bytes = max_batch_bytes
        self._commit_timeout = commit_timeout
        self._max_batch = max_batch
        self._on_write = on_write
        self._pending: list[tuple[Item, asyncio.Future[Item]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

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
        try:
            # A database that accepts connections but stops answering must not
            # hold the session forever: the client gets 451 and retries. If the
            # commit lands later, the retry is the same bytes, which the batch
            # files once (same Message-ID and digest).
            # (asyncio.timeout: wait_for adds a waiter future and its callbacks per message.)
            async with asyncio.timeout(self._commit_timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            future.add_done_callback(_consume)  # its outcome no longer has a reader
            raise StorageUnavailable(f"no commit within {self._commit_timeout:g} seconds") from None

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
                # Not kept in a local: this frame lives on while it waits for the
                # next wake-up, and would hold the last batch's messages till then.
                await self._commit_batch(self._take())
            self._idle.set()
            if self._closing:
                return

    def _take(self) -> list[tuple[Item, asyncio.Future[Item]]]:
        """The next batch: at most ``max_batch`` items and ``max_batch_bytes`` of
        messages (or one larger message). A commit of gigabytes would outlast
        ``commit_timeout`` and answer every session in it ``451``; and the
        stored bytes are joined (a copy) only for the batch in hand."""
        count = size = 0
        for item, _ in self._pending[: self._max_batch]:
            size += item.message["size"] if isinstance(item, Incoming) else 0
            if count and size > self._max_batch_bytes:
                break
            count += 1
        batch = self._pending[:count]
        del self._pending[:count]
        return batch

    async def _commit_batch(self, batch: list[tuple[Item, asyncio.Future[Item]]]) -> None:
        items = [item for item, _ in batch]
        try:
            await asyncio.to_thread(self._write, items)
        except Exception as exc:
            if len(batch) == 1:
                log.error("commit failed: %s", exc.__class__.__name__, exc_info=exc)
                _resolve(batch[0][1], error=storage_error(exc))
                return
            for single in batch:
                await self._commit_batch([single])
            return
        for item, future in batch:
            _resolve(future, result=item)

    def _write(self, items: list[Item]) -> None:
        """One transaction for the whole batch, its rows inserted on the driver's cursor."""
        rejections = [item for item in items if isinstance(item, Rejection)]
        incoming = [item for item in items if isinstance(item, Incoming)]
        # Every intake process of the host writes here: see storage.writelock.
        with turn(self._turns), self._engine.connect() as connection, connection.begin():
            with driver_cursor(connection) as cursor:
                ids = compiled_insert(connection, Rejection).run(
                    cursor, [row_of(r) for r in rejections]
                )
                for rejection, rejection_id in zip(rejections, ids, strict=True):
                    rejection.id = rejection_id
                rows = [item.row() for item in incoming]
                ids = compiled_insert(connection, StoredMessage).run(cursor, rows)
                del rows  # the joined copies, before the other table's statement
                entries: list[tuple[Incoming, dict[str, Any]]] = []
                for item, message_id in zip(incoming, ids, strict=True):
                    item.message_id = message_id
                    item.queue_ids.clear()  # ids of a rolled-back attempt, if this is a retry
                    entries += [
                        (item, new_row(QueueEntry, message_id=message_id, mailbox=mailbox,
                                       digest=item.message["digest"], state=item.state))
                        for mailbox in item.mailboxes
                    ]  # fmt: skip
                ids = compiled_insert(connection, QueueEntry).run(
                    cursor, [entry for _, entry in entries]
                )
                for (item, _), entry_id in zip(entries, ids, strict=True):
                    item.queue_ids.append(entry_id)
            if self._on_write is not None:
                with Session(bind=connection) as session:  # in this transaction
                    for written in items:
                        self._on_write(session, written)
                    session.flush()


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a commit that timed out failed too: %s", future.exception().__class__.__name__)


def _resolve(
    future: asyncio.Future[Any], *, result: Any = None, error: Exception | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
