"""Bounded stops: ``firstline serve`` must exit within systemd's stop timeout.

A stop never waits on what may not end (a loop that swallowed its
cancellation, a commit against a hung database, a worker process): each wait
here has a bound, and what is left behind is said in the log. What it held is
leased, and leases expire, so leaving it loses nothing.

The waits use ``asyncio.timeout``, never ``asyncio.wait_for``: on Python 3.11
``wait_for`` drops a cancellation that arrives in the same step as its
result (cpython gh-86296), and a loop cancelled just as it was poked then
ran on, so the server never stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

log = logging.getLogger("mail.app")


async def finished_within(work: Awaitable[object], seconds: float) -> bool:
    """Await ``work`` for at most ``seconds``; whether it finished."""
    try:
        async with asyncio.timeout(seconds):
            await work
    except TimeoutError:
        return False
    return True


async def cancel_all(tasks: list[asyncio.Task[None]], patience: float) -> None:
    """Cancel ``tasks`` and wait ``patience`` seconds for their cleanup (a batch
    giving back its entries); cancel the stragglers once more (code that swallowed
    the first cancellation), then leave them, said in the log."""
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    if pending:
        _done, pending = await asyncio.wait(pending, timeout=patience)
    for task in pending:
        task.cancel()
    if pending:
        _done, pending = await asyncio.wait(pending, timeout=1)
    for task in pending:
        log.error("%s did not stop; leaving it (its leases expire)", task.get_name())
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("%s had failed", task.get_name(), exc_info=task.exception())
