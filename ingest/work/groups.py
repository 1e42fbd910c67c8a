"""How a batch cuts its claims into groups, and what it reports.

A group is started, read and filed together (see :mod:`ingest.work.batch`):
big enough that one commit serves many messages, small enough that a worker
dying mid-group charges an attempt to little mail, and never mixing a retried
entry with others, so a message that kills its worker charges its neighbours
once.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from storage.mailqueue import Claim
from storage.models import QueueState

# One commit costs about as much as parsing this much mail; a group larger
# than that saves little and charges more mail when its worker dies.
GROUP_BYTES = 256 * 1024
# And at most this many messages: the next group is parsed while this one is
# filed, so a batch of several groups keeps the pool and the writer busy at once.
GROUP_MESSAGES = 50


@dataclass
class BatchResult:
    taken: int = 0
    tickets: int = 0
    failed: int = 0
    deferred: int = 0
    quarantined: int = 0

    def count(self, outcome: QueueState | None) -> None:
        if outcome == QueueState.DONE:
            self.tickets += 1
        elif outcome == QueueState.FAILED:
            self.failed += 1
        elif outcome == QueueState.QUARANTINED:
            self.quarantined += 1
        elif outcome == QueueState.QUEUED:
            self.deferred += 1

    def add(self, other: BatchResult) -> None:
        self.taken += other.taken
        self.tickets += other.tickets
        self.failed += other.failed
        self.deferred += other.deferred
        self.quarantined += other.quarantined


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def group_size(pending: Sequence[Claim], sizes: dict[int, int], max_attempts: int) -> int:
    """How many of ``pending``, from the front, to start together."""
    if max_attempts < 2 or pending[0].attempts > 0:
        return 1  # a retry, or no second chance to spare: alone
    total = 0
    for n, claim in enumerate(pending):
        total += sizes.get(claim.message_id, 0)
        if claim.attempts > 0 or (n and total > GROUP_BYTES) or n == GROUP_MESSAGES:
            return n
    return len(pending)
