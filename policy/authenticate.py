"""Who really sent it: the verifier the listener calls after DATA.

:class:`Authenticator` implements :class:`policy.verdict.Verifier`. For one
message it runs, concurrently on the event loop, SPF (pyspf in a worker
thread whose lookups come back to the loop), the DKIM/ARC key lookups and
the DMARC policy discovery, all through the one shared resolver; then the
RSA/ed25519 work in an executor (a process pool in production, so
verification uses every core and never blocks the loop); then DMARC and the
forwarding rules on plain data.

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
``from_malformed``          reject      zero or several From addresses (550)
``dns_tempfail``            tempfail    DNS timeout/SERVFAIL in any check (451)
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

import asyncio
import email
import ipaddress
import multiprocessing
import re
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from email.message import Message
from typing import Any

from policy import authresults, dkim, dmarc, forwarding, spf
from policy.arc import ArcResult, verify_arc
from policy.config import Config, MailboxConfig, PolicyConfig
from policy.dns import Resolver
from policy.errors import DnsTempError
from policy.verdict import Action, Envelope, ForwardingKind, Verdict

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
_RECEIVED_FROM = re.compile(
    r"^\s*from\s+(?P<helo>\S+)(?P<rest>.*?)(?:\bby\b|;|$)", re.IGNORECASE | re.DOTALL
)
_BRACKETED_IP = re.compile(r"\[(?:IPv6:)?(?P<ip>[0-9A-Fa-f:.]+)\]")


def dmarc_reject_reply(domain: str) -> str:
    return (
        f"550 5.7.1 Unauthenticated email from {domain} is not accepted due to domain's "
        f"DMARC policy. Please contact the administrator of {domain} domain."
    )


def verify_signatures(
    raw: bytes, keys: dkim.Keys, min_key_bits: int
) -> tuple[list[dkim.DkimSignature], ArcResult]:
    """The CPU-heavy part, fit for a process pool: every DKIM signature and ARC."""
    return dkim.verify_dkim(raw, keys, min_key_bits), verify_arc(raw, keys, min_key_bits)


def process_pool() -> ProcessPoolExecutor:
    """Workers for signature checks; forkserver, because the server has threads."""
    return ProcessPoolExecutor(mp_context=multiprocessing.get_context("forkserver"))


def production_verifier(config: Config) -> Authenticator:
    """What ``firstline serve`` runs: the configured resolver and a process pool."""
    return Authenticator.from_config(config, process_pool())


def _in(ip: str, networks: list[Network]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def spf_origin(message: Message, envelope: Envelope, trusted: list[Network]) -> tuple[str, str]:
    """(ip, helo) SPF should judge: the client, or the hop into our trusted relays."""
    if not _in(envelope.client_ip, trusted):
        return envelope.client_ip, envelope.helo
    for received in message.get_all("Received") or []:
        match = _RECEIVED_FROM.match(str(received))
        if match is None:
            continue
        ip_match = _BRACKETED_IP.search(match.group("rest"))
        if ip_match is None:
            continue
        ip = ip_match.group("ip")
        if not _in(ip, trusted):
            return ip, match.group("helo").strip("[]")
    return envelope.client_ip, envelope.helo


def _trusted_sealer(arc: ArcResult, author: str, sealers: list[str]) -> bool:
    """A valid chain whose newest sealer we trust and which saw DMARC pass."""
    sealer = arc.newest_sealer
    if arc.cv != "pass" or sealer is None or arc.sealer_dmarc != "pass":
        return False
    if arc.sealer_dmarc_from not in (None, author):
        return False
    return any(sealer == t.lower() or sealer.endswith("." + t.lower()) for t in sealers)


@dataclass(frozen=True)
class _Checks:
    spf: tuple[spf.SpfCheck, spf.SpfCheck]
    keys: dkim.Keys
    discovery: dmarc.PolicyDiscovery


class Authenticator:
    """SPF, DKIM, ARC, DMARC and forwarding rules → one :class:`Verdict`.

    ``executor`` runs the signature checks; None means the loop's default
    thread pool (enough for tests; :func:`process_pool` for production).
    """

    def __init__(
        self, resolver: Resolver, authserv_id: str, executor: Executor | None = None
    ) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id
        self._executor = executor

    @classmethod
    def from_config(cls, config: Config, executor: Executor | None = None) -> Authenticator:
        return cls(Resolver.from_config(config.dns), config.server.hostname, executor)

    def close(self) -> None:
        """Stop the executor's workers (a process pool outlives nothing else)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def stamp(self, raw: bytes, verdict: Verdict) -> bytes:
        """The message as stored: forged headers of ours removed, ours on top."""
        if verdict.authentication_results is None:
            return authresults.strip_ours(raw, self.authserv_id)
        return authresults.stamp(raw, self.authserv_id, verdict.authentication_results)

    async def verify(
        self, raw: bytes, envelope: Envelope, mailbox: MailboxConfig, policy: PolicyConfig
    ) -> Verdict:
        message = email.message_from_bytes(raw)
        try:
            author = dmarc.author_domain([str(v) for v in message.get_all("From") or []])
        except dmarc.MalformedFrom as exc:
            return Verdict(
                Action.REJECT,
                "from_malformed",
                FROM_MALFORMED_REPLY,
                details={"from": str(exc)},
            )
        evidence = forwarding.inspect(message, envelope.mail_from)
        ip, helo = spf_origin(message, envelope, list(policy.trusted_networks))
        try:
            checks = await self._lookups(raw, envelope, ip, helo, author)
        except DnsTempError as exc:
            return self._tempfail(str(exc), evidence)
        if any(check.dns_failure for check in checks.spf):
            return self._tempfail("SPF: " + checks.spf[0].explanation, evidence)
        loop = asyncio.get_running_loop()
        signatures, arc = await loop.run_in_executor(
            self._executor, verify_signatures, raw, checks.keys, policy.min_dkim_key_bits
        )
        mailfrom = checks.spf[0]
        outcome = dmarc.evaluate(
            author,
            checks.discovery,
            mailfrom.result,
            mailfrom.domain,
            [s.domain for s in signatures if s.result == "pass"],
            str(message.get("Message-ID", "")),
        )
        results = authresults.build(
            self.authserv_id, checks.spf, signatures, arc, outcome, envelope.client_ip
        )
        details: dict[str, Any] = {
            "from_domain": author,
            "spf_ip": ip,
            "spf": [asdict(c) for c in checks.spf],
            "dkim": [asdict(s) for s in signatures],
            "arc": asdict(arc),
            "dmarc": asdict(outcome),
            "forwarding": {"manual": list(evidence.manual), "native": list(evidence.native)},
        }
        action, reason, reply, kind = self._decide(outcome, arc, evidence, policy)
        details["forwarding"]["kind"] = str(kind)
        return Verdict(action, reason, reply, results, kind, details)

    async def _lookups(
        self, raw: bytes, envelope: Envelope, ip: str, helo: str, author: str
    ) -> _Checks:
        names = dkim.key_names(dkim.headers(raw))
        try:
            async with asyncio.TaskGroup() as group:
                spf_task = group.create_task(
                    spf.check_spf(self.resolver, ip, envelope.mail_from, helo)
                )
                keys_task = group.create_task(dkim.fetch_keys(self.resolver, names))
                dmarc_task = group.create_task(dmarc.discover(self.resolver, author))
        except* DnsTempError as group_error:
            raise group_error.exceptions[0] from None
        return _Checks(spf_task.result(), keys_task.result(), dmarc_task.result())

    def _tempfail(self, why: str, evidence: forwarding.ForwardingEvidence) -> Verdict:
        return Verdict(
            Action.TEMPFAIL,
            "dns_tempfail",
            DNS_TEMPFAIL_REPLY,
            forwarding=evidence.kind,
            details={"dns": why},
        )

    @staticmethod
    def _decide(
        outcome: dmarc.DmarcOutcome,
        arc: ArcResult,
        evidence: forwarding.ForwardingEvidence,
        policy: PolicyConfig,
    ) -> tuple[Action, str, str | None, ForwardingKind]:
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
