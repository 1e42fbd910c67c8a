"""SPF (RFC 7208) with pyspf, over the shared resolver.

pyspf evaluates synchronously and asks DNS through the module function
``spf.DNSLookup`` while it walks includes, redirects and macros, so the set
of names cannot be known in advance and pre-resolving is impossible. The
evaluation therefore runs in a worker thread; each lookup it makes is handed
back to the event loop (:func:`asyncio.run_coroutine_threadsafe`) and
answered by :class:`policy.dns.Resolver`. That keeps one resolver, one cache
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
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import spf

from policy.dns import Resolver, Value
from policy.errors import DnsTempError

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
        raise RuntimeError("pyspf must be called through policy.spf.check_spf") from None
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
    """pyspf's lookup function, answered by the resolver on the event loop."""

    def __init__(self, resolver: Resolver, loop: asyncio.AbstractEventLoop) -> None:
        self._resolver = resolver
        self._loop = loop
        self.failed = False

    def __call__(self, name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
        answer = self._resolver.cached(name, qtype)
        if answer is None:
            coroutine = self._resolver.resolve(name, qtype)
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
            try:
                answer = future.result(timeout=MAX_EVALUATION_SECONDS)
            except DnsTempError as exc:
                self.failed = True
                raise spf.TempError(f"DNS {exc}") from exc
        return [((name, qtype), _pyspf_value(qtype, value)) for value in answer]


def _evaluate(jobs: list[tuple[_LoopLookup, spf.query]]) -> list[tuple[str, str]]:
    results = []
    for lookup, query in jobs:
        _current_lookup.set(lookup)
        result, _code, explanation = query.check()
        results.append((str(result), str(explanation)))
    return results


async def run_queries(resolver: Resolver, queries: list[spf.query]) -> list[tuple[str, str, bool]]:
    """Evaluate prepared pyspf queries: ``(result, explanation, dns_failed)`` each.

    This is the one bridge between pyspf and our resolver (the RFC 7208 test
    suite runs through it too). The queries share one trip to a worker
    thread, because the hop costs more than a warm evaluation.
    """
    loop = asyncio.get_running_loop()
    jobs = [(_LoopLookup(resolver, loop), query) for query in queries]
    # to_thread copies the context, so the variable set in _evaluate is private.
    results = await asyncio.to_thread(_evaluate, jobs)
    return [(r, e, lookup.failed) for (r, e), (lookup, _q) in zip(results, jobs, strict=True)]


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


async def check_spf(
    resolver: Resolver, ip: str, mail_from: str, helo: str
) -> tuple[SpfCheck, SpfCheck]:
    """SPF for the MAIL FROM identity and for the HELO identity.

    With a null reverse-path, RFC 7208 2.4 checks ``postmaster@HELO`` as the
    MAIL FROM identity, so the HELO result is also the MAIL FROM result.
    """
    identities: list[tuple[Identity, str]] = [("helo", "")]
    if mail_from:
        identities.append(("mailfrom", mail_from))
    checks = await check_identities(resolver, ip, helo, identities)
    if not mail_from:
        return replace(checks[0], identity="mailfrom"), checks[0]
    return checks[1], checks[0]


async def check_identities(
    resolver: Resolver, ip: str, helo: str, identities: list[tuple[Identity, str]]
) -> list[SpfCheck]:
    """One result per (identity, sender); an empty sender checks ``postmaster@helo``."""
    domains = [_domain(sender) if sender else helo.lower().rstrip(".") for _i, sender in identities]
    todo = [index for index, domain in enumerate(domains) if domain]
    queries = [_query(ip, identities[index][1], helo) for index in todo]
    evaluated = dict(
        zip(todo, await run_queries(resolver, queries) if queries else [], strict=True)
    )
    return [
        SpfCheck(identity, domain, *evaluated[index])  # type: ignore[arg-type]
        if index in evaluated
        else SpfCheck(identity, domain, "none", "no domain to check")
        for index, ((identity, _sender), domain) in enumerate(zip(identities, domains, strict=True))
    ]


async def check_identity(
    resolver: Resolver, ip: str, sender: str, helo: str, identity: Identity
) -> SpfCheck:
    """One identity alone; see :func:`check_identities`."""
    return (await check_identities(resolver, ip, helo, [(identity, sender)]))[0]


def _query(ip: str, sender: str, helo: str) -> spf.query:
    return spf.query(
        i=ip, s=sender, h=helo, timeout=MAX_EVALUATION_SECONDS, querytime=MAX_EVALUATION_SECONDS
    )
