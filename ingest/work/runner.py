"""One loop for the background work: the batch, the outbox and webhook delivery.

Each is a :class:`Runner`, as in Mailman 3's ``core/runner.py``: do one pass
(:meth:`Runner.handle_once`), go straight on while it says more is waiting,
else sleep :meth:`Runner.interval` seconds — less when poked, since a poke
means new work. A pass that raises is logged and tried again after an
exponential backoff from the interval (capped at a minute, or the interval
if that is longer), so a database that is away is not hammered yet is found
again soon after it is back; a good pass resets it.

Stopping must be bounded (``firstline serve`` has to exit within systemd's
stop timeout): a stop cancels the loop wherever it is, so it never waits out
a sleep, and work in flight either gives itself back (the batch returns its
unstarted entries) or is left to its lease, which expires and lets another
worker take it. A loop that has not ended ``grace`` seconds after the cancel
is left behind with a warning rather than waited for.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod

from ingest.ops.shutdown import cancel_all
from storage.lease import retry_delay

log = logging.getLogger("mail.runner")

# After repeated failures a pass is still retried this often (or every
# interval, when the interval is longer).
MAX_ERROR_BACKOFF = 60.0


class Runner(ABC):
    """Subclasses say what one pass does and how long to sleep between passes."""

    name = "runner"

    def __init__(self) -> None:
        self.failures = 0  # passes that raised in a row
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def handle_once(self) -> bool:
        """One pass; True when more is waiting and the loop should not sleep."""

    @abstractmethod
    def interval(self) -> float:
        """Seconds to sleep after a pass that left nothing waiting."""

    def handle_error(self, error: Exception) -> None:
        log.error("%s: pass failed; trying again in %gs", self.name, self.delay(), exc_info=error)

    async def handle_stop(self) -> None:
        """Let go of what the loop holds (in-flight tasks, clients); runs as it ends.

        A runner that holds nothing between passes has nothing to do here."""
        return None

    def delay(self) -> float:
        """How long the loop sleeps after the pass it has just made."""
        interval = self.interval()
        if not self.failures:
            return interval
        return retry_delay(self.failures, interval, max(interval, MAX_ERROR_BACKOFF))

    def poke(self) -> None:
        """New work: end the current sleep now (or skip the next one)."""
        self._wake.set()

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name=self.name)
        return self._task

    async def run(self) -> None:
        try:
            while not self._stopping:
                try:
                    more = await self.handle_once()
                except Exception as exc:
                    self.failures += 1
                    self.handle_error(exc)
                else:
                    self.failures = 0
                    if more:
                        continue
                await self._snooze(self.delay())
        finally:
            await self.handle_stop()

    async def _snooze(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def stop(self, grace: float = 5.0) -> None:
        """End the loop: at once if it sleeps, cancelling the pass in flight if not
        (bounded: see :func:`ingest.ops.shutdown.cancel_all`)."""
        self._stopping = True
        if self._task is not None:
            await cancel_all([self._task], grace)
