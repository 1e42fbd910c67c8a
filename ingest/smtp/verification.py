"""The verification pool: where the listener's signature checks run.

:class:`policy.verify.authenticate.Authenticator` decides on what it is handed:
a resolver and an executor. This module makes the production ones: the one
cached resolver and a process pool, so the RSA/ed25519 work and the body scan
of a large message use every core and never block the event loop (a small one
is analysed on the loop: see ``inline`` in
:class:`~policy.verify.authenticate.Authenticator`), and a pool broken by a
dead worker is replaced rather than answering 451 for ever.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor

from ingest.ops.pools import forkserver_pool
from ingest.smtp.resolver import CachingResolver
from policy.config.model import Config
from policy.verify.authenticate import Authenticator


def process_pool() -> ProcessPoolExecutor:
    """Workers for signature checks (:func:`ingest.ops.pools.forkserver_pool`),
    their fork server having imported this module and so the checks."""
    return forkserver_pool(__name__)


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
        sampling_key=sampling_key, inline=True,
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
