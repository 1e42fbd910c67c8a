"""One of ``serve``'s other intake processes (``server.processes``, :mod:`ingest.ops.processes`).

Started by the first process with the configuration file, one end of a socket
pair and the TCP addresses the first process is bound to; it runs the
listeners and a group-commit writer of its own, nothing else. It says
``ready`` once it listens, and reloads when asked, answering with its outcome.
SIGTERM, SIGINT or the end of the socket pair (the first process is gone,
even by SIGKILL) make it drain as ``serve`` does: stop accepting, let open
sessions finish, commit, exit. SIGHUP is ignored: reloads come through the
first process, so that each is applied everywhere and reported once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
from dataclasses import asdict

from ingest.ops.app import App
from ingest.ops.logs import setup_logging
from ingest.ops.processes import METRICS_ENV, Addresses
from ingest.ops.reload import Reloader
from ingest.ops.running import run, serve_verifier
from policy.config.loading import ConfigError, load_config
from policy.config.model import Config, Listen

log = logging.getLogger("mail.app")


def main() -> None:
    source, descriptor, digest, addresses = sys.argv[1:5]
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        config = load_config(source)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"firstline intake process: {problem}", file=sys.stderr)
        sys.exit(2)
    setup_logging(config.logging.format, config.logging.level)
    if config.digest != digest:
        log.warning(
            "intake process %d: %s has changed since the first process read it; this one "
            "runs it as it is now (`firstline reload` puts it in force everywhere)",
            os.getpid(), source,
        )  # fmt: skip
    channel = socket.socket(fileno=int(descriptor))
    run(_serve(config, channel, json.loads(addresses)), config.server.event_loop)


def shared(config: Config, addresses: Addresses) -> Config:
    """``config`` with the first process's TCP listeners (its ports, also where the
    file says 0) and without the unix sockets, which only the first one serves."""
    listeners = {proto.lower(): Listen(listen=a) if a else None for proto, a in addresses.items()}
    return config.model_copy(update={"server": config.server.model_copy(update=listeners)})


async def _serve(config: Config, channel: socket.socket, addresses: Addresses) -> None:
    app = App(
        shared(config, addresses), worker=False, verifier_factory=serve_verifier,
        processes=config.server.processes, intake_only=True,
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
    except BaseException:
        app.engine.dispose()
        raise
    reader, writer = await asyncio.open_unix_connection(sock=channel)
    current = dict(addresses)  # replaced by each reload's
    reloader = Reloader(
        lambda: app.holder.current, lambda new: app.apply(shared(new, current)), count=False
    )
    commands = asyncio.create_task(_commands(reader, writer, reloader, current, stop))
    writer.write(b'{"op": "ready"}\n')
    try:
        await stop.wait()
    finally:
        log.info("intake process %d: shutting down", os.getpid())
        orphaned = commands.done()  # it ends by itself only when the first process is gone
        commands.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await commands
        await app.stop()
        writer.close()
        folder = os.environ.get(METRICS_ENV)
        if orphaned and folder:  # nobody reads our counts any more, nor removes their folder
            shutil.rmtree(folder, ignore_errors=True)


async def _commands(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    reloader: Reloader,
    current: Addresses,
    stop: asyncio.Event,
) -> None:
    try:
        while line := await reader.readline():
            message = json.loads(line)
            if message["op"] == "reload":
                current.clear()
                current.update(message["addresses"])
                result = await reloader.reload()
                reply = {"op": "reloaded", "result": asdict(result)}
                writer.write(json.dumps(reply).encode() + b"\n")
    except ConnectionError:
        pass  # it died before we could say a word: our "ready" reset the connection
    finally:  # however this ends, never live on without the first process
        stop.set()
    log.warning("intake process %d: the first process is gone; draining", os.getpid())
