"""The batch's CPU work on one message, fit for a process pool: scan, then parse.

Both are pure functions of the raw bytes (:mod:`policy.antivirus`,
:mod:`policy.message.mime`), so the batch hands a group of messages to a pool
of processes and uses every core, while its one writer files the results.
What crosses to a worker is the raw message, what comes back its scan and
parse (a few KiB): the message is read once, in the worker.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from ingest.ops.pools import forkserver_pool
from policy.antivirus import ScanResult, scan_tree
from policy.config.model import LimitsConfig
from policy.message import mimetree
from policy.message.mime import parse_tree
from policy.message.parsed import ParsedMessage

Reading = tuple[ScanResult, ParsedMessage]


def examine(raw: bytes, mail_from: str | None, limits: LimitsConfig) -> Reading:
    """The built-in scan and the parse; the parse is kept even for a finding, which
    an operator may overrule (releasing the message files it). Both walk one
    reading of the message (:mod:`policy.message.mimetree`): the parts scanned
    are the parts stored."""
    tree = mimetree.read(raw)
    return scan_tree(tree), parse_tree(tree, mail_from=mail_from, limits=limits)


def examine_all(
    messages: list[tuple[bytes, str | None]], limits: LimitsConfig
) -> list[Reading | Exception]:
    """:func:`examine` for several messages in one call: a group crosses to the
    pool in a few chunks rather than a message at a time. Each message's
    exception is its own, returned in its place."""
    readings: list[Reading | Exception] = []
    for raw, mail_from in messages:
        try:
            readings.append(examine(raw, mail_from, limits))
        except Exception as exc:
            readings.append(exc)
    return readings


def chunks(count: int) -> int:
    """Into how many calls to cut a group of ``count``: twice the pool's
    processes, so that one slow message leaves the other cores work."""
    return max(1, min(count, 2 * (os.cpu_count() or 1)))


def reading_pool() -> ProcessPoolExecutor:
    """Processes for :func:`examine`, one per core (see
    :func:`~ingest.ops.pools.forkserver_pool`), started now in the background so
    that a backlog does not wait for the fork server and its imports."""
    pool = forkserver_pool(__name__)
    for _ in range(os.cpu_count() or 1):
        pool.submit(os.getpid)
    return pool
