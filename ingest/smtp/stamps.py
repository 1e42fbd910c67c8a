"""What intake stamps on a message it accepts: our queue ID (in ``250 2.0.0 Ok:
queued as 063B14587ED5`` and our ``Received`` header, 12 hex digits, as
operators paste them into every command) and the ``Received`` header's date."""

from __future__ import annotations

import functools
import itertools
import os
import random
from datetime import UTC, datetime
from email.utils import format_datetime


def new_trace_id() -> str:
    """A Postfix-like queue id: unique enough to find a message, not a secret.

    Each process counts up from a random start, so the ``trace_id`` index takes
    each id beside the last, in a cached page (a random id cost a leaf read and
    write per message on a store of millions). No id repeats within a process;
    two repeat one only if their runs overlap (about 2n / 2^48 for n messages
    each). The count between two ids tells how much mail came in between:
    nothing is protected by this id.
    """
    return f"{next(_ids) & 0xFFFFFFFFFFFF:012X}"


def _start() -> None:
    """A fresh random start: at import, and in a forked child, which would
    otherwise count the same ids as its parent (replicas are exec'd today)."""
    global _ids
    _ids = itertools.count(random.getrandbits(48))


_ids: itertools.count[int]
_start()
os.register_at_fork(after_in_child=_start)


@functools.lru_cache(maxsize=1)
def received_date(second: int) -> str:
    """The ``Received`` header's date (RFC 5322, to the second): formatted once a
    second rather than once a message, which showed in profiles."""
    return format_datetime(datetime.fromtimestamp(second, UTC))
