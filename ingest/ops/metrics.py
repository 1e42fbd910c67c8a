"""Prometheus metrics and the health check, on their own port (``metrics.listen``).

The metric objects live here, on one registry of our own (not the client's
global one, which would mix in whatever else the process imports), so any
module can ``from ingest.ops.metrics import MESSAGES_REJECTED`` and count. Queue
and outbox depths are read from the database at scrape time, in a thread,
so they are true across processes (``serve`` and separate ``worker``\\s).

``/healthz`` (also ``/health``, its earlier name) answers 200 only when
every configured listener is accepting and the database answers a query;
anything else is 503 with the failing check named, so a load balancer or
systemd watchdog can act on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from storage import events, outbox, status
from storage.models import utcnow
from storage.space import SpaceGuard

log = logging.getLogger("mail.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS = Counter(
    "firstline_connections", "SMTP/LMTP connections accepted", ["proto"], registry=REGISTRY
)
CONNECTIONS_REFUSED = Counter(
    "firstline_connections_refused",
    "connections refused at the door (connection limits)",
    ["proto"],
    registry=REGISTRY,
)
MESSAGES_ACCEPTED = Counter(
    "firstline_messages_accepted",
    "messages answered 250 and stored, by the queue state they entered",
    ["proto", "state"],
    registry=REGISTRY,
)
MESSAGES_REJECTED = Counter(
    "firstline_messages_rejected",
    "refusals written to the rejection log, by stage and reason code",
    ["stage", "reason"],
    registry=REGISTRY,
)
BATCH_DURATION = Histogram(
    "firstline_batch_duration_seconds", "time one batch took", registry=REGISTRY
)
BATCH_SIZE = Histogram(
    "firstline_batch_size",
    "queue entries taken by one batch",
    buckets=(0, 1, 5, 10, 25, 50, 100, 250, 500, 1000),
    registry=REGISTRY,
)
BATCH_OUTCOMES = Counter(
    "firstline_batch_messages",
    "queue entries processed by the batch, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
VERIFICATION_RESULTS = Counter(
    "firstline_verification_results",
    "authentication results at DATA (check: spf, dkim, arc, dmarc; result: pass, fail …)",
    ["check", "result"],
    registry=REGISTRY,
)
OUTBOUND = Counter(
    "firstline_outbound_messages",
    "replies handed to a mailbox's SMTP relay (result: sent, failed, retrying)",
    ["result"],
    registry=REGISTRY,
)
DNS_LOOKUPS = Counter(
    "firstline_dns_lookups", "DNS queries sent, by record type", ["type"], registry=REGISTRY
)
DNS_CACHE_HITS = Counter(
    "firstline_dns_cache_hits", "DNS questions answered from the cache", registry=REGISTRY
)
RELOADS = Counter(
    "firstline_config_reloads",
    "configuration reloads (result: accepted, refused)",
    ["result"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "firstline_webhook_deliveries",
    "webhook POSTs by outcome (delivered, retrying, dead)",
    ["result"],
    registry=REGISTRY,
)
PURGED = Counter(
    "firstline_purged",
    "items removed by retention (kind: raw_messages, rejections, quarantined, webhook_events)",
    ["kind"],
    registry=REGISTRY,
)


def count_verification(details: dict[str, Any]) -> None:
    """Count each check's result from the verdict's details (SPF for MAIL FROM,
    every DKIM signature, the ARC chain, DMARC).

    Read from the structured details rather than re-parsing our own
    Authentication-Results header: that parse cost a third of DATA handling.
    """
    spf = details.get("spf") or []
    if spf:
        VERIFICATION_RESULTS.labels("spf", str(spf[0].get("result"))).inc()
    if "dkim" in details:
        signatures = details.get("dkim") or []
        for signature in signatures:
            VERIFICATION_RESULTS.labels("dkim", str(signature.get("result"))).inc()
        if not signatures:
            VERIFICATION_RESULTS.labels("dkim", "none").inc()
    arc = details.get("arc")
    if isinstance(arc, dict) and arc.get("cv") is not None:
        VERIFICATION_RESULTS.labels("arc", str(arc["cv"])).inc()
    dmarc = details.get("dmarc")
    if isinstance(dmarc, dict) and dmarc.get("result") is not None:
        VERIFICATION_RESULTS.labels("dmarc", str(dmarc["result"])).inc()


def observe_batch(seconds: float, taken: int, outcomes: dict[str, int]) -> None:
    BATCH_DURATION.observe(seconds)
    BATCH_SIZE.observe(taken)
    for outcome, count in outcomes.items():
        if count:
            BATCH_OUTCOMES.labels(outcome).inc(count)


class StoreCollector(Collector):
    """Queue depth, oldest waiting age, outbox and webhook depth, read at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterable[Metric]:
        with Session(self.engine) as session:
            depth = status.queue_depth(session)
            oldest = status.oldest_waiting(session)
            replies_by_state = outbox.depth(session)
            events_by_state = events.depth(session)
        queue = GaugeMetricFamily(
            "firstline_queue_depth", "inbound queue entries by state", labels=["state"]
        )
        for state, count in depth.items():
            queue.add_metric([state], count)
        yield queue
        age = (utcnow() - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "firstline_queue_oldest_age_seconds",
            "age of the oldest entry still queued or leased (0 when none)",
            value=max(age, 0.0),
        )
        replies = GaugeMetricFamily(
            "firstline_outbox_replies", "outbound replies by delivery state", labels=["state"]
        )
        for state, count in replies_by_state.items():
            replies.add_metric([state], count)
        yield replies
        webhook = GaugeMetricFamily(
            "firstline_webhook_events", "webhook events by delivery state", labels=["state"]
        )
        for state, count in events_by_state.items():
            webhook.add_metric([state], count)
        yield webhook


class SpaceCollector(Collector):
    """Free bytes on the storage volume and the threshold under which mail is refused."""

    def __init__(self, guard: SpaceGuard) -> None:
        self.guard = guard

    def collect(self) -> Iterable[Metric]:
        space = self.guard.space()
        if space is None:  # PostgreSQL: the database server's disk is not ours to see
            return
        yield GaugeMetricFamily(
            "firstline_storage_free_bytes",
            "bytes free on the storage volume (SQLite's folder)",
            value=space.free,
        )
        yield GaugeMetricFamily(
            "firstline_storage_min_free_bytes",
            "free bytes under which new mail is refused with 452 4.3.1 (storage.min_free)",
            value=space.min_free,
        )


class _Shared(Collector):
    """Hands the module's registry to a per-server registry, with the counts of
    ``serve``'s other intake processes added (:mod:`ingest.ops.processes`: they
    count in prometheus-client's multiprocess files, in the folder ``others``,
    which keep a process's counts after it ends, so sums never go down)."""

    def __init__(self, others: str | None = None) -> None:
        self.others = MultiProcessCollector(None, others) if others else None  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        ours = list(REGISTRY.collect())
        if self.others is None:
            return ours
        theirs = {m.name: m for m in self.others.collect()}  # type: ignore[no-untyped-call]
        for metric in ours:
            other = theirs.pop(metric.name, None)
            if other is not None:
                _add(metric, other)
        return [*ours, *theirs.values()]


def _add(metric: Metric, other: Metric) -> None:
    """Sum ``other``'s samples into ``metric``'s (same name and labels), keep the rest."""
    index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(metric.samples)}
    for sample in other.samples:
        i = index.get((sample.name, tuple(sorted(sample.labels.items()))))
        if i is None:
            metric.samples.append(sample)
        else:
            metric.samples[i] = metric.samples[i]._replace(
                value=metric.samples[i].value + sample.value
            )


def scrape_registry(
    engine: Engine, space: SpaceGuard | None = None, others: str | None = None
) -> CollectorRegistry:
    """The registry one endpoint serves: the shared counters (``others``: the other
    intake processes' metrics folder) plus this store's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Shared(others))
    registry.register(StoreCollector(engine))
    if space is not None:
        registry.register(SpaceCollector(space))
    return registry


HealthCheck = Callable[[], Awaitable[dict[str, str]]]


def http_app(registry: CollectorRegistry, health: HealthCheck) -> Starlette:
    async def metrics(_request: Request) -> Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(_request: Request) -> Response:
        checks = await health()
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "fail", "checks": checks},
            status_code=200 if healthy else 503,
        )

    # /healthz as on the API port; /health is what earlier releases served here.
    return Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz), Route("/health", healthz)]
    )


class _Server(uvicorn.Server):
    """uvicorn inside our loop: signals stay with the application (SIGHUP, SIGTERM)."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class HttpServer:
    """An ASGI app on ``listen`` in our loop; ``start`` binds at once: bad addresses fail loudly."""

    def __init__(self, listen: str, app: ASGIApp, *, name: str, description: str) -> None:
        self.listen = listen
        self.name = name
        self.description = description
        self._app = app
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.address: tuple[str, int] = parse_listen(listen)

    async def start(self) -> None:
        host, port = parse_listen(self.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.setblocking(False)
        self.address = sock.getsockname()[:2]
        config = uvicorn.Config(
            self._app, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=2,
        )  # fmt: skip
        self._server = _Server(config)
        # The socket is already listening: clients wait in its backlog until
        # uvicorn's loop picks them up, so there is nothing to wait for here.
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=self.name)
        log.info("%s on http://%s:%d/", self.description, *self.address)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = None
        self._task = None


class MetricsServer(HttpServer):
    """``/metrics`` and ``/healthz`` on ``metrics.listen``."""

    def __init__(self, listen: str, registry: CollectorRegistry, health: HealthCheck) -> None:
        super().__init__(
            listen, http_app(registry, health), name="metrics", description="metrics and health"
        )
