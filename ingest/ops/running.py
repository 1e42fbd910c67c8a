"""``serve`` and ``worker`` as services: signals, the pid and reload files, systemd.

SIGTERM or SIGINT stop the process (:meth:`App.stop`: open sessions finish,
in-flight commits land); SIGHUP reloads the configuration and publishes the
outcome for ``firstline reload`` (:mod:`ingest.ops.reload`). With other intake
processes (:mod:`ingest.ops.processes`) the outcome is theirs too. They import
this, not the ``firstline`` command, whose every subcommand they do not need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ingest.ops import sdnotify
from ingest.ops.app import App
from ingest.ops.metrics import DNS_CACHE_HITS, DNS_LOOKUPS, RELOADS
from ingest.ops.reload import ControlFiles
from ingest.smtp.verification import production_verifier
from policy.config.model import Config
from policy.verify.authenticate import Authenticator

log = logging.getLogger("mail.app")
T = TypeVar("T")


def serve_verifier(config: Config, sampling_key: bytes) -> Authenticator | None:
    """The production verifier, with its DNS traffic counted in the metrics."""
    if not config.policy.verify_senders:
        return None
    return production_verifier(
        config,
        sampling_key,
        on_query=lambda rdtype: DNS_LOOKUPS.labels(rdtype).inc(),
        on_cache_hit=DNS_CACHE_HITS.inc,
    )


def run(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """Run ``main`` on the event loop ``server.event_loop`` names (``auto``: uvloop
    when it is installed, else asyncio's)."""
    with asyncio.Runner(loop_factory=_loop_factory(event_loop)) as runner:
        return runner.run(main)


def _loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if event_loop == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


async def serve_forever(app: App) -> None:
    """Run until SIGTERM or SIGINT, reloading on SIGHUP; finish in-flight commits at exit."""
    stop = asyncio.Event()
    reload = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    try:
        await app.start()
    except BaseException:
        app.engine.dispose()  # e.g. a schema this code refuses: close cleanly
        raise
    run_dir = app.holder.current.server.run_dir
    role = "serve" if app.run_listeners else "worker"
    control = ControlFiles(run_dir, role) if run_dir is not None else None
    if control is not None and not control.claim():
        control = None
    reloads = asyncio.create_task(_reload_when(app, reload, control), name="reload")
    sdnotify.ready(f"{role}: {app.describe()}")  # every intake process listens by now
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        sdnotify.stopping()
        reloads.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloads
        if control is not None:
            control.release()
        await app.stop()


async def _reload_when(app: App, requested: asyncio.Event, control: ControlFiles | None) -> None:
    while True:
        await requested.wait()
        requested.clear()
        sdnotify.reloading()
        result = await app.reloader.reload()
        applied = result.accepted
        if app.replicas is not None:
            result = await app.replicas.reload(result, app.shared_addresses())
            RELOADS.labels("accepted" if result.accepted else "refused").inc()
        # Ready either way: a refused reload leaves the running configuration in force.
        if result.accepted:
            verdict = "reload accepted"
        elif applied:  # by this process, not by one of the others
            verdict = "reload not applied by every intake process"
        else:
            verdict = "reload refused, configuration kept"
        sdnotify.ready(f"{verdict}; {app.describe()}")
        if control is not None:
            control.publish(result)
