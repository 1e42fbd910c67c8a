"""``firstline serve``: listeners, the intake writer and the batch worker in one loop.

The wire-to-ticket path reads top to bottom here: listeners hand accepted mail
to the group-commit writer, and the worker turns the queue into tickets every
``batch.interval`` seconds. ``firstline worker`` runs the same worker alone.
With ``server.processes`` above one, other intake processes share the
listeners' ports (:mod:`ingest.ops.processes`); this one runs everything else.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import Executor

from aiosmtpd.smtp import SMTP
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from ingest.channels.emit import on_intake
from ingest.channels.webhooks import Deliverer
from ingest.ops.metrics import (
    CONNECTIONS,
    CONNECTIONS_REFUSED,
    HttpServer,
    MetricsServer,
    scrape_registry,
)
from ingest.ops.processes import Addresses, IntakeProcesses
from ingest.ops.reload import Reloader
from ingest.ops.shutdown import cancel_all, finished_within
from ingest.outbound.replies import Outbox
from ingest.smtp.listener import ConfigHolder, IngestHandler
from ingest.smtp.protocol import Gate, protocol_factory, start_listener
from ingest.smtp.refusals import RejectionLog
from ingest.smtp.resolver import CachingResolver
from ingest.work.runner import Runner
from ingest.work.worker import Worker
from policy.config.loading import ConfigProblem
from policy.config.model import Config, Listen
from policy.verify.verdict import Verifier
from storage.engine import make_engine
from storage.intake import GroupCommitWriter
from storage.keys import DMARC_SAMPLING, instance_key
from storage.schema import prepare
from storage.space import SpaceGuard

log = logging.getLogger("mail.app")

PROTOCOLS = ("SMTP", "LMTP")

# Builds the verifier from the configuration and the store's DMARC sampling key.
VerifierFactory = Callable[[Config, bytes], Verifier | None]


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if config.server.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.server.tls.cert_file, config.server.tls.key_file)
    return context


def _listen(config: Config, proto: str) -> Listen | None:
    return config.server.smtp if proto == "SMTP" else config.server.lmtp


class _Unbindable(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


class App:
    def __init__(
        self,
        config: Config,
        *,
        listeners: bool = True,
        worker: bool = True,
        verifier_factory: VerifierFactory | None = None,
        batch_pool: Callable[[], Executor] | None = None,
        processes: int = 1,
        intake_only: bool = False,
    ) -> None:
        """``batch_pool`` makes the executor the batch parses in (a process pool in
        production, :func:`ingest.work.reading.reading_pool`; threads without).
        ``processes``: intake processes sharing the listeners' ports (``serve``'s
        ``server.processes``, :mod:`ingest.ops.processes`); ``intake_only``: this is one
        of the others, with listeners and writer only."""
        self.holder = ConfigHolder(config)
        self.processes = processes
        self.intake_only = intake_only
        self.replicas = (
            IntakeProcesses(config.source, processes - 1, config.digest)
            if processes > 1 and listeners and not intake_only
            else None
        )
        self.run_listeners = listeners
        self.run_worker = worker
        self.verifier_factory = verifier_factory
        self.engine = make_engine(config.storage.url)
        self.writer = GroupCommitWriter(
            self.engine,
            on_write=on_intake(lambda: self.holder.current),
            commit_timeout=config.storage.commit_timeout,
        )
        self.gate = Gate(0, 0)
        self.gate.configure(config.server, processes)
        self.space = SpaceGuard(lambda: self.holder.current)
        self.servers: dict[str, asyncio.Server] = {}
        self.worker = Worker(lambda: self.holder.current, self.engine, batch_pool)
        owner = self.worker.batch.owner
        self.outbox = Outbox(lambda: self.holder.current, self.engine, owner)
        self.deliverer = Deliverer(lambda: self.holder.current, self.engine, owner)
        self._runners: list[Runner] = []
        self.api: HttpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._retiring: set[asyncio.Task[None]] = set()  # verifiers being closed
        self.resolver = CachingResolver.from_config(config.dns)
        self.verifier: Verifier | None = None
        self.handlers: dict[str, IngestHandler] = {}
        self._tls: ssl.SSLContext | None = None
        self._sampling_key = b""
        self.metrics: HttpServer | None = None
        # With other intake processes, a reload counts once all have answered.
        self.reloader = Reloader(
            lambda: self.holder.current, self.apply, count=self.replicas is None
        )

    async def start(self) -> None:
        await asyncio.to_thread(prepare, self.engine)
        self.writer.start()
        if self.run_listeners:
            await self._start_listeners()
        if not self.intake_only:
            await self._start_services()
        if self.replicas is not None:  # last: the rest starts as it does with one process
            try:
                await self.replicas.start(self.shared_addresses())
            except BaseException:
                await self.stop(0)
                raise

    async def _start_services(self) -> None:
        """What runs once, in the first process: the worker, the outbox, webhooks, HTTP."""
        if self.run_worker:
            self._runners += [self.worker, self.outbox]
        # Webhook delivery runs wherever firstline runs: it only touches event rows.
        self._runners.append(self.deliverer)
        self._tasks += [runner.start() for runner in self._runners]
        listen = self.holder.current.metrics.listen
        if listen:
            self.metrics = await self._start_metrics(listen)
        api = self.holder.current.api.listen
        if api and self.run_listeners:  # `serve`, not `worker`: one API per host
            self.api = await self._start_api(api)

    async def _start_listeners(self) -> None:
        config = self.holder.current
        if self.verifier_factory is not None:
            self._sampling_key = await asyncio.to_thread(instance_key, self.engine, DMARC_SAMPLING)
            self.verifier = self.verifier_factory(config, self._sampling_key)
        self._tls = _tls_context(config)
        rejections = RejectionLog(self.writer)
        for proto in PROTOCOLS:
            self.handlers[proto] = IngestHandler(
                self.holder, self.writer, rejections, proto=proto,
                verifier=self.verifier, resolver=self.resolver, space=self.space,
            )  # fmt: skip
            listen = _listen(config, proto)
            if listen is not None:
                self.servers[proto] = await self._bind(proto, listen)

    async def _bind(self, proto: str, listen: Listen) -> asyncio.Server:
        factory = functools.partial(self._protocol, proto)
        server = await start_listener(listen, factory, reuse_port=self.processes > 1)
        log.info("%s listening on %s", proto, listen.listen)
        return server

    def _protocol(self, proto: str) -> SMTP:
        """One connection's protocol, built with the settings in force when it connects."""
        config = self.holder.current
        CONNECTIONS.labels(proto).inc()
        return protocol_factory(
            proto,
            self.handlers[proto],
            hostname=config.server.hostname,
            max_size=config.server.max_message_size,
            timeout=config.server.timeout,
            gate=self.gate,
            on_refusal=functools.partial(self._refused, proto),
            is_trusted=functools.partial(self._trusted, proto),
            lifetime=config.server.max_session_seconds,
            max_commands=config.server.max_session_commands,
            tls_context=self._tls if proto == "SMTP" else None,
        )()

    def _trusted(self, proto: str, ip: str) -> bool:
        """LMTP and our own MTAs draw on their own connection budget."""
        if proto == "LMTP" or ip == "unix":
            return True
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in self.holder.current.policy.trusted_networks)

    @staticmethod
    def _refused(proto: str, ip: str, reply: str) -> None:
        CONNECTIONS_REFUSED.labels(proto).inc()
        log.warning("connect from [%s]: %s", ip, reply)

    async def _start_api(self, listen: str) -> HttpServer:
        # /metrics answers only while metrics.listen is set (read per request), so a
        # reload that switches metrics on needs no new API server.
        # Imported here: the API and console are most of the import time, which
        # the other intake processes (and a serve without api.listen) never need.
        from ingest.channels.api.routes import create_app

        registry = self._registry()
        asgi = create_app(
            lambda: self.holder.current, self.engine, health=self.health, registry=registry
        )
        server = HttpServer(listen, asgi, name="api", description="HTTP API")
        await server.start()
        return server

    async def _start_metrics(self, listen: str) -> MetricsServer:
        server = MetricsServer(listen, self._registry(), self.health)
        await server.start()
        return server

    def _registry(self) -> CollectorRegistry:
        others = self.replicas.metrics_dir if self.replicas is not None else None
        return scrape_registry(self.engine, self.space, others)

    async def apply(self, new: Config) -> list[ConfigProblem]:
        """Put ``new`` in force, or change nothing and say why (see ``ingest/ops/reload.py``)."""
        old = self.holder.current
        tls = self._tls
        if self.run_listeners and new.server.tls is not None:
            try:  # read again even if unchanged: a reload is how renewed certificates load
                tls = await asyncio.to_thread(_tls_context, new)
            except (OSError, ssl.SSLError) as exc:
                return [ConfigProblem(new.source, None, "server.tls", f"cannot load: {exc}")]
        started: list[HttpServer] = []  # bound for ``new``; stopped again if it is refused
        metrics, api = self.metrics, self.api
        try:
            if not self.intake_only and new.metrics.listen != old.metrics.listen:
                metrics = await self._bind_http(new.metrics.listen, "metrics.listen", started)
            if self.run_listeners and not self.intake_only and new.api.listen != old.api.listen:
                api = await self._bind_http(new.api.listen, "api.listen", started)
        except _Unbindable as exc:
            for http in started:
                await http.stop()
            return [ConfigProblem(new.source, None, exc.path, exc.reason)]
        rebound, problem = await self._rebind(old, new)
        if problem is not None:
            for http in started:
                await http.stop()
            return [problem]
        # From here on nothing can fail: the new configuration is in force.
        self.holder.current = new
        self._tls = tls
        self.gate.configure(new.server, self.processes)
        if new.dns != old.dns:
            self.resolver = CachingResolver.from_config(new.dns)
        if (
            self.run_listeners
            and self.verifier_factory is not None
            and (new.dns != old.dns or new.server.hostname != old.server.hostname)
        ):
            retired, self.verifier = self.verifier, self.verifier_factory(new, self._sampling_key)
            if retired is not None:  # its worker processes would otherwise live on
                self._retiring.add(asyncio.create_task(asyncio.to_thread(retired.close)))
        for handler in self.handlers.values():
            handler.resolver = self.resolver
            handler.verifier = self.verifier
        for proto, server in rebound.items():
            previous = self.servers.pop(proto, None)
            if previous is not None:
                previous.close()  # open sessions carry on; only new ones go to the new address
            if server is not None:
                self.servers[proto] = server
        for old_server, attribute, new_server in (
            (self.metrics, "metrics", metrics), (self.api, "api", api),
        ):  # fmt: skip
            if new_server is not old_server:
                setattr(self, attribute, new_server)
                if old_server is not None:  # requests in flight finish (uvicorn's graceful stop)
                    await old_server.stop()
        return []

    async def _bind_http(
        self, listen: str | None, path: str, started: list[HttpServer]
    ) -> HttpServer | None:
        """The metrics or API server for a changed address (None: switched off)."""
        if not listen:
            return None
        try:
            http = (
                await self._start_metrics(listen)
                if path == "metrics.listen"
                else await self._start_api(listen)
            )
        except OSError as exc:
            raise _Unbindable(path, f"cannot bind {listen}: {exc.strerror}") from None
        started.append(http)
        return http

    async def _rebind(
        self, old: Config, new: Config
    ) -> tuple[dict[str, asyncio.Server | None], ConfigProblem | None]:
        """Bind the listeners whose address changed (None: that listener is switched off)."""
        rebound: dict[str, asyncio.Server | None] = {}
        if not self.run_listeners:
            return rebound, None
        for proto in PROTOCOLS:
            before, after = _listen(old, proto), _listen(new, proto)
            if after == before:
                continue
            if after is None:
                rebound[proto] = None
                continue
            try:
                rebound[proto] = await self._bind(proto, after)
            except OSError as exc:
                for server in rebound.values():
                    if server is not None:
                        server.close()
                path = f"server.{proto.lower()}.listen"
                return {}, ConfigProblem(
                    new.source, None, path, f"cannot bind {after.listen}: {exc.strerror}"
                )
        return rebound, None

    async def health(self) -> dict[str, str]:
        """Each check's state ("ok" or what is wrong): the listeners, the store, the worker."""
        checks: dict[str, str] = {}
        config = self.holder.current
        for proto in PROTOCOLS:
            if self.run_listeners and _listen(config, proto) is not None:
                server = self.servers.get(proto)
                serving = server is not None and server.is_serving()
                checks[proto.lower()] = "ok" if serving else "not listening"
        for task in self._tasks:
            checks[task.get_name()] = "stopped" if task.done() else "ok"
        if self.replicas is not None:
            checks["intake_processes"] = self.replicas.health()
        try:
            await asyncio.wait_for(asyncio.to_thread(self._ping), timeout=5)
            checks["storage"] = "ok"
        except Exception as exc:  # the name of the error only: messages may hold the URL
            checks["storage"] = f"failing: {exc.__class__.__name__}"
        space = self.space.space()
        if space is not None:
            checks["disk"] = (
                f"low: {space.free} bytes free, mail refused under {space.min_free}"
                if space.low
                else "ok"
            )
        return checks

    def _ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def shared_addresses(self) -> Addresses:
        """The TCP addresses the other intake processes bind (the ports we are bound to)."""
        addresses: Addresses = {}
        for proto in PROTOCOLS:
            listen = _listen(self.holder.current, proto)
            if listen is None or listen.is_unix or proto not in self.servers:
                addresses[proto] = None  # a unix socket stays ours alone
                continue
            host, port = listen.host_port[0], self.address(proto)[1]
            addresses[proto] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return addresses

    def address(self, proto: str) -> tuple[str, int]:
        """The bound TCP address (tests bind port 0)."""
        sockname = self.servers[proto].sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def stop(self, grace: float = 10) -> None:
        """Stop accepting, give open sessions ``grace`` seconds, then commit and close.

        Every step is bounded, so a stop always ends: a loop that will not end,
        a commit or a verifier's workers that will not finish are reported and
        left behind (what they held is leased, and leases expire).
        """
        if self.replicas is not None:
            self.replicas.terminate()  # they drain beside us
        for server in self.servers.values():
            server.close()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.api is not None:
            await self.api.stop()
        await self.gate.drain(grace)
        # The runners first (each stops its loop and lets go of what it holds, and
        # says what it left or how it failed), then any other task still running.
        await asyncio.gather(*(runner.stop(grace) for runner in self._runners))
        await cancel_all([task for task in self._tasks if not task.done()], grace)
        commit_timeout = self.holder.current.storage.commit_timeout
        if not await finished_within(self.writer.close(), commit_timeout):
            log.error("intake writer: pending commits did not finish; stopping without them")
        if self.replicas is not None:
            await self.replicas.stop(grace + commit_timeout)
        self.worker.batch.close()
        if self.verifier is not None:
            self._retiring.add(asyncio.create_task(asyncio.to_thread(self.verifier.close)))
        if self._retiring and not await finished_within(asyncio.gather(*self._retiring), grace):
            log.error("verifier workers did not stop within %gs; leaving them", grace)
        # A cancelled to_thread leaves its thread running; one still in a
        # transaction would return its connection to a disposed pool, which
        # never closes it. Wait for those threads first.
        if not await finished_within(asyncio.get_running_loop().shutdown_default_executor(), grace):
            log.error("threads still busy after %gs; closing the store under them", grace)
        self.engine.dispose()

    def describe(self) -> str:
        """What ``systemctl status`` shows on its Status: line."""
        config = self.holder.current
        listening = [
            f"{proto} on {listen.listen}"
            for proto in PROTOCOLS
            if proto in self.servers and (listen := _listen(config, proto)) is not None
        ]
        processes = f" ({self.processes} intake processes)" if self.replicas is not None else ""
        return ", ".join(listening) + processes if listening else "batch worker"
