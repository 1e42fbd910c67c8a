"""Process pools that live and die with the server.

Pure CPU work (signature checks at DATA, the batch's scan and parse) runs in
worker processes so it uses every core and never blocks an event loop; this
module makes those pools so that no worker outlives the server that made it.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import ProcessPoolExecutor


def forkserver_pool(preload: str) -> ProcessPoolExecutor:
    """Worker processes for CPU work: the listener's signature checks
    (:mod:`ingest.smtp.verification`) and the batch's parsing (:mod:`ingest.work.reading`).

    forkserver, because forking the server itself would copy locks held by
    its threads; the workers are forked from a server process that has
    already imported ``preload`` (the module whose functions the
    workers run). Each worker watches the server and exits
    with it: a server killed with SIGKILL would otherwise leave the workers
    (and through them the fork server) blocked on their queue for ever.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload])
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
