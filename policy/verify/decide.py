"""What the sender's domain and our policy say to do with a verified message.

Pure decisions on plain data: :class:`~policy.verify.authenticate.Authenticator`
gathers the evidence (SPF, DKIM, ARC, DMARC, forwarding) and asks here which
action, reason code and reply follow, and which hop SPF should judge.

Reason codes (stable; the rejection log and the stored verdict use them):

==========================  ==========  =========================================
reason                      action      meaning
==========================  ==========  =========================================
``accepted``                accept      authenticated, or a domain without DMARC
``dmarc_none``              accept      DMARC failed; the domain asks p=none (or
                                        pct sampled the message out to none)
``dmarc_monitor``           accept      DMARC failed with reject/quarantine, but
                                        the policy is ``dmarc: monitor``
``arc_trusted_forwarder``   accept      DMARC failed (DKIM broken in transit) but a
                                        trusted ARC sealer recorded dmarc=pass
``manual_forward_accepted`` accept      manually forwarded, ``manual_forward: accept``
``dmarc_quarantine``        quarantine  DMARC failed, effective policy quarantine
``manual_forward_quarantine`` quarantine manually forwarded, policy quarantine
``dmarc_reject``            reject      DMARC failed, effective policy reject (550)
``manual_forward``          reject      manually forwarded, policy reject (550)
``from_malformed``          reject      no single trustworthy author (550; the
                                        detail's ``problem`` says which, see
                                        :mod:`policy.message.author`)
``header_too_large``        reject      a header block over the limit (552)
``null_author_bounce``      accept      a delivery report whose From names no
                                        address (``<>``, MAILER-DAEMON): DMARC
                                        has no domain to judge; it can only join
                                        the ticket of mail we sent
``dns_tempfail``            tempfail    DNS timeout/SERVFAIL in a lookup whose answer
                                        could change the verdict (451); not once an
                                        aligned DKIM signature has passed
==========================  ==========  =========================================

Trusted networks are our own MTAs in front of us (an edge MX or filter
relay). The SMTP client is then not the sender's server, so SPF is
evaluated for the hop *into* the trusted relay: the IP and HELO named in
the newest Received header whose sending IP is outside the trusted
networks. Everything else is checked as usual.

A malformed From is refused even under ``dmarc: monitor``: it is not a DMARC
decision but a message without a single author (RFC 7489 6.6.1), which
cannot become a ticket with a requester.
"""

from __future__ import annotations

import ipaddress
import re

from policy.config.model import PolicyConfig
from policy.verify import dmarc, forwarding
from policy.verify.arc import ArcResult
from policy.verify.verdict import Action, Envelope, ForwardingKind

DNS_TEMPFAIL_REPLY = (
    "451 4.7.0 Temporary DNS failure while verifying the sender; please try again later"
)
MANUAL_FORWARD_REPLY = (
    "550 5.7.1 Manually forwarded messages are not supported here. Please use your "
    "mail server's native forwarding (a redirect rule) to send mail to this address"
)
FROM_MALFORMED_REPLY = (
    "550 5.7.1 The message must name exactly one author address in its From header field"
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# "from HELO (rDNS-name [IP])": the comment is what the receiving hop wrote itself.
_RECEIVED_FROM = re.compile(
    r"^\s*from\s+(?P<helo>\S+)\s*\((?P<rest>[^()]*)\)", re.IGNORECASE | re.DOTALL
)
_BRACKETED_IP = re.compile(r"\[(?:IPv6:)?(?P<ip>[0-9A-Fa-f:.]+)\]")


def dmarc_reject_reply(domain: str) -> str:
    return (
        f"550 5.7.1 Unauthenticated email from {domain} is not accepted due to domain's "
        f"DMARC policy. Please contact the administrator of {domain} domain."
    )


def _in(ip: str, networks: list[Network]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _local(ip: str) -> bool:
    """A unix-socket or loopback peer is an MTA on this host handing mail over."""
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return True


def spf_origin(received: list[str], envelope: Envelope, trusted: list[Network]) -> tuple[str, str]:
    """(ip, helo) SPF should judge: the client, or the hop into our trusted relays.

    ``received`` are the Received header values, newest first. A local peer
    (Postfix handing over by LMTP) is always a trusted hop: judging it would
    fail every sender's SPF. Only headers written by trusted hops are read,
    newest first: the first one naming an untrusted client is the answer, and
    one that cannot be read ends the walk with no address (SPF ``none``) —
    never falling through to older headers, which the sender may have forged.
    Mail that never left trusted hosts is judged by the client's own address.
    """
    if not (_local(envelope.client_ip) or _in(envelope.client_ip, trusted)):
        return envelope.client_ip, envelope.helo
    for value in received:
        match = _RECEIVED_FROM.match(value)
        ip_match = _BRACKETED_IP.search(match.group("rest")) if match else None
        if match is None or ip_match is None:
            return "", envelope.helo
        ip = ip_match.group("ip")
        if not (_local(ip) or _in(ip, trusted)):
            return ip, match.group("helo").strip("[]")
    return envelope.client_ip, envelope.helo  # it started on a trusted host


def _trusted_sealer(arc: ArcResult, author: str, sealers: list[str]) -> bool:
    """A valid chain whose newest sealer we trust and which saw DMARC pass."""
    sealer = arc.newest_sealer
    if arc.cv != "pass" or sealer is None or arc.sealer_dmarc != "pass":
        return False
    if arc.sealer_dmarc_from not in (None, author):
        return False
    return any(sealer == t.lower() or sealer.endswith("." + t.lower()) for t in sealers)


def decide(
    outcome: dmarc.DmarcOutcome,
    arc: ArcResult,
    evidence: forwarding.ForwardingEvidence,
    policy: PolicyConfig,
) -> tuple[Action, str, str | None, ForwardingKind]:
    """(action, reason code, SMTP reply or None, forwarding kind) for a message
    with an author; the order is the table's: a DMARC failure the domain asks us
    to act on outranks the forwarding rules, and a trusted ARC sealer outranks it."""
    kind = evidence.kind
    if outcome.result == "fail" and outcome.policy != "none":
        if _trusted_sealer(arc, outcome.author, policy.trusted_arc_sealers):
            return Action.ACCEPT, "arc_trusted_forwarder", None, ForwardingKind.NATIVE_ARC
        if policy.dmarc == "monitor":
            return Action.ACCEPT, "dmarc_monitor", None, kind
        if outcome.policy == "reject":
            return Action.REJECT, "dmarc_reject", dmarc_reject_reply(outcome.author), kind
        return Action.QUARANTINE, "dmarc_quarantine", None, kind
    if kind is ForwardingKind.MANUAL:
        if policy.manual_forward == "reject":
            return Action.REJECT, "manual_forward", MANUAL_FORWARD_REPLY, kind
        if policy.manual_forward == "quarantine":
            return Action.QUARANTINE, "manual_forward_quarantine", None, kind
        return Action.ACCEPT, "manual_forward_accepted", None, kind
    if outcome.result == "fail":
        return Action.ACCEPT, "dmarc_none", None, kind
    return Action.ACCEPT, "accepted", None, kind
