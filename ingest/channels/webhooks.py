"""Pushing queued events to helpdesks: signed, retried, in order per ticket.

Each event is POSTed as JSON to its channel's URL with a signature header,
the scheme Stripe and GitHub users know::

    Firstline-Signature: t=1767225600,v1=<hex HMAC-SHA256(secret, "1767225600." + body)>

The timestamp is the attempt's, so a receiver can refuse stale replays; the
body (and its ``id``, the idempotency key) is the same in every attempt.

Outcomes: a 2xx is delivered. A 5xx, 408, 429, a timeout or a refused
connection is retried with exponential backoff (doubling from the channel's
``backoff``, capped at an hour, with jitter) until ``retry_window`` has
passed since the first attempt; then the event is dead. Any other answer
(4xx, a redirect, which is never followed) is dead at once: sending the
same request again will not change it. Dead events wait for
``firstline events retry``.

Nothing here blocks ingestion: events are rows (:mod:`storage.events`),
the loop (a :class:`~ingest.work.runner.Runner`) runs beside the listeners
and the batch, database work happens in threads and HTTP on the event loop,
a few requests at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeVar

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ingest.ops.metrics import WEBHOOK_DELIVERIES
from ingest.work.runner import Runner
from policy.config.model import ChannelConfig, Config
from storage import events
from storage.lease import LeaseLost, retry_delay
from storage.models import EventState, utcnow

log = logging.getLogger("mail.webhooks")

T = TypeVar("T")

SIGNATURE_HEADER = "Firstline-Signature"
_MAX_BACKOFF = 3600.0
_RETRYABLE_4XX = (408, 429)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def body_of(payload: dict[str, object]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def backoff(attempts: int, first: float) -> float:
    """Seconds before the next attempt after ``attempts`` tries, jittered by ±10%."""
    return retry_delay(attempts, first, _MAX_BACKOFF) * random.uniform(0.9, 1.1)


Verdict = Literal["delivered", "retry", "dead"]


@dataclass(frozen=True)
class Attempt:
    """How one POST ended."""

    verdict: Verdict
    status: int | None
    error: str | None = None


def judge(status: int) -> Attempt:
    if 200 <= status < 300:
        return Attempt("delivered", status)
    if status >= 500 or status in _RETRYABLE_4XX:
        return Attempt("retry", status, f"HTTP {status}")
    if 300 <= status < 400:
        return Attempt("dead", status, f"HTTP {status}: redirects are not followed")
    return Attempt("dead", status, f"HTTP {status}")


async def post(
    client: httpx.AsyncClient, channel: ChannelConfig, claim: events.EventClaim
) -> Attempt:
    """One signed POST; the response body is never read."""
    assert channel.url is not None and channel.secret is not None
    body = body_of(claim.payload)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(channel.secret.get_secret_value(), int(time.time()), body),
        "Firstline-Event-Id": claim.event_id,
        "Firstline-Event-Type": claim.type,
    }
    try:
        # httpx's timeout bounds each read and write, so a server trickling its
        # answer a byte at a time would hold the event (and its ticket's later
        # ones) for ever; this bounds the whole exchange.
        async with asyncio.timeout(channel.timeout):
            async with client.stream(
                "POST", channel.url, content=body, headers=headers, timeout=channel.timeout
            ) as response:
                return judge(response.status_code)
    except (httpx.TimeoutException, TimeoutError):
        return Attempt("retry", None, f"no answer within {channel.timeout:g}s")
    except httpx.TransportError as exc:
        return Attempt("retry", None, f"{exc.__class__.__name__}: {exc}"[:500])
    except Exception as exc:  # an unusable URL, say: keep the event, say what happened
        log.exception("event %s: posting failed unexpectedly", claim.event_id)
        return Attempt("retry", None, f"{exc.__class__.__name__}: {exc}"[:500])


class Deliverer(Runner):
    """Claims due events and posts them, a few at a time, until stopped.

    Each event is its own task: a helpdesk that hangs on one request holds
    up that ticket's later events (they must stay in order) and nothing else.
    A pass only starts deliveries; a finished one pokes the loop, since a slot
    is free and the ticket's next event may be due.
    """

    name = "webhooks"

    def __init__(
        self,
        current: Callable[[], Config],
        engine: Engine,
        owner: str,
        *,
        poll: float = 1.0,
        concurrency: int = 8,
    ) -> None:
        super().__init__()
        self.current = current
        self.engine = engine
        self.owner = owner
        self.poll = poll
        self.concurrency = concurrency
        self._client: httpx.AsyncClient | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._next_retry: datetime | None = None

    async def handle_once(self) -> bool:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        await self._start_due(self._client)
        return False

    def handle_error(self, error: Exception) -> None:
        log.error("claiming webhook events failed; trying again shortly", exc_info=error)

    async def handle_stop(self) -> None:
        """Posts in flight are cancelled: their events' leases expire and they go again."""
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def interval(self) -> float:
        """The poll interval, or less when a retry falls due sooner."""
        if self._next_retry is None:
            return self.poll
        until = (self._next_retry - utcnow()).total_seconds()
        return max(0.01, min(self.poll, until))

    async def _start_due(self, client: httpx.AsyncClient) -> None:
        config = self.current()
        channels = {c.name: c for c in config.channels if c.type == "webhook"}
        free = self.concurrency - len(self._in_flight)
        if not channels or free <= 0:
            return
        if self._next_retry is not None and self._next_retry <= utcnow():
            self._next_retry = None
        lease_seconds = max(c.timeout for c in channels.values()) * 2 + 30
        claims = await _finish_in_thread(self._claim, free, lease_seconds)
        for claim in claims:
            task = asyncio.create_task(
                self._deliver(client, channels.get(claim.channel), claim),
                name=f"webhook {claim.event_id}",
            )
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self.poke()

    def _claim(self, limit: int, lease_seconds: float) -> list[events.EventClaim]:
        with Session(self.engine) as session, session.begin():
            return events.claim(session, owner=self.owner, limit=limit, lease_seconds=lease_seconds)

    async def _deliver(
        self, client: httpx.AsyncClient, channel: ChannelConfig | None, claim: events.EventClaim
    ) -> None:
        if channel is None:
            attempt = Attempt("dead", None, f"channel {claim.channel} is no longer a webhook")
        else:
            attempt = await post(client, channel, claim)
        state, retry_at, attempt = _next_state(channel, claim, attempt)
        if retry_at is not None and (self._next_retry is None or retry_at < self._next_retry):
            self._next_retry = retry_at
        try:
            recorded = await _finish_in_thread(self._record, claim, attempt, state, retry_at)
        except Exception:
            log.exception("event %s: recording the outcome failed", claim.event_id)
            return  # the lease runs out and the event is sent again: at least once
        if not recorded:
            log.warning("event %s: lease lost; another worker has it now", claim.event_id)
            return
        WEBHOOK_DELIVERIES.labels(state.value).inc()
        line = "event %s %s to channel %s (attempt %d): %s"
        args = (claim.event_id, claim.type, claim.channel, claim.attempts, state.value)
        if state == EventState.DELIVERED:
            log.info(line, *args)
        else:
            log.warning(line + " — %s", *args, attempt.error)

    def _record(
        self,
        claim: events.EventClaim,
        attempt: Attempt,
        state: EventState,
        retry_at: datetime | None,
    ) -> bool:
        try:
            with Session(self.engine) as session, session.begin():
                if state == EventState.DELIVERED:
                    assert attempt.status is not None
                    events.mark_delivered(session, claim, status=attempt.status)
                elif state == EventState.RETRYING:
                    assert retry_at is not None
                    events.mark_retrying(
                        session,
                        claim,
                        error=attempt.error or "",
                        status=attempt.status,
                        at=retry_at,
                    )
                else:
                    events.mark_dead(
                        session, claim, error=attempt.error or "", status=attempt.status
                    )
        except LeaseLost:
            return False
        return True


async def _finish_in_thread(function: Callable[..., T], *args: object) -> T:
    """``to_thread`` that, when cancelled, still waits for the thread's database work.

    A cancelled ``to_thread`` leaves its thread running; if the engine is
    disposed meanwhile (shutdown), the connection that thread returns is never
    closed. Waiting the few milliseconds the transaction takes avoids that.
    """
    work = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise


def _next_state(
    channel: ChannelConfig | None, claim: events.EventClaim, attempt: Attempt
) -> tuple[EventState, datetime | None, Attempt]:
    """Delivered, retrying (and when), or dead — with the error to record."""
    if attempt.verdict == "delivered":
        return EventState.DELIVERED, None, attempt
    if attempt.verdict == "dead" or channel is None:
        return EventState.DEAD, None, attempt
    retry_at = utcnow() + timedelta(seconds=backoff(claim.attempts, channel.backoff))
    if retry_at > events.deadline(claim.retries_since, channel.retry_window):
        error = (
            f"{attempt.error}; gave up after {claim.attempts} attempts "
            f"(retry window {channel.retry_window:g}s)"
        )
        return EventState.DEAD, None, Attempt("dead", attempt.status, error)
    return EventState.RETRYING, retry_at, attempt
