"""The batch worker: a batch every ``batch.interval`` seconds, purging hourly.

``firstline serve`` and ``firstline worker`` run it beside the outbox and
webhook delivery (:mod:`ingest.work.runner`); a full batch means more is
waiting, so the next one starts at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor

from sqlalchemy import Engine

from ingest.work.batch import Batch
from ingest.work.groups import BatchResult
from ingest.work.housekeeping import Housekeeping
from ingest.work.runner import Runner
from ingest.work.tickets import file_message
from policy.config.model import Config

log = logging.getLogger("mail.batch")


class Worker(Runner):
    name = "worker"

    def __init__(
        self,
        current: Callable[[], Config],
        engine: Engine,
        pool: Callable[[], Executor] | None = None,
    ) -> None:
        """``pool`` makes the executor the batch parses in (threads without)."""
        super().__init__()
        self.current = current
        self.batch = Batch(
            engine,
            file_message,
            executor=pool() if pool is not None else None,
            new_executor=pool,
        )
        self.housekeeping = Housekeeping(engine, self.batch.owner)
        self.last: BatchResult | None = None

    def interval(self) -> float:
        return self.current().batch.interval

    async def handle_once(self) -> bool:
        config = self.current()
        await self.housekeeping.purge_when_due(config)
        self.last = last = await self.housekeeping.run_batch(self.batch, config)
        if last.taken:
            log.info(
                "batch: taken=%d tickets=%d failed=%d deferred=%d quarantined=%d",
                last.taken, last.tickets, last.failed, last.deferred, last.quarantined,
            )  # fmt: skip
        return last.taken >= config.batch.size

    def handle_error(self, error: Exception) -> None:
        log.error("batch failed; retrying in %gs", self.delay(), exc_info=error)
