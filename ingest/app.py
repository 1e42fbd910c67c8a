"""``firstline serve``: listeners, the intake writer and the batch worker in one loop.

The wire-to-ticket path reads top to bottom here: listeners hand accepted mail
to the group-commit writer, and the worker turns the queue into tickets every
``batch.interval`` seconds. ``firstline worker`` runs the same worker alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable

from sqlalchemy import Engine

from ingest.batch import Batch, BatchResult
from ingest.listener import ConfigHolder, IngestHandler
from ingest.rejections import RejectionLog
from ingest.smtpd import Gate, protocol_factory, start_listener
from ingest.tickets import file_message
from policy.config import Config, Listen
from policy.verdict import Verifier
from storage.engine import make_engine
from storage.intake import GroupCommitWriter
from storage.schema import prepare

log = logging.getLogger("mail.app")

VerifierFactory = Callable[[Config], Verifier | None]


class Worker:
    """Runs a batch every ``batch.interval`` seconds, or at once when poked."""

    def __init__(self, holder: ConfigHolder, engine: Engine) -> None:
        self.holder = holder
        self.batch = Batch(engine, file_message)
        self._poke = asyncio.Event()
        self.last: BatchResult | None = None

    def poke(self) -> None:
        self._poke.set()

    async def run(self) -> None:
        while True:
            config = self.holder.current
            try:
                self.last = await self.batch.run(config)
                if self.last.taken:
                    log.info(
                        "batch: taken=%d tickets=%d failed=%d deferred=%d quarantined=%d",
                        self.last.taken, self.last.tickets, self.last.failed,
                        self.last.deferred, self.last.quarantined,
                    )  # fmt: skip
                if self.last.taken >= config.batch.size:
                    continue  # more is waiting
            except Exception:
                log.exception("batch failed; retrying after the interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=config.batch.interval)
            self._poke.clear()


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if config.server.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.server.tls.cert_file, config.server.tls.key_file)
    return context


class App:
    def __init__(
        self,
        config: Config,
        *,
        listeners: bool = True,
        worker: bool = True,
        verifier_factory: VerifierFactory | None = None,
    ) -> None:
        self.holder = ConfigHolder(config)
        self.run_listeners = listeners
        self.run_worker = worker
        self.verifier_factory = verifier_factory
        self.engine = make_engine(config.storage.url)
        self.writer = GroupCommitWriter(self.engine)
        self.gate = Gate(config.server.max_connections, config.server.max_connections_per_ip)
        self.servers: dict[str, asyncio.Server] = {}
        self.worker = Worker(self.holder, self.engine)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await asyncio.to_thread(prepare, self.engine)
        self.writer.start()
        if self.run_listeners:
            await self._start_listeners()
        if self.run_worker:
            self._tasks.append(asyncio.create_task(self.worker.run(), name="worker"))

    async def _start_listeners(self) -> None:
        config = self.holder.current
        verifier = self.verifier_factory(config) if self.verifier_factory else None
        rejections = RejectionLog(self.writer)
        listeners: list[tuple[str, Listen | None]] = [
            ("SMTP", config.server.smtp),
            ("LMTP", config.server.lmtp),
        ]
        for proto, listen in listeners:
            if listen is None:
                continue
            handler = IngestHandler(
                self.holder, self.writer, rejections, proto=proto, verifier=verifier
            )
            tls = _tls_context(config) if proto == "SMTP" else None
            factory = protocol_factory(
                proto,
                handler,
                hostname=config.server.hostname,
                max_size=config.server.max_message_size,
                timeout=config.server.timeout,
                gate=self.gate,
                on_refusal=lambda ip, reply: log.warning("connect from [%s]: %s", ip, reply),
                tls_context=tls,
            )
            self.servers[proto] = await start_listener(listen, factory)
            log.info("%s listening on %s", proto, listen.listen)

    def address(self, proto: str) -> tuple[str, int]:
        """The bound TCP address (tests bind port 0)."""
        sockname = self.servers[proto].sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def stop(self, grace: float = 10) -> None:
        """Stop accepting, give open sessions ``grace`` seconds, then commit and close."""
        for server in self.servers.values():
            server.close()
        await self.gate.drain(grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.writer.close()
        self.engine.dispose()

    async def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT; finish in-flight commits on the way out."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
        except BaseException:
            self.engine.dispose()  # e.g. a schema this code refuses: close cleanly
            raise
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.stop()
