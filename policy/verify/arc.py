"""ARC (RFC 8617) with dkimpy: is the chain intact, and who vouched for what.

An ARC chain lets a forwarder that changed a message (a footer, a subject
tag) vouch for what it saw on arrival. We only believe the vouching of
sealers the admin trusts, so besides the chain validation result this
module reports every sealer's domain and, from the newest set's
ARC-Authentication-Results, the DMARC result that sealer recorded.

Like :func:`policy.verify.dkim.verify_dkim`, :func:`verify_arc` is a pure function
of the message and the prefetched keys, fit for a process pool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import authres
import dkim

from policy.message.headerblock import HeaderBlock
from policy.verify.dkim import Keys, dkimpy_message, dnsfunc

ChainResult = Literal["none", "pass", "fail"]

# dkimpy's comment for a message without ARC header fields.
NOT_ARC_SIGNED = "Message is not ARC signed"
_INSTANCE = re.compile(rb"^\s*i\s*=\s*\d+\s*;", re.IGNORECASE)


@dataclass(frozen=True)
class ArcResult:
    cv: ChainResult
    reason: str
    # Sealers' domains (ARC-Seal d=), newest instance first.
    sealers: tuple[str, ...] = ()
    # What the newest sealer recorded for DMARC on arrival ("pass", "fail"…).
    sealer_dmarc: str | None = None
    sealer_dmarc_from: str | None = None
    instances: int = 0
    details: list[dict[str, object]] = field(default_factory=list)

    @property
    def newest_sealer(self) -> str | None:
        return self.sealers[0] if self.sealers else None


def _recorded_dmarc(aar_value: bytes) -> tuple[str | None, str | None]:
    """The ``dmarc=`` result (and header.from) in an ARC-Authentication-Results."""
    text = _INSTANCE.sub(b"", aar_value).decode("utf-8", "replace")
    try:
        parsed = authres.all_features().parse_value(text)
    except authres.AuthResError:
        return None, None
    for result in parsed.results:
        if result.method == "dmarc":
            header_from = getattr(result, "header_from", None)
            return str(result.result).lower(), (str(header_from).lower() if header_from else None)
    return None, None


def verify_arc(block: HeaderBlock, keys: Keys, min_key_bits: int) -> ArcResult:
    """Validate the whole chain; ``cv`` is ``none`` when the message has no ARC sets."""
    if not any(name.lower().rstrip() in dkim.ARC.ARC_HEADERS for name, _ in block.fields):
        # dkimpy's own answer, without its relaxed canonicalisation of every field first.
        return ArcResult("none", NOT_ARC_SIGNED)
    try:
        verifier = dkimpy_message(dkim.ARC, block, min_key_bits)
        cv, results, comment = verifier.verify(dnsfunc=dnsfunc(keys))
    except dkim.DKIMException as exc:
        return ArcResult("fail", str(exc))
    if cv is None:
        # dkimpy: an earlier sealer already reported cv=fail; the chain is dead.
        cv = dkim.CV_Fail
    chain: ChainResult = cv.decode("ascii").lower()
    sealers = tuple(r["as-domain"].decode("ascii", "replace").lower() for r in results)
    details: list[dict[str, object]] = [
        {
            "instance": r["instance"],
            "sealer": r["as-domain"].decode("ascii", "replace").lower(),
            "seal_valid": bool(r.get("as-valid")),
            "message_signature_valid": bool(r.get("ams-valid")),
            "cv": r.get("cv", b"").decode("ascii", "replace"),
        }
        for r in results
    ]
    dmarc, dmarc_from = _recorded_dmarc(results[0]["aar-value"]) if results else (None, None)
    return ArcResult(chain, str(comment), sealers, dmarc, dmarc_from, len(results), details)
