"""What the checks may ask of DNS: the contract of the one resolver.

Policy code never talks to a nameserver: SPF, DKIM, ARC and DMARC are written
against this protocol, and the listener hands them its one shared, cached
resolver (:class:`ingest.smtp.resolver.CachingResolver`). That keeps this
package free of sockets and lets a test hand in any object that answers.

Answers are normalised to plain Python values so that callers never touch
dnspython types:

* ``A``/``AAAA``: the address as text;
* ``MX``: ``(preference, exchange)`` with the exchange without its final dot;
* ``PTR``/``CNAME``: the target without its final dot;
* ``TXT``/``SPF``: the record's character strings as a tuple of bytes, *not*
  joined, because SPF and DKIM both need to see every record separately.

NXDOMAIN and NODATA both give an empty tuple (a "void" lookup in SPF's
terms); a timeout, SERVFAIL or an unreachable server raises
:class:`policy.errors.DnsTempError`, because guessing from a failed lookup
would reject or accept mail the domain owner never decided about.
"""

from __future__ import annotations

from typing import Protocol

Value = str | tuple[int, str] | tuple[bytes, ...]
Answer = tuple[Value, ...]

SUPPORTED_TYPES = frozenset({"A", "AAAA", "MX", "PTR", "CNAME", "TXT", "SPF"})


class Resolver(Protocol):
    """Cached lookups, answered as plain values (see the module docstring)."""

    #: Seconds a query may take before it raises :class:`~policy.errors.DnsTempError`.
    timeout: float

    async def resolve(self, name: str, rdtype: str) -> Answer:
        """The answer for ``name``/``rdtype`` (one of :data:`SUPPORTED_TYPES`)."""
        ...

    def cached(self, name: str, rdtype: str) -> tuple[float, Answer] | None:
        """A fresh ``(expiry on the monotonic clock, answer)``, or None; never queries,
        so a worker thread may call it."""
        ...

    async def txt(self, name: str) -> list[bytes]:
        """Every TXT record at ``name``, each with its strings joined."""
        ...
