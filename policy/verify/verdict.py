"""What the listener needs to know to answer DATA, and nothing more.

Verification (SPF, DKIM, ARC, DMARC, forwarding) produces one
:class:`Verdict`; the listener maps it to an SMTP reply and a queue state.
Keeping the contract this small is what lets ``policy/`` be tested on plain
data and lets the listener stay ignorant of how a decision was made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from policy.config.model import MailboxConfig, PolicyConfig
from policy.message.headerblock import HeaderBlock


class Action(StrEnum):
    ACCEPT = "accept"
    QUARANTINE = "quarantine"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


class ForwardingKind(StrEnum):
    DIRECT = "direct"
    NATIVE = "native"
    NATIVE_ARC = "native-arc"
    MANUAL = "manual"


@dataclass(frozen=True)
class Envelope:
    """The SMTP transaction as the listener saw it."""

    client_ip: str
    client_name: str | None
    helo: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    proto: str = "ESMTP"


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str = "accepted"
    # Full SMTP reply for REJECT/TEMPFAIL, e.g. "550 5.7.1 Unauthenticated email …".
    reply: str | None = None
    # The value of our Authentication-Results header, without the field name.
    authentication_results: str | None = None
    forwarding: ForwardingKind = ForwardingKind.DIRECT
    # Per-check results for the rejection log and the ticket (JSON-serialisable).
    details: dict[str, Any] = field(default_factory=dict)


ACCEPT = Verdict(Action.ACCEPT)


def original_sender(details: dict[str, Any] | None) -> str | None:
    """Whom a manual forward quoted or attached, from a stored verdict's details.

    Recorded whatever the policy decided (refused, held or accepted), so the
    rejection log and trace can say whom the forwarded mail came from.
    """
    forwarding = (details or {}).get("forwarding")
    sender = forwarding.get("original_sender") if isinstance(forwarding, dict) else None
    return sender if isinstance(sender, str) else None


class Verifier(Protocol):
    """Decides a message after DATA; may do DNS through its own resolver."""

    async def verify(
        self,
        raw: bytes,
        envelope: Envelope,
        mailbox: MailboxConfig,
        policy: PolicyConfig,
        *,
        block: HeaderBlock | None = None,
    ) -> Verdict:
        """``block`` is :func:`policy.message.headerblock.read` of ``raw`` when the
        caller has read it already (the listener reads each message once)."""
        ...

    def close(self) -> None:
        """Release what the verifier holds (worker processes); may block."""


# --- reading a recorded verdict -----------------------------------------------
#
# What verification recorded (``Verdict.details``, stored as a message's verdict
# and a refusal's ``authentication``) is for machines; people read it through
# these two functions: the CLI's ``rejections show``, ``trace`` and
# ``quarantine show``, and the web console. ``details`` may be any recorded
# verdict, old or new, so every key is optional.


def summary(details: Mapping[str, Any] | None) -> str:
    """One line: ``spf=fail dkim=none dmarc=fail (p=reject) forwarding=manual (Gmail marker)``."""
    details = details or {}
    parts: list[str] = []
    if "from" in details and "dmarc" not in details:
        parts.append("from=malformed")
    if "dns" in details:
        parts.append("dns=tempfail")
    spf = _spf_checks(details)
    if spf:
        parts.append(f"spf={spf[0].get('result', '?')}")
    if "dkim" in details:
        signatures = [s for s in details.get("dkim") or [] if isinstance(s, Mapping)]
        parts.append(
            "dkim="
            + (",".join(f"{s.get('result', '?')} (d={s.get('domain', '?')})" for s in signatures)
               or "none")
        )  # fmt: skip
    arc = details.get("arc")
    if isinstance(arc, Mapping) and arc.get("instances"):
        sealer = (arc.get("sealers") or [None])[0]
        parts.append(f"arc={arc.get('cv', '?')}" + (f" ({sealer})" if sealer else ""))
    dmarc = details.get("dmarc")
    if isinstance(dmarc, Mapping):
        requested = dmarc.get("requested") or "none"
        policy = f" (p={requested})" if dmarc.get("record_domain") else ""
        parts.append(f"dmarc={dmarc.get('result', '?')}{policy}")
    forwarding = details.get("forwarding")
    if isinstance(forwarding, Mapping):
        kind = str(forwarding.get("kind") or "direct")
        why = _forwarding_reason(forwarding, kind)
        parts.append(f"forwarding={kind}" + (f" ({why})" if why else ""))
    return " ".join(parts) or "not verified"


def explain(details: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The same verdict as labelled lines, each check with its reason, for a detail view."""
    details = details or {}
    lines: list[tuple[str, str]] = []
    action, reason = details.get("action"), details.get("reason")
    if action:
        lines.append(("decision", f"{action} ({reason})" if reason else str(action)))
    if "from" in details:
        lines.append(("from", f"malformed: {details['from']}"))
    if "dns" in details:
        lines.append(("dns", f"temporary failure: {details['dns']}"))
    for check in _spf_checks(details):
        label = "spf" if check.get("identity") != "helo" else "spf (helo)"
        where = f" for {check['domain']}" if check.get("domain") else ""
        ip = f" from {details['spf_ip']}" if details.get("spf_ip") else ""
        lines.append((label, _joined(f"{check.get('result', '?')}{where}{ip}",
                                     check.get("explanation"))))  # fmt: skip
    if "dkim" in details:
        signatures = [s for s in details.get("dkim") or [] if isinstance(s, Mapping)]
        if not signatures:
            lines.append(("dkim", "none: the message is not signed"))
        for s in signatures:
            bits = f", {s['key_bits']} bits" if s.get("key_bits") else ""
            what = (f"{s.get('result', '?')} d={s.get('domain', '?')} s={s.get('selector', '?')} "
                    f"({s.get('algorithm', '?')}{bits})")  # fmt: skip
            lines.append(("dkim", _joined(what, s.get("reason"))))
    arc = details.get("arc")
    if isinstance(arc, Mapping):
        sealers = ", ".join(arc.get("sealers") or [])
        what = f"{arc.get('cv', '?')}" + (f", sealed by {sealers}" if sealers else "")
        lines.append(("arc", _joined(what, arc.get("reason"))))
    dmarc = details.get("dmarc")
    if isinstance(dmarc, Mapping):
        author = f" for {dmarc['author']}" if dmarc.get("author") else ""
        if dmarc.get("record_domain"):
            requested, applied = dmarc.get("requested") or "none", dmarc.get("policy") or "none"
            policy = f"; p={requested} (applied: {applied}), record of {dmarc['record_domain']}"
        else:
            policy = "; no DMARC record"
        lines.append(("dmarc", _joined(f"{dmarc.get('result', '?')}{author}{policy}",
                                       dmarc.get("reason"))))  # fmt: skip
    forwarding = details.get("forwarding")
    if isinstance(forwarding, Mapping):
        kind = str(forwarding.get("kind") or "direct")
        signs = [*(forwarding.get("manual") or []), *(forwarding.get("native") or [])]
        original = _original_sender(forwarding)
        if original:
            signs.append(f"original from {original}")
        lines.append(("forwarding", _joined(kind, "; ".join(map(str, signs)))))
    return lines


def _spf_checks(details: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    checks = [c for c in details.get("spf") or [] if isinstance(c, Mapping)]
    # The MAIL FROM result first: it is the one DMARC reads.
    return sorted(checks, key=lambda c: c.get("identity") != "mailfrom")


def _original_sender(forwarding: Mapping[str, Any]) -> str | None:
    value = forwarding.get("original_from") or forwarding.get("original_sender")
    return str(value) if value else None


def _forwarding_reason(forwarding: Mapping[str, Any], kind: str) -> str:
    signs = [str(s) for s in forwarding.get("manual" if kind == "manual" else "native") or []]
    reason = _short_sign(signs[0]) if signs else ""
    original = _original_sender(forwarding)
    if original:
        reason = "; ".join(r for r in (reason, f"original from {original}") if r)
    return reason


def _short_sign(sign: str) -> str:
    """The evidence named as a person would: which client's marker, which header."""
    lowered = sign.lower()
    if lowered.startswith("inline forward marker"):
        if "---------- forwarded message" in lowered:
            return "Gmail marker"
        if "begin forwarded message" in lowered:
            return "Apple Mail marker"
        return "inline marker"
    return sign


def _joined(first: str, second: Any) -> str:
    return f"{first}: {second}" if second else first
