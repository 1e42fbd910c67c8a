"""The verification pool: where the listener's signature checks run.

:class:`policy.verify.authenticate.Authenticator` decides on what it is handed:
a resolver and an executor. This module makes the production ones: the one
cached resolver and a process pool, so the RSA/ed25519 work and the body scan
use every core and never block the event loop, and a pool broken by a dead
worker is replaced rather than answering 451 for ever.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor

from ingest.smtp.resolver import CachingResolver
from policy.config.model import Config
from policy.verify.authenticate import Authenticator


def process_pool() -> ProcessPoolExecutor:
    """Workers for signature checks.

    forkserver, because forking the server itself would copy locks held by
    its threads; the workers are forked from a server process that has
    already imported this module. Each worker watches the server and exits
    with it: a server killed with SIGKILL would otherwise leave the workers
    (and through them the fork server) blocked on their queue for ever.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(mp_context=context, initializer=_exit_with, initargs=(os.getpid(),))


def _exit_with(server_pid: int) -> None:
    threading.Thread(target=_watch, args=(server_pid,), daemon=True).start()


def _watch(server_pid: int) -> None:
    try:
        # A pidfd becomes readable when the process ends (Linux 5.3+).
        descriptor = os.pidfd_open(server_pid)
        select.select([descriptor], [], [])
    except OSError:
        while _alive(server_pid):
            time.sleep(2)
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def production_verifier(
    config: Config,
    sampling_key: bytes,
    *,
    on_query: Callable[[str], None] | None = None,
    on_cache_hit: Callable[[], None] | None = None,
) -> Authenticator:
    """What ``firstline serve`` runs: the configured resolver and a process pool.

    The workers are started now, in the background, so that the first
    message does not wait for the fork server and its imports. The observers
    go to the resolver (see :class:`~ingest.smtp.resolver.CachingResolver`).
    """
    pool = process_pool()
    for _ in range(os.cpu_count() or 1):
        pool.submit(os.getpid)
    resolver = CachingResolver(
        config.dns.nameservers,
        config.dns.timeout,
        on_query=on_query,
        on_cache_hit=on_cache_hit,
    )
    return Authenticator(
        resolver, config.server.hostname, pool, new_executor=process_pool,
        sampling_key=sampling_key,
    )  # fmt: skip


def configured_verifier(
    config: Config, sampling_key: bytes = b"", executor: Executor | None = None
) -> Authenticator:
    """A verifier on the configured resolver; ``executor`` None is the loop's
    thread pool (what tests and a reload's factory hand in)."""
    return Authenticator(
        CachingResolver.from_config(config.dns), config.server.hostname, executor,
        sampling_key=sampling_key,
    )  # fmt: skip
