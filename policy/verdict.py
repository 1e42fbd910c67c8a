"""What the listener needs to know to answer DATA, and nothing more.

Verification (SPF, DKIM, ARC, DMARC, forwarding) produces one
:class:`Verdict`; the listener maps it to an SMTP reply and a queue state.
Keeping the contract this small is what lets ``policy/`` be tested on plain
data and lets the listener stay ignorant of how a decision was made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from policy.config import MailboxConfig, PolicyConfig


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
    ) -> Verdict: ...

    def close(self) -> None:
        """Release what the verifier holds (worker processes); may block."""
