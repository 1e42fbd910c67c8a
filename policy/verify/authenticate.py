"""Who really sent it: the verifier the listener calls after DATA.

:class:`Authenticator` implements :class:`policy.verify.verdict.Verifier`. For one
message it runs, concurrently on the event loop, SPF (pyspf in a worker
thread whose lookups come back to the loop), the DKIM/ARC key lookups and
the DMARC policy discovery, all through the one shared resolver; the loop
itself parses only the header block. Then the RSA/ed25519 work, ARC and the
body (forwarding evidence) go to an executor (a process pool in production,
so verification uses every core and never blocks the loop); then DMARC and
the policy decide on plain data.

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

The header block is read once (:mod:`policy.message.headerblock`) and the author
once (:mod:`policy.message.author`); dkimpy is handed that reading rather than
parsing the message itself, so the fields signatures are checked over are
the fields the ticket is made from. Malformed input is never our trouble: a
check that cannot read the message gives ``permerror`` for that method, the
verdict rests on the others, and one log line names the reason code.
"""

from __future__ import annotations

import asyncio
import email
import ipaddress
import logging
import multiprocessing
import os
import re
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

from policy.config.model import Config, MailboxConfig, PolicyConfig
from policy.errors import DnsTempError
from policy.message import headerblock
from policy.message.author import Author, NoAuthor
from policy.message.author import read as read_author
from policy.verify import authresults, dkim, dmarc, forwarding, spf
from policy.verify.arc import ArcResult, verify_arc
from policy.verify.dns import Resolver
from policy.verify.verdict import Action, Envelope, ForwardingKind, Verdict

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

log = logging.getLogger("mail.verify")

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


@dataclass(frozen=True)
class Analysis:
    """What the executor computes from the whole message."""

    signatures: list[dkim.DkimSignature]
    arc: ArcResult
    evidence: forwarding.ForwardingEvidence
    # (method, reason code: what the message did to that check) for the log.
    problems: tuple[tuple[str, str], ...] = ()


def analyse(raw: bytes, mail_from: str, keys: dkim.Keys, min_key_bits: int) -> Analysis:
    """The CPU-heavy part, fit for a process pool: every signature, ARC, the body.

    Everything that needs more than the header block happens here, so the
    event loop only ever reads headers. ``raw`` is canonical (the listener
    verifies what it stores); reading it again here costs one linear pass and
    keeps what crosses to the worker small. Whatever a hostile message makes
    a library raise is that method's ``permerror``, never a 4xx.
    """
    block = headerblock.read(raw)
    problems: list[tuple[str, str]] = []
    try:
        signatures = dkim.verify_dkim(block, keys, min_key_bits)
    except Exception as exc:  # hostile input: the sender's fault, not ours
        problems.append(("dkim", type(exc).__name__))
        signatures = [
            dkim.DkimSignature(d or "", "", "", "permerror", f"unreadable: {type(exc).__name__}")
            for d in _signature_domains(block)
        ]
    try:
        arc = verify_arc(block, keys, min_key_bits)
    except Exception as exc:
        problems.append(("arc", type(exc).__name__))
        arc = ArcResult("fail", f"unreadable: {type(exc).__name__}")
    try:
        evidence = forwarding.inspect(email.message_from_bytes(raw), mail_from)
    except Exception as exc:  # e.g. RecursionError on thousands of MIME levels
        problems.append(("forwarding", type(exc).__name__))
        evidence = forwarding.ForwardingEvidence()
    return Analysis(signatures, arc, evidence, tuple(problems))


def _signature_domains(block: headerblock.HeaderBlock) -> list[str]:
    return [
        dkim.tag_text(value, b"d")
        for name, value in block.fields
        if name.lower() == b"dkim-signature"
    ]


def process_pool(preload: str = __name__) -> ProcessPoolExecutor:
    """Workers for signature checks (and, with ``preload`` naming its module, the
    batch's parsing: :mod:`ingest.work.reading`).

    forkserver, because forking the server itself would copy locks held by
    its threads; the workers are forked from a server process that has
    already imported ``preload``. Each worker watches the server and exits
    with it: a server killed with SIGKILL would otherwise leave the workers
    (and through them the fork server) blocked on their queue for ever.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload])
    return ProcessPoolExecutor(mp_context=context, initializer=_exit_with, initargs=(os.getpid(),))


def _exit_with(server_pid: int) -> None:
    threading.Thread(target=_watch, args=(server_pid,), daemon=True).start()


def _watch(server_pid: int) -> None:
    try:
        # A pidfd becomes readable when the process ends (Linux 5.3+).
        descriptor = os.pidfd_open(server_pid)
        select.select([descriptor], [], [])
    except OSError:
        while _alive(server_pid):
            time.sleep(2)
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def production_verifier(
    config: Config,
    sampling_key: bytes,
    *,
    on_query: Callable[[str], None] | None = None,
    on_cache_hit: Callable[[], None] | None = None,
) -> Authenticator:
    """What ``firstline serve`` runs: the configured resolver and a process pool.

    The workers are started now, in the background, so that the first
    message does not wait for the fork server and its imports. The observers
    go to the resolver (see :class:`policy.verify.dns.Resolver`).
    """
    pool = process_pool()
    for _ in range(os.cpu_count() or 1):
        pool.submit(os.getpid)
    resolver = Resolver(
        config.dns.nameservers,
        config.dns.timeout,
        on_query=on_query,
        on_cache_hit=on_cache_hit,
    )
    return Authenticator(
        resolver, config.server.hostname, pool, new_executor=process_pool,
        sampling_key=sampling_key,
    )  # fmt: skip


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


def _record(value: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready dict, shallow (our results are flat)."""
    return {f.name: getattr(value, f.name) for f in fields(value)}


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
    # None for a null-sender bounce: there is no author domain to ask about.
    discovery: dmarc.PolicyDiscovery | None
    key_failures: dict[str, str]  # DKIM key names whose lookup failed → why


class Authenticator:
    """SPF, DKIM, ARC, DMARC and forwarding rules → one :class:`Verdict`.

    ``executor`` runs the signature checks; None means the loop's default
    thread pool (enough for tests; :func:`process_pool` for production).
    """

    def __init__(
        self,
        resolver: Resolver,
        authserv_id: str,
        executor: Executor | None = None,
        *,
        new_executor: Callable[[], Executor] | None = None,
        sampling_key: bytes = b"",
    ) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id
        # Keys DMARC pct sampling (storage/keys.py): the same in every process on a store.
        self.sampling_key = sampling_key
        self._executor = executor
        # A process pool is broken for good once one worker dies (OOM killer, a
        # crash in a C extension); this makes a fresh one instead of a 451 forever.
        self._new_executor = new_executor
        self._spf_results = spf.ResultCache()

    @classmethod
    def from_config(
        cls, config: Config, sampling_key: bytes = b"", executor: Executor | None = None
    ) -> Authenticator:
        return cls(
            Resolver.from_config(config.dns), config.server.hostname, executor,
            sampling_key=sampling_key,
        )  # fmt: skip

    def close(self) -> None:
        """Stop the executor's workers once verifications in flight have finished
        (a reload retires a verifier while sessions may still be using it)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def verify(
        self, raw: bytes, envelope: Envelope, mailbox: MailboxConfig, policy: PolicyConfig
    ) -> Verdict:
        try:
            # Linear and bounded (policy.message.headerblock), but not free: beside the loop.
            block = await asyncio.to_thread(headerblock.read, raw)
        except headerblock.HeaderTooLarge as exc:
            return Verdict(
                Action.REJECT, "header_too_large", headerblock.TOO_LARGE_REPLY,
                details={"header": str(exc)},
            )  # fmt: skip
        try:
            author = read_author(block.values("from"))
        except NoAuthor as exc:
            log.info("from_malformed (%s): %s", exc.reason, exc.detail)
            return Verdict(
                Action.REJECT,
                "from_malformed",
                FROM_MALFORMED_REPLY,
                details={"from": exc.detail, "problem": exc.reason},
            )
        ip, helo = spf_origin(block.values("received"), envelope, list(policy.trusted_networks))
        try:
            checks = await self._lookups(dkim.key_names(block.fields), envelope, ip, helo, author)
        except DnsTempError as exc:
            return self._tempfail(str(exc))
        mailfrom = checks.spf[0]
        analysis = await self._analyse(raw, envelope.mail_from, checks.keys, policy)
        for method, problem in analysis.problems:
            log.info("%s permerror (malformed_input: %s)", method, problem)
        signatures = dkim.unresolved(analysis.signatures, checks.key_failures)
        message_ids = block.values("message-id")
        outcome = (
            dmarc.evaluate(
                author.domain,
                checks.discovery,
                mailfrom.result,
                mailfrom.domain,
                [s.domain for s in signatures if s.result == "pass"],
                message_ids[0] if message_ids else "",
                self.sampling_key,
            )
            if checks.discovery is not None
            else dmarc.DmarcOutcome("none", "", reason="null-sender bounce: no author domain")
        )
        # A lookup that failed defers the message only if its answer could change
        # the verdict: not once an aligned DKIM signature has passed (DMARC passes
        # whatever SPF or the other keys say). Only the MAIL FROM result counts for
        # SPF (with a null sender it is the HELO result); a HELO failure otherwise
        # is recorded as temperror.
        failures = [f"SPF: {mailfrom.explanation}"] if mailfrom.dns_failure else []
        failures += [f"DKIM key {name}: {why}" for name, why in checks.key_failures.items()]
        if failures and not outcome.dkim_aligned:
            return self._tempfail("; ".join(failures))
        results = authresults.build(
            self.authserv_id, checks.spf, signatures, analysis.arc, outcome,
            envelope.client_ip,
        )  # fmt: skip
        if author.null:
            action, reason, reply, kind = (
                Action.ACCEPT, "null_author_bounce", None, analysis.evidence.kind
            )  # fmt: skip
        else:
            action, reason, reply, kind = self._decide(
                outcome, analysis.arc, analysis.evidence, policy
            )
        details: dict[str, Any] = {
            "from_domain": author.domain,
            "author": author.address,
            "spf_ip": ip,
            "spf": [_record(c) for c in checks.spf],
            "dkim": [_record(s) for s in signatures],
            "arc": _record(analysis.arc),
            "dmarc": _record(outcome),
            "forwarding": {
                "kind": str(kind),
                "manual": list(analysis.evidence.manual),
                "native": list(analysis.evidence.native),
                # Whom a manual forward quotes or attaches (unverified), for the
                # rejection log and trace.
                "original_sender": analysis.evidence.original_sender,
            },
        }
        return Verdict(action, reason, reply, results, kind, details)

    async def _lookups(
        self, names: list[str], envelope: Envelope, ip: str, helo: str, author: Author
    ) -> _Checks:
        key_failures: dict[str, str] = {}
        try:
            async with asyncio.TaskGroup() as group:
                spf_task = group.create_task(
                    spf.check_spf(self.resolver, ip, envelope.mail_from, helo, self._spf_results)
                )
                keys_task = group.create_task(
                    dkim.fetch_keys(self.resolver, names, failed=key_failures)
                )
                dmarc_task = (
                    None
                    if author.null
                    else group.create_task(dmarc.discover(self.resolver, author.domain))
                )
        except* DnsTempError as group_error:
            raise group_error.exceptions[0] from None
        discovery = dmarc_task.result() if dmarc_task is not None else None
        return _Checks(spf_task.result(), keys_task.result(), discovery, key_failures)

    async def _analyse(
        self, raw: bytes, mail_from: str, keys: dkim.Keys, policy: PolicyConfig
    ) -> Analysis:
        loop = asyncio.get_running_loop()
        args = (raw, mail_from, keys, policy.min_dkim_key_bits)
        try:
            return await loop.run_in_executor(self._executor, analyse, *args)
        except BrokenExecutor:
            if self._new_executor is None:
                raise
            broken, self._executor = self._executor, self._new_executor()
            if broken is not None:
                broken.shutdown(wait=False)
            return await loop.run_in_executor(self._executor, analyse, *args)

    @staticmethod
    def _tempfail(why: str) -> Verdict:
        return Verdict(Action.TEMPFAIL, "dns_tempfail", DNS_TEMPFAIL_REPLY, details={"dns": why})

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
