"""The one DNS resolver of firstline: asynchronous, cached, shared.

It implements :class:`policy.verify.dns.Resolver`, the contract every check
(SPF, DKIM, ARC, DMARC) is written against; this is the only object that
talks to nameservers, so there is one place that knows about nameservers,
timeouts and the cache, and one place a test points at its loopback DNS
server. The cache honours TTLs and is shared by all sessions: a burst of mail
from one domain costs one lookup, and concurrent identical questions share
one query in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from policy.config.model import DnsConfig
from policy.errors import DnsTempError
from policy.verify.dns import SUPPORTED_TYPES, Answer, Value


def parse_nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
        return dns.nameserver.Do53Nameserver(host, port)
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        return dns.nameserver.Do53Nameserver(host, int(port_text))
    return dns.nameserver.Do53Nameserver(text, 53)


def _normalise(rdtype: str, rdata: object) -> Value:
    if rdtype in ("A", "AAAA"):
        return str(rdata.address)  # type: ignore[attr-defined]
    if rdtype == "MX":
        return (int(rdata.preference), rdata.exchange.to_text(True))  # type: ignore[attr-defined]
    if rdtype in ("PTR", "CNAME"):
        return str(rdata.target.to_text(True))  # type: ignore[attr-defined]
    return tuple(bytes(s) for s in rdata.strings)  # type: ignore[attr-defined]


class CachingResolver:
    """Cached asynchronous DNS lookups; see the module docstring for the contract.

    ``negative_ttl`` is how long an empty answer is remembered (our test
    server and many real ones send no SOA to take it from); ``max_ttl`` caps
    what a hostile zone can pin in our memory, and ``max_entries`` bounds the
    cache (least recently used entries go first). ``on_query(rdtype)`` and
    ``on_cache_hit()`` are told about every query sent and every question the
    cache answered (for metrics).
    """

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        timeout: float = 5.0,
        *,
        negative_ttl: float = 60.0,
        max_ttl: float = 3600.0,
        max_entries: int = 20_000,
        on_query: Callable[[str], None] | None = None,
        on_cache_hit: Callable[[], None] | None = None,
    ) -> None:
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [parse_nameserver(n) for n in nameservers]
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        # The cache below is ours; dnspython's own would ignore negative_ttl.
        self._resolver.cache = None
        self.timeout = timeout
        self._negative_ttl = negative_ttl
        self._max_ttl = max_ttl
        self._max_entries = max_entries
        self._cache: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        # Observers for metrics (policy/ imports nothing from ingest/).
        self._on_query = on_query
        self._on_cache_hit = on_cache_hit

    @classmethod
    def from_config(cls, config: DnsConfig) -> CachingResolver:
        return cls(config.nameservers, config.timeout)

    async def resolve(self, name: str, rdtype: str) -> Answer:
        """The answer for ``name``/``rdtype``, from the cache when it is fresh."""
        rdtype = rdtype.upper()
        if rdtype not in SUPPORTED_TYPES:
            raise ValueError(f"unsupported record type {rdtype}")
        key = (name.lower().rstrip("."), rdtype)
        cached = self._cache.get(key)
        if cached is not None:
            if cached[0] > time.monotonic():
                self._cache.move_to_end(key)
                if self._on_cache_hit is not None:
                    self._on_cache_hit()
                return cached[1]
            del self._cache[key]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer, ttl = await self._query(key[0], rdtype)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            # Mark it retrieved: nobody else may be waiting on this future.
            future.exception()
            raise
        else:
            future.set_result(answer)
            self._store(key, answer, ttl)
            return answer
        finally:
            del self._inflight[key]

    def cached(self, name: str, rdtype: str) -> tuple[float, Answer] | None:
        """A fresh ``(expiry, answer)`` from the cache, or None; never queries.

        Only reads, so pyspf's worker thread may call it: answering a warm
        lookup there saves a round trip through the event loop. ``expiry``
        is on the :func:`time.monotonic` clock.
        """
        entry = self._cache.get((name.lower().rstrip("."), rdtype.upper()))
        if entry is not None and entry[0] > time.monotonic():
            return entry
        return None

    async def txt(self, name: str) -> list[bytes]:
        """Every TXT record at ``name``, each with its strings joined."""
        return [b"".join(value) for value in await self.resolve(name, "TXT")]  # type: ignore[arg-type]

    def _store(self, key: tuple[str, str], answer: Answer, ttl: float) -> None:
        if ttl <= 0:
            return
        self._cache[key] = (time.monotonic() + min(ttl, self._max_ttl), answer)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    async def _query(self, name: str, rdtype: str) -> tuple[Answer, float]:
        if self._on_query is not None:
            self._on_query(rdtype)
        qtype = dns.rdatatype.from_text(rdtype)
        try:
            result = await self._resolver.resolve(name, qtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return (), self._negative_ttl
        except (
            dns.name.EmptyLabel,
            dns.name.LabelTooLong,
            dns.name.NameTooLong,
            dns.name.IDNAException,
            dns.exception.SyntaxError,  # bad escapes and the like
        ):
            # Not a name anybody can own: nothing to find, and retrying cannot help.
            return (), self._negative_ttl
        except dns.resolver.NoNameservers as exc:
            raise DnsTempError(f"DNS SERVFAIL for {name}/{rdtype}") from exc
        except dns.exception.Timeout as exc:
            raise DnsTempError(f"DNS timeout for {name}/{rdtype}") from exc
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"DNS error for {name}/{rdtype}: {exc}") from exc
        if result.rrset is None:
            return (), self._negative_ttl
        answer = tuple(_normalise(rdtype, rdata) for rdata in result.rrset)
        return answer, float(result.chaining_result.minimum_ttl)
