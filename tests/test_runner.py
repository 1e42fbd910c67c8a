"""The one background loop: what wakes it, what stops it, how it backs off.

Nothing here measures time: every runner sleeps an hour between passes, so
a pass that happens at all proves it was woken, and a stop that returns
proves it did not wait the sleep out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import pytest

from ingest.work.runner import MAX_ERROR_BACKOFF, Runner

HOUR = 3600.0


class Passes(Runner):
    """Reports each pass; each one does what the test queued for it."""

    name = "test-runner"

    def __init__(self, *plan: str, interval: float = HOUR) -> None:
        super().__init__()
        self.every = interval
        self.plan = list(plan)  # "idle", "more", "fail", "hang", "slow" (until release)
        self.release = asyncio.Event()
        self.passes: asyncio.Queue[int] = asyncio.Queue()
        self.count = 0
        self.cancelled = asyncio.Event()
        self.stopped = asyncio.Event()

    def interval(self) -> float:
        return self.every

    async def handle_once(self) -> bool:
        self.count += 1
        step = self.plan.pop(0) if self.plan else "idle"
        self.passes.put_nowait(self.count)
        if step == "fail":
            raise RuntimeError("the database went away")
        if step == "slow":
            await self.release.wait()
        if step == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return step == "more"

    async def handle_stop(self) -> None:
        self.stopped.set()


def run(test: Coroutine[Any, Any, None]) -> None:
    # The bound is against a hang (a broken stop or poke), not a speed claim.
    async def bounded() -> None:
        async with asyncio.timeout(60):
            await test

    asyncio.run(bounded())


def test_a_pass_with_more_waiting_is_followed_at_once_then_it_sleeps() -> None:
    async def scenario() -> None:
        runner = Passes("more", "more", "idle")
        runner.start()
        assert [await runner.passes.get() for _ in range(3)] == [1, 2, 3]
        await asyncio.sleep(0)
        assert runner.passes.empty()  # asleep for the hour now
        await runner.stop()
        assert runner.count == 3 and runner.stopped.is_set()

    run(scenario())


def test_a_poke_ends_the_sleep() -> None:
    async def scenario() -> None:
        runner = Passes()
        runner.start()
        assert await runner.passes.get() == 1
        runner.poke()
        assert await runner.passes.get() == 2
        await runner.stop()

    run(scenario())


def test_a_poke_during_a_pass_is_not_lost() -> None:
    async def scenario() -> None:
        runner = Passes("slow")
        runner.start()
        assert await runner.passes.get() == 1
        runner.poke()  # new work arrived while the pass was busy
        runner.release.set()
        assert await runner.passes.get() == 2  # not an hour later
        await runner.stop()

        early = Passes()
        early.poke()  # before the first pass, which then must not sleep it away
        early.start()
        assert [await early.passes.get() for _ in range(2)] == [1, 2]
        await early.stop()

    run(scenario())


def test_stop_does_not_wait_out_the_sleep() -> None:
    async def scenario() -> None:
        runner = Passes()
        task = runner.start()
        await runner.passes.get()
        await runner.stop()
        assert task.done() and runner.stopped.is_set()
        await runner.stop()  # twice is harmless

    run(scenario())


def test_stop_cancels_the_pass_in_flight() -> None:
    """The pass gives its work back (or leaves it to its lease) as it is cancelled."""

    async def scenario() -> None:
        runner = Passes("hang")
        task = runner.start()
        await runner.passes.get()
        await runner.stop()
        assert runner.cancelled.is_set() and task.done() and runner.stopped.is_set()

    run(scenario())


def test_stop_gives_up_on_a_loop_that_will_not_end(caplog: pytest.LogCaptureFixture) -> None:
    """A pass that will not end, even cancelled twice (a give-back that swallows
    its cancellations), does not hold stop: it is left, said in the log, and its
    leases expire if it never returns."""

    async def scenario() -> None:
        release = asyncio.Event()

        class Stubborn(Passes):
            async def handle_once(self) -> bool:
                self.passes.put_nowait(1)
                try:
                    await asyncio.Event().wait()
                finally:
                    while not release.is_set():
                        with contextlib.suppress(asyncio.CancelledError):
                            await asyncio.shield(release.wait())
                return False

        runner = Stubborn()
        task = runner.start()
        await runner.passes.get()
        await runner.stop(grace=0)
        assert not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert "test-runner did not stop; leaving it (its leases expire)" in caplog.text


def test_failures_back_off_from_the_interval_and_a_good_pass_resets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        interval = MAX_ERROR_BACKOFF / 3
        runner = Passes("fail", "fail", "fail", "idle", interval=interval)
        assert runner.delay() == interval
        runner.start()
        delays = []
        for expected in (1, 2, 3):
            assert await runner.passes.get() == expected
            await asyncio.sleep(0)  # let the loop note the failure and go to sleep
            delays.append(runner.delay())
            runner.poke()
        assert await runner.passes.get() == 4
        await asyncio.sleep(0)
        assert runner.failures == 0 and runner.delay() == interval
        await runner.stop()
        # Doubling from the interval, capped (an interval over the cap is never shortened).
        assert delays == [interval, 2 * interval, MAX_ERROR_BACKOFF]

    run(scenario())
    assert caplog.text.count("test-runner: pass failed") == 3
    assert "RuntimeError: the database went away" in caplog.text


def test_the_backoff_is_capped_but_never_below_the_interval() -> None:
    runner = Passes(interval=1.0)
    runner.failures = 40
    assert runner.delay() == MAX_ERROR_BACKOFF
    runner = Passes(interval=HOUR)
    runner.failures = 40
    assert runner.delay() == HOUR
