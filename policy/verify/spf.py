"""SPF (RFC 7208) with pyspf, over the shared resolver.

pyspf evaluates synchronously and asks DNS through the module function
``spf.DNSLookup`` while it walks includes, redirects and macros, so the set
of names cannot be known in advance and pre-resolving is impossible. The
evaluation therefore runs in a worker thread; each lookup it makes is handed
back to the event loop (:func:`asyncio.run_coroutine_threadsafe`) and
answered by :class:`policy.verify.dns.Resolver`. That keeps one resolver, one cache
and one timeout policy for every check, never blocks the loop, and costs no
CPU worth a process: SPF evaluation is string work between lookups.

``spf.DNSLookup`` is replaced once, at import, by a dispatcher that finds
the lookup function of the current evaluation in a context variable; using
pyspf outside :func:`check_spf` is a programming error and says so. pyspf
enforces RFC 7208's limits itself (10 DNS-querying terms, 2 void lookups).
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import spf

from policy.errors import DnsTempError
from policy.verify.dns import Resolver, Value

Identity = Literal["mailfrom", "helo"]
SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]

# The whole evaluation may not take longer than this (RFC 7208 4.6.4: 20 s).
MAX_EVALUATION_SECONDS = 20.0

Lookup = Callable[[str, str], list[tuple[tuple[str, str], Any]]]
_current_lookup: contextvars.ContextVar[Lookup] = contextvars.ContextVar("spf_lookup")


def _dispatch(name: str, qtype: str, strict: object = True, timeout: object = None) -> Any:
    try:
        lookup = _current_lookup.get()
    except LookupError:
        raise RuntimeError("pyspf must be called through policy.verify.spf.check_spf") from None
    return lookup(name, qtype)


spf.DNSLookup = _dispatch


@dataclass(frozen=True)
class SpfCheck:
    """The result for one identity (``mailfrom`` or ``helo``) and its domain."""

    identity: Literal["mailfrom", "helo"]
    domain: str
    result: SpfResult
    explanation: str
    # True when the result is temperror because DNS failed (→ 451, not a guess).
    dns_failure: bool = False


def _pyspf_value(qtype: str, value: Value) -> Any:
    """pyspf's own dnspython adapter passes TXT as a list of bytes strings."""
    if qtype in ("TXT", "SPF"):
        return list(value)
    return value


class _LoopLookup:
    """pyspf's lookup function, answered by the resolver on the event loop.

    It remembers when the first of the answers it used expires, which is how
    long the evaluation's result stays true.
    """

    def __init__(self, resolver: Resolver, loop: asyncio.AbstractEventLoop) -> None:
        self._resolver = resolver
        self._loop = loop
        self.failed = False
        self.expires = float("inf")

    def __call__(self, name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
        entry = self._resolver.cached(name, qtype)
        if entry is None:
            coroutine = self._resolver.resolve(name, qtype)
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
            try:
                answer = future.result(timeout=MAX_EVALUATION_SECONDS)
            except DnsTempError as exc:
                self.failed = True
                raise spf.TempError(f"DNS {exc}") from exc
            # Not cached (TTL 0): the result must not outlive this evaluation.
            entry = self._resolver.cached(name, qtype) or (0.0, answer)
        self.expires = min(self.expires, entry[0])
        return [((name, qtype), _pyspf_value(qtype, value)) for value in entry[1]]


@dataclass(frozen=True)
class Evaluation:
    result: SpfResult
    explanation: str
    dns_failed: bool
    # time.monotonic() at which the first DNS answer used expires.
    expires: float


def _evaluate(jobs: list[tuple[_LoopLookup, spf.query]]) -> list[tuple[str, str]]:
    results = []
    for lookup, query in jobs:
        _current_lookup.set(lookup)
        result, _code, explanation = query.check()
        results.append((str(result), str(explanation)))
    return results


async def run_queries(resolver: Resolver, queries: list[spf.query]) -> list[Evaluation]:
    """Evaluate prepared pyspf queries.

    This is the one bridge between pyspf and our resolver (the RFC 7208 test
    suite runs through it too). The queries share one trip to a worker
    thread, because the hop costs more than a warm evaluation.
    """
    loop = asyncio.get_running_loop()
    jobs = [(_LoopLookup(resolver, loop), query) for query in queries]
    # to_thread copies the context, so the variable set in _evaluate is private.
    results = await asyncio.to_thread(_evaluate, jobs)
    return [
        Evaluation(result, explanation, lookup.failed, lookup.expires)  # type: ignore[arg-type]
        for (result, explanation), (lookup, _query) in zip(results, jobs, strict=True)
    ]


class ResultCache:
    """SPF results by (ip, sender, helo), kept while every answer they used is fresh.

    A result depends on nothing else, so a burst of mail from one sender
    through one forwarder costs one evaluation; temperrors are never kept.
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        self._entries: OrderedDict[tuple[str, str, str], Evaluation] = OrderedDict()
        self._max_entries = max_entries

    def get(self, key: tuple[str, str, str]) -> Evaluation | None:
        evaluation = self._entries.get(key)
        if evaluation is None:
            return None
        if evaluation.expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return evaluation

    def put(self, key: tuple[str, str, str], evaluation: Evaluation) -> None:
        if evaluation.dns_failed or evaluation.expires <= time.monotonic():
            return
        self._entries[key] = evaluation
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


async def check_spf(
    resolver: Resolver, ip: str, mail_from: str, helo: str, cache: ResultCache | None = None
) -> tuple[SpfCheck, SpfCheck]:
    """SPF for the MAIL FROM identity and for the HELO identity.

    With a null reverse-path, RFC 7208 2.4 checks ``postmaster@HELO`` as the
    MAIL FROM identity, so the HELO result is also the MAIL FROM result.
    """
    if not _is_ip(ip):
        # A local hand-off whose Received headers name no outside hop: there is
        # no client address to judge, which RFC 7208 has no result for but none.
        why = "no client IP address to check (local hand-off without a Received hop)"
        helo_check = SpfCheck("helo", helo.lower().rstrip("."), "none", why)
        return replace(helo_check, identity="mailfrom", domain=_domain(mail_from)), helo_check
    identities: list[tuple[Identity, str]] = [("helo", "")]
    if mail_from:
        identities.append(("mailfrom", mail_from))
    checks = await check_identities(resolver, ip, helo, identities, cache)
    if not mail_from:
        return replace(checks[0], identity="mailfrom"), checks[0]
    return checks[1], checks[0]


async def check_identities(
    resolver: Resolver,
    ip: str,
    helo: str,
    identities: list[tuple[Identity, str]],
    cache: ResultCache | None = None,
) -> list[SpfCheck]:
    """One result per (identity, sender); an empty sender checks ``postmaster@helo``."""
    cache = cache if cache is not None else ResultCache(0)
    keys = [(ip, sender.lower(), helo.lower()) for _identity, sender in identities]
    domains = [_domain(sender) if sender else helo.lower().rstrip(".") for _i, sender in identities]
    found = {index: cache.get(key) for index, key in enumerate(keys) if domains[index]}
    todo = [index for index, evaluation in found.items() if evaluation is None]
    if todo:
        queries = [_query(ip, identities[index][1], helo) for index in todo]
        for index, evaluation in zip(todo, await run_queries(resolver, queries), strict=True):
            found[index] = evaluation
            cache.put(keys[index], evaluation)
    checks = []
    for index, (identity, _sender) in enumerate(identities):
        done = found.get(index)
        if done is None:
            checks.append(SpfCheck(identity, domains[index], "none", "no domain to check"))
        else:
            checks.append(
                SpfCheck(identity, domains[index], done.result, done.explanation, done.dns_failed)
            )
    return checks


async def check_identity(
    resolver: Resolver, ip: str, sender: str, helo: str, identity: Identity
) -> SpfCheck:
    """One identity alone; see :func:`check_identities`."""
    return (await check_identities(resolver, ip, helo, [(identity, sender)]))[0]


def _query(ip: str, sender: str, helo: str) -> spf.query:
    return spf.query(
        i=ip, s=sender, h=helo, timeout=MAX_EVALUATION_SECONDS, querytime=MAX_EVALUATION_SECONDS
    )
