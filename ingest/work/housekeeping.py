"""The worker's chores around each batch: bookkeeping, metrics, and the retention purge.

Each batch's outcome is written to ``batch_runs`` (one row per worker), so
``firstline status`` in another process can tell when the last batch ran and
how it went; the retention purge runs once an hour, because an item due for
purging may as well wait that long and the queries are not free on a big store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ingest.ops.metrics import PURGED, observe_batch
from ingest.work.batch import Batch
from ingest.work.groups import BatchResult
from policy.config.model import Config
from storage import retention, status
from storage.models import BatchRun, utcnow

log = logging.getLogger("mail.batch")

PURGE_INTERVAL = 3600.0


class Housekeeping:
    def __init__(self, engine: Engine, owner: str) -> None:
        self.engine = engine
        self.owner = owner
        self._next_purge = 0.0

    async def run_batch(self, batch: Batch, config: Config) -> BatchResult:
        """One batch, timed, counted and recorded, whether it succeeds or raises.

        A cancelled batch (shutdown) is not recorded: it did not finish.
        """
        started = utcnow()
        clock = time.monotonic()
        try:
            result = await batch.run(config)
        except Exception as exc:
            # The first line only: database errors go on with the SQL and its parameters.
            error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            error = error[:500]
            await self._account(started, time.monotonic() - clock, BatchResult(), error)
            raise
        await self._account(started, time.monotonic() - clock, result, None)
        return result

    async def _account(
        self, started: datetime, seconds: float, result: BatchResult, error: str | None
    ) -> None:
        observe_batch(seconds, result.taken, {
            "ticket": result.tickets, "failed": result.failed,
            "deferred": result.deferred, "quarantined": result.quarantined,
        })  # fmt: skip
        run = BatchRun(
            owner=self.owner, started_at=started, finished_at=utcnow(), duration=seconds,
            taken=result.taken, tickets=result.tickets, failed=result.failed,
            deferred=result.deferred, quarantined=result.quarantined, error=error,
        )  # fmt: skip
        try:
            await asyncio.to_thread(self._record, run)
        except Exception as exc:  # bookkeeping must not stop the batch
            log.warning("batch run not recorded: %s", exc.__class__.__name__)

    def _record(self, run: BatchRun) -> None:
        with Session(self.engine) as session, session.begin():
            status.record_batch_run(session, run)

    async def purge_when_due(self, config: Config) -> retention.PurgeReport | None:
        if time.monotonic() < self._next_purge:
            return None
        self._next_purge = time.monotonic() + PURGE_INTERVAL
        try:
            report = await asyncio.to_thread(self._purge, config.retention.days)
        except Exception:
            log.exception("retention purge failed; trying again in an hour")
            return None
        PURGED.labels("raw_messages").inc(len(report.raw_messages))
        PURGED.labels("rejections").inc(report.rejections)
        PURGED.labels("quarantined").inc(len(report.quarantined))
        PURGED.labels("webhook_events").inc(report.webhook_events)
        if report.raw_messages or report.rejections or report.quarantined:
            log.info(
                "retention: purged %d raw message(s), %d rejection(s), %d quarantined "
                "message(s) older than %s",
                len(report.raw_messages), report.rejections, len(report.quarantined),
                report.cutoff.isoformat(),
            )  # fmt: skip
        return report

    def _purge(self, days: int) -> retention.PurgeReport:
        return retention.purge(self.engine, days=days)
