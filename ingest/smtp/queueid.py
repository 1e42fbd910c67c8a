"""Our queue ID, the one in ``250 2.0.0 Ok: queued as 063B14587ED5`` and in our
``Received`` header: 12 hex digits, as operators paste them into every command."""

from __future__ import annotations

import itertools
import random


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


_ids = itertools.count(random.getrandbits(48))
