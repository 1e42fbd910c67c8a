"""DMARC (RFC 7489), our own code, on top of the SPF and DKIM results.

No maintained Python library gets DMARC right for us (authheaders looks
only at the first DKIM signature and ignores ``pct``), and the rules are
short enough to keep on plain data where they can be tested as tables:

* the policy record is looked for at ``_dmarc.<From domain>``, then at the
  organisational domain (Public Suffix List from ``publicsuffixlist``),
  where ``sp=`` (if given) applies to subdomains;
* records not starting with ``v=DMARC1`` are ignored; none left, several
  left, or one without a valid ``p=`` means no policy is applied (``none``
  when there is nothing, ``permerror`` when there is something broken);
* DMARC passes when SPF passed for a domain aligned with the From domain
  (the MAIL FROM domain, or HELO for a null reverse-path) or when ANY DKIM
  signature passed with an aligned ``d=``; alignment is relaxed (same
  organisational domain) or strict (same domain) per ``aspf``/``adkim``;
* ``pct`` samples deterministically by an HMAC of the Message-ID under a
  key of this installation (``storage/keys.py``): a forwarder retrying after
  a 451 meets the same decision, but a spoofer, who chooses the Message-ID,
  cannot choose one that is sampled out; messages outside the sample get the
  next weaker policy (reject → quarantine → none).

The only I/O is :func:`discover` asking the injected resolver; a DNS failure
raises :class:`policy.errors.DnsTempError` and the caller answers 4xx.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from publicsuffixlist import PublicSuffixList

from policy.verify.dns import Resolver

Disposition = Literal["none", "quarantine", "reject"]
DmarcResult = Literal["pass", "fail", "none", "temperror", "permerror"]

_DISPOSITIONS: tuple[Disposition, ...] = ("none", "quarantine", "reject")
_WEAKER: dict[Disposition, Disposition] = {
    "reject": "quarantine",
    "quarantine": "none",
    "none": "none",
}


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registrable domain (``mail.example.co.uk`` → ``example.co.uk``)."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(identifier: str, author: str, mode: str) -> bool:
    identifier, author = identifier.lower().rstrip("."), author.lower().rstrip(".")
    if not identifier or not author:
        return False
    if mode == "s":
        return identifier == author
    return organizational_domain(identifier) == organizational_domain(author)


@dataclass(frozen=True)
class DmarcRecord:
    p: Disposition
    sp: Disposition | None = None
    adkim: Literal["r", "s"] = "r"
    aspf: Literal["r", "s"] = "r"
    pct: int = 100


def _tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


def _disposition(value: str | None) -> Disposition | None:
    value = (value or "").lower()
    return value if value in _DISPOSITIONS else None


def is_dmarc_record(text: bytes) -> bool:
    head = text.split(b";", 1)[0].replace(b" ", b"").replace(b"\t", b"")
    return head == b"v=DMARC1"


def parse_record(text: bytes) -> DmarcRecord | None:
    """One ``v=DMARC1`` record; None when ``p=`` is missing or invalid.

    Bad values of the optional tags fall back to their defaults, as RFC 7489
    6.3 asks; unknown tags are ignored.
    """
    tags = _tags(text.decode("utf-8", "replace"))
    p = _disposition(tags.get("p"))
    if p is None:
        return None
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else 100
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(
        p=p,
        sp=_disposition(tags.get("sp")),
        adkim="s" if adkim == "s" else "r",
        aspf="s" if aspf == "s" else "r",
        pct=pct,
    )


@dataclass(frozen=True)
class PolicyDiscovery:
    """Where the policy came from, or why there is none."""

    record: DmarcRecord | None
    # The domain whose _dmarc record was used (the From or the organisational domain).
    record_domain: str | None = None
    # permerror: several DMARC records, or one without a valid p=.
    problem: str | None = None

    def disposition(self, author: str) -> Disposition:
        """``p``, or ``sp`` when the record is the organisational domain's."""
        if self.record is None:
            return "none"
        if self.record_domain != author and self.record.sp is not None:
            return self.record.sp
        return self.record.p


def select(records: list[bytes]) -> tuple[bool, PolicyDiscovery]:
    """(found, discovery) for the TXT records at one ``_dmarc`` name."""
    candidates = [r for r in records if is_dmarc_record(r)]
    if not candidates:
        return False, PolicyDiscovery(None)
    if len(candidates) > 1:
        return True, PolicyDiscovery(None, problem="several DMARC records")
    record = parse_record(candidates[0])
    if record is None:
        return True, PolicyDiscovery(None, problem="DMARC record without a valid p= tag")
    return True, PolicyDiscovery(record)


async def discover(resolver: Resolver, author: str) -> PolicyDiscovery:
    """RFC 7489 6.6.3: the From domain's record, else the organisational domain's."""
    if not _psl.cache_info().currsize:  # parsing the list takes a while: not on the loop
        await asyncio.to_thread(_psl)
    found, discovery = select(await resolver.txt(f"_dmarc.{author}"))
    if found:
        return _at(discovery, author)
    org = organizational_domain(author)
    if org == author:
        return discovery
    found, discovery = select(await resolver.txt(f"_dmarc.{org}"))
    return _at(discovery, org) if found else discovery


def _at(discovery: PolicyDiscovery, domain: str) -> PolicyDiscovery:
    return PolicyDiscovery(discovery.record, domain, discovery.problem)


@dataclass(frozen=True)
class DmarcOutcome:
    result: DmarcResult
    author: str
    # What the domain asked for (p or sp) and what applies after pct sampling.
    requested: Disposition = "none"
    policy: Disposition = "none"
    record_domain: str | None = None
    spf_aligned: bool = False
    dkim_aligned: tuple[str, ...] = ()
    sampled_out: bool = False
    reason: str = ""


def sampled(message_id: str, pct: int, key: bytes = b"") -> bool:
    """True when this message falls inside the ``pct`` share (``key``: ours, secret)."""
    if pct >= 100:
        return True
    message = message_id.strip().encode("utf-8", "replace")
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big") % 100 < pct


def evaluate(
    author: str,
    discovery: PolicyDiscovery,
    spf_result: str,
    spf_domain: str,
    dkim_passes: Iterable[str],
    message_id: str,
    sampling_key: bytes = b"",
) -> DmarcOutcome:
    """The DMARC result and the policy to apply, from results already computed.

    ``dkim_passes`` are the ``d=`` domains of the DKIM signatures that passed.
    """
    record = discovery.record
    if record is None:
        result: DmarcResult = "permerror" if discovery.problem else "none"
        return DmarcOutcome(result, author, reason=discovery.problem or "no DMARC record")
    spf_aligned = spf_result == "pass" and aligned(spf_domain, author, record.aspf)
    dkim_aligned = tuple(d for d in dkim_passes if aligned(d, author, record.adkim))
    outcome = DmarcOutcome(
        "pass",
        author,
        requested=discovery.disposition(author),
        record_domain=discovery.record_domain,
        spf_aligned=spf_aligned,
        dkim_aligned=dkim_aligned,
        reason="aligned DKIM" if dkim_aligned else "aligned SPF",
    )
    if spf_aligned or dkim_aligned:
        return outcome
    inside = sampled(message_id, record.pct, sampling_key)
    return replace(
        outcome,
        result="fail",
        policy=outcome.requested if inside else _WEAKER[outcome.requested],
        sampled_out=not inside,
        reason="no aligned SPF or DKIM pass",
    )
