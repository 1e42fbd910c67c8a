"""Who really sent it: the verifier the listener calls after DATA.

:class:`Authenticator` implements :class:`policy.verify.verdict.Verifier`. For one
message it runs, concurrently on the event loop, SPF (pyspf in a worker
thread whose lookups come back to the loop), the DKIM/ARC key lookups and
the DMARC policy discovery, all through the one resolver handed in; the loop
itself parses only the header block. Then the RSA/ed25519 work, ARC and the
body (forwarding evidence) go to the executor handed in (in production the
process pool of :mod:`ingest.smtp.verification`, so a large message never
blocks the loop; a small one is analysed on the loop, which costs it less
than the hand-off); then DMARC and the policy decide on plain data.

The verdict itself is decided on plain data by :mod:`policy.verify.decide`,
whose docstring lists the reason codes.

The header block is read once (:mod:`policy.message.headerblock`) and the author
once (:mod:`policy.message.author`); dkimpy is handed that reading rather than
parsing the message itself, so the fields signatures are checked over are
the fields the ticket is made from. Malformed input is never our trouble: a
check that cannot read the message gives ``permerror`` for that method, the
verdict rests on the others, and one log line names the reason code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor
from dataclasses import dataclass, fields
from typing import Any

from policy.config.model import MailboxConfig, PolicyConfig
from policy.errors import DnsTempError
from policy.message import headerblock
from policy.message.author import Author, NoAuthor
from policy.message.author import read as read_author
from policy.verify import authresults, dkim, dmarc, forwarding, spf
from policy.verify.arc import ArcResult, verify_arc
from policy.verify.decide import DNS_TEMPFAIL_REPLY, FROM_MALFORMED_REPLY, decide, spf_origin
from policy.verify.dns import Resolver
from policy.verify.verdict import Action, Envelope, Verdict

log = logging.getLogger("mail.verify")

# What a message may hold to be analysed on the event loop when the verifier is
# told to (``inline``): a few hundred microseconds of work, less than handing it
# to a pool worker and back costs the loop (BENCHMARKS.md, verification).
INLINE_MAX_BYTES = 32 * 1024
INLINE_MAX_SIGNATURES = 2


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
    return analysed(headerblock.read(raw), mail_from, keys, min_key_bits)


def analysed(
    block: headerblock.HeaderBlock, mail_from: str, keys: dkim.Keys, min_key_bits: int
) -> Analysis:
    """:func:`analyse` of a message whose header block is read already (on the loop)."""
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
        evidence = forwarding.inspect(headerblock.as_message(block), mail_from)
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


def _record(value: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready dict, shallow (our results are flat)."""
    return {f.name: getattr(value, f.name) for f in fields(value)}


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
    With ``inline``, a small message (:data:`INLINE_MAX_BYTES`) has its header
    block read on the loop, and with at most :data:`INLINE_MAX_SIGNATURES`
    DKIM/ARC signature fields is analysed there too, so the loop's work per
    message stays bounded and threads and the pool get only the messages worth
    the hand-off.
    """

    def __init__(
        self,
        resolver: Resolver,
        authserv_id: str,
        executor: Executor | None = None,
        *,
        new_executor: Callable[[], Executor] | None = None,
        sampling_key: bytes = b"",
        inline: bool = False,
    ) -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id
        # Keys DMARC pct sampling (storage/keys.py): the same in every process on a store.
        self.sampling_key = sampling_key
        self._executor = executor
        # A process pool is broken for good once one worker dies (OOM killer, a
        # crash in a C extension); this makes a fresh one instead of a 451 forever.
        self._new_executor = new_executor
        self._inline = inline
        self._spf_results = spf.ResultCache()

    def close(self) -> None:
        """Stop the executor's workers once verifications in flight have finished
        (a reload retires a verifier while sessions may still be using it)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def verify(
        self,
        raw: bytes,
        envelope: Envelope,
        mailbox: MailboxConfig,
        policy: PolicyConfig,
        *,
        block: headerblock.HeaderBlock | None = None,
    ) -> Verdict:
        small = self._inline and len(raw) <= INLINE_MAX_BYTES
        try:
            # Linear and bounded (policy.message.headerblock), but not free: beside
            # the loop, unless the message is small enough that the hop costs more.
            if block is not None:
                block = headerblock.reread(block)
            elif small:
                block = headerblock.read(raw)
            else:
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
        signed = sum(1 for name, _ in block.fields if name.lower() in dkim.SIGNATURE_HEADERS)
        if small and signed <= INLINE_MAX_SIGNATURES:
            analysis = analysed(block, envelope.mail_from, checks.keys, policy.min_dkim_key_bits)
        else:
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
            action, reason, reply, kind = decide(outcome, analysis.arc, analysis.evidence, policy)
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
