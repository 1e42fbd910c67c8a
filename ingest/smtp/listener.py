"""The front door: decide RCPT and DATA, and answer ``250`` only when durable.

One handler serves SMTP and LMTP. Its ``handle_*`` hooks are small and return
SMTP replies; the protocol quirks (connection limits, LMTP greeting, reply
rewriting) live in ``ingest/smtp/protocol.py``. Recipients must name a configured
service address exactly: aiosmtpd's parser has already flattened source routes
and accepts ``%``-hacks, bang paths and quoted local parts, so anything that
is not an exact match is refused, and the raw argument is checked for routes.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ingest.ops.metrics import MESSAGES_ACCEPTED, count_verification
from ingest.smtp.commands import aiosmtpd_names, known_signature
from ingest.smtp.dataread import beside_loop
from ingest.smtp.refusals import Peer, RejectionLog
from ingest.smtp.reverse import confirmed_name
from ingest.smtp.stamps import new_trace_id, received_date
from policy.config.model import Config, MailboxConfig
from policy.errors import InsufficientStorage
from policy.message import headerblock
from policy.message.headers import HeaderSummary, one_line, summary_of
from policy.message.limits import Breach, check_header, check_structure
from policy.verify.authresults import strip_ours
from policy.verify.dns import Resolver
from policy.verify.verdict import ACCEPT, Action, Envelope, Verdict, Verifier
from storage.intake import GroupCommitWriter, Incoming
from storage.space import INSUFFICIENT, SpaceGuard

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Session
    from aiosmtpd.smtp import Envelope as SmtpEnvelope

log = logging.getLogger("mail.smtp")

INTERNAL_ERROR = "451 4.3.0 Internal error; please try again later"
_SAFE_TOKEN = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")


@dataclass
class Transaction:
    """Our per-transaction state, kept beside aiosmtpd's envelope."""

    mailboxes: list[MailboxConfig] = field(default_factory=list)


class ConfigHolder:
    """The configuration in force; replaced as a whole on reload."""

    def __init__(self, config: Config) -> None:
        self.current = config


class IngestHandler:
    def __init__(
        self,
        config: ConfigHolder,
        writer: GroupCommitWriter,
        rejections: RejectionLog,
        *,
        proto: str,
        verifier: Verifier | None = None,
        resolver: Resolver | None = None,
        space: SpaceGuard | None = None,
    ) -> None:
        self.config = config
        self.space = space
        self.writer = writer
        self.rejections = rejections
        self.proto = proto
        self.verifier = verifier
        self.resolver = resolver  # for the client's name in logs; replaced on reload

    def __dir__(self) -> list[str]:
        return aiosmtpd_names(type(self))

    # --- hooks ---------------------------------------------------------------

    @known_signature
    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        refusal = self._refuse_helo(session, envelope, hostname)
        if refusal is not None:
            return [refusal]
        session.host_name = hostname
        await self._lookup_name(session)
        # AUTH is for submission, which this server is not: every attempt would fail,
        # so it is not offered (aiosmtpd offers it after STARTTLS).
        offered = [r for r in responses[:-1] if not r[4:].upper().startswith("AUTH")]
        # aiosmtpd reads commands one at a time from a stream, so pipelining works;
        # RFC 2033 requires LMTP servers to say so, and both.
        return [*offered, "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: SmtpEnvelope, hostname: str
    ) -> str:
        refusal = self._refuse_helo(session, envelope, hostname)
        if refusal is not None:
            return refusal
        session.host_name = hostname
        await self._lookup_name(session)
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self._storage_low():  # before the client sends a byte of the message
            self._reject(session, envelope, "MAIL", INSUFFICIENT, "insufficient_storage",
                         rcpt=[], mail_from=address)  # fmt: skip
            return INSUFFICIENT
        if not _utf8(address):
            reply = "553 5.1.7 The sender address is not valid UTF-8"
            self._reject(session, envelope, "MAIL", reply, "invalid_sender", rcpt=[],
                         mail_from=address)  # fmt: skip
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        config = self.config.current
        transaction = _transaction(envelope)
        raw_arg: str = getattr(server, "last_rcpt_arg", "") or ""
        refusal = self._refuse_recipient(config, address, raw_arg)
        if refusal is not None:
            reply, reason = refusal
            self._reject(session, envelope, "RCPT", reply, reason, rcpt=[address])
            return reply
        mailbox = config.mailbox(address)
        assert mailbox is not None
        if any(m.key == mailbox.key for m in transaction.mailboxes):
            return "250 2.1.5 OK (duplicate recipient)"
        if len(transaction.mailboxes) >= config.server.max_recipients:
            reply = "452 4.5.3 Too many recipients; send the rest in another transaction"
            self._reject(session, envelope, "RCPT", reply, "too_many_recipients", rcpt=[address])
            return reply
        if transaction.mailboxes and config.effective_policy(
            transaction.mailboxes[0]
        ) != config.effective_policy(mailbox):
            # One DATA gets one verdict over SMTP; mailboxes with different policies
            # must not share it, so the client delivers this one separately.
            reply = "452 4.5.3 Deliver to this recipient in a separate transaction"
            self._reject(session, envelope, "RCPT", reply, "policy_split", rcpt=[address])
            return reply
        transaction.mailboxes.append(mailbox)
        envelope.rcpt_tos.append(mailbox.address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        transaction = _transaction(envelope)
        mailboxes = transaction.mailboxes
        peer = self._peer(session)
        try:
            block, summary = await beside_loop(_read, envelope.original_content or b"")
        except headerblock.HeaderTooLarge:
            reply = headerblock.TOO_LARGE_REPLY
            self._reject(session, envelope, "DATA", reply, "header_too_large",
                         rcpt=[m.address for m in mailboxes])  # fmt: skip
            return self._per_recipient(mailboxes, reply)
        data = block.raw
        smtp_envelope = Envelope(
            client_ip=peer.ip,
            client_name=peer.name,
            helo=peer.helo,
            mail_from=_mail_from(envelope),
            rcpt_tos=tuple(m.address for m in mailboxes),
            proto=peer.proto,
        )
        breach = await self._over_limits(data, summary)
        if breach is not None:
            self._reject(
                session, envelope, "DATA", breach.reply, breach.reason,
                rcpt=[m.address for m in mailboxes], headers=summary,
            )  # fmt: skip
            return self._per_recipient(mailboxes, breach.reply)
        try:
            verdict = await self._verify(block, smtp_envelope, mailboxes[0])
        except Exception:
            log.exception("verification failed")
            return self._per_recipient(mailboxes, INTERNAL_ERROR)
        count_verification(verdict.details)
        if verdict.action in (Action.REJECT, Action.TEMPFAIL):
            reply = verdict.reply or INTERNAL_ERROR
            self._reject(
                session, envelope, "DATA", reply, verdict.reason,
                rcpt=[m.address for m in mailboxes], headers=summary, auth=verdict.details,
            )  # fmt: skip
            return self._per_recipient(mailboxes, reply)
        trace_id = new_trace_id()
        # RFC 8601 5: results claiming our authserv-id from outside are forged.
        hostname = self.config.current.server.hostname
        incoming = Incoming.accepted(
            strip_ours(data, hostname),
            prefix=self._trace_headers(smtp_envelope, trace_id, verdict),
            as_sent=data,
            trace_id=trace_id,
            envelope=smtp_envelope,
            headers=summary,
            verdict=verdict,
            mailboxes=[m.key for m in mailboxes],
        )
        state, stored = incoming.state, incoming.message
        try:
            if self._storage_low():  # the volume filled while this message came in
                raise InsufficientStorage("under storage.min_free")
            await self.writer.submit(incoming)
        except InsufficientStorage:
            log.error("not accepted, the storage volume is full: trace=%s", trace_id)
            self._reject(
                session, envelope, "DATA", INSUFFICIENT, "insufficient_storage",
                rcpt=[m.address for m in mailboxes], headers=summary,
            )  # fmt: skip
            return self._per_recipient(mailboxes, INSUFFICIENT)
        except Exception as exc:
            log.error("not accepted, storage failed: %s trace=%s", exc.__class__.__name__, trace_id)
            return self._per_recipient(mailboxes, INTERNAL_ERROR)
        MESSAGES_ACCEPTED.labels(self.proto, state.value).inc()
        if log.isEnabledFor(logging.INFO):  # its arguments cost more than the test
            log.info(
                "%s: accepted from %s[%s] from=<%s> to=%s size=%d msgid=<%s> state=%s",
                trace_id, peer.name or "unknown", peer.ip, stored["mail_from"],
                ",".join(f"<{a}>" for a in stored["rcpt_tos"]), stored["size"],
                summary.message_id or "", state.value,
            )  # fmt: skip
        return self._per_recipient(mailboxes, f"250 2.0.0 Ok: queued as {trace_id}")

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default is "500 Error: (Exception) text": a permanent bounce
        # that also leaks internals. Nothing was accepted, so ask for a retry.
        log.error("internal error in session: %s", error.__class__.__name__, exc_info=error)
        return INTERNAL_ERROR

    def protocol_refusal(
        self,
        session: Session | None,
        envelope: SmtpEnvelope | None,
        stage: str,
        reply: str,
        reason: str,
    ) -> None:
        """Record a refusal aiosmtpd made itself (size, line length)."""
        if session is None or envelope is None:
            return
        self._reject(session, envelope, stage, reply, reason, rcpt=list(envelope.rcpt_tos))

    # --- decisions -----------------------------------------------------------

    def _refuse_helo(self, session: Session, envelope: SmtpEnvelope, hostname: str) -> str | None:
        if _utf8(hostname):
            return None
        reply = "501 5.5.2 The HELO/EHLO name is not valid UTF-8"
        self._reject(session, envelope, "HELO", reply, "invalid_helo", rcpt=[], helo=hostname)
        return reply

    @staticmethod
    def _refuse_recipient(config: Config, address: str, raw_arg: str) -> tuple[str, str] | None:
        if not _utf8(address):
            return "553 5.1.3 The recipient address is not valid UTF-8", "invalid_recipient"
        shown = one_line(address, 320)
        argument = raw_arg.strip()
        if argument[:3].upper() == "TO:":
            argument = argument[3:]
        route = argument.lstrip().lstrip("<").lstrip()
        if route.startswith("@"):
            return (
                f"550 5.1.1 <{shown}>: source routes are not accepted; relaying denied",
                "relay_denied",
            )
        if config.mailbox(address) is not None:
            return None
        local, _, domain = address.rpartition("@")
        domains = {m.key.rpartition("@")[2] for m in config.mailboxes}
        if any(c in local for c in '%!"@') or domain.lower() not in domains:
            return (
                f"550 5.1.1 <{shown}>: relaying denied; this server accepts mail only for "
                "its service mailboxes",
                "relay_denied",
            )
        base = local.split("+", 1)[0]
        if base != local and config.mailbox(f"{base}@{domain}") is not None:
            return (
                f"550 5.1.1 <{shown}>: aliases and sub-addresses are not supported; "
                f"send to {base}@{domain}",
                "alias_not_supported",
            )
        return f"550 5.1.1 <{shown}>: no such service mailbox here", "unknown_mailbox"

    async def _over_limits(self, data: bytes, summary: HeaderSummary) -> Breach | None:
        """Mail that would cost the batch more than ``limits`` allow is refused now."""
        limits = self.config.current.limits
        header = check_header(summary.fields, limits)
        if header is not None:
            return header
        return await beside_loop(check_structure, data, limits)

    async def _verify(
        self, block: headerblock.HeaderBlock, envelope: Envelope, mailbox: MailboxConfig
    ) -> Verdict:
        if self.verifier is None:
            return ACCEPT
        policy = self.config.current.effective_policy(mailbox)
        return await self.verifier.verify(block.raw, envelope, mailbox, policy, block=block)

    # --- helpers -------------------------------------------------------------

    def _storage_low(self) -> bool:
        space = self.space.space() if self.space is not None else None
        if space is None or not space.low:
            return False
        log.warning("refusing mail: %s", space.describe())
        return True

    def _per_recipient(self, mailboxes: list[MailboxConfig], reply: str) -> str:
        """LMTP answers once per accepted recipient (RFC 2033); SMTP once."""
        if self.proto != "LMTP":
            return reply
        return "\r\n".join(reply for _ in mailboxes)

    def _trace_headers(self, envelope: Envelope, trace_id: str, verdict: Verdict) -> bytes:
        hostname = self.config.current.server.hostname
        helo = _SAFE_TOKEN.sub("?", envelope.helo)[:255] or "unknown"
        name = _SAFE_TOKEN.sub("?", envelope.client_name or "unknown")
        recipient = f"\r\n\tfor <{envelope.rcpt_tos[0]}>" if len(envelope.rcpt_tos) == 1 else ""
        received = (
            f"Received: from {helo} ({name} [{_SAFE_TOKEN.sub('?', envelope.client_ip)}])\r\n"
            f"\tby {hostname} (firstline) with {envelope.proto} id {trace_id}{recipient};\r\n"
            f"\t{received_date(int(time.time()))}\r\n"
        )
        headers = received
        if verdict.authentication_results:
            headers = f"Authentication-Results: {verdict.authentication_results}\r\n" + headers
        return headers.encode("ascii", "replace")

    async def _lookup_name(self, session: Session) -> None:
        """Name the client once per connection (EHLO may come again after STARTTLS)."""
        if self.resolver is None or hasattr(session, "reverse_name"):
            return
        name = await confirmed_name(self.resolver, self._peer(session).ip)
        setattr(session, "reverse_name", name)  # noqa: B010 - aiosmtpd's Session has no slot for it

    def _peer(self, session: Session) -> Peer:
        peer: Any = session.peer
        ip = peer[0] if isinstance(peer, tuple) else (str(peer) if peer else "unix")
        proto = self.proto if self.proto == "LMTP" or not session.extended_smtp else "ESMTP"
        return Peer(ip=ip, name=getattr(session, "reverse_name", None),
                    helo=session.host_name or "", proto=proto)  # fmt: skip

    def _reject(
        self,
        session: Session,
        envelope: SmtpEnvelope,
        stage: str,
        reply: str,
        reason: str,
        *,
        rcpt: list[str],
        headers: HeaderSummary | None = None,
        auth: dict[str, Any] | None = None,
        mail_from: str | None = None,  # at MAIL, before the envelope holds it
        helo: str | None = None,
    ) -> None:
        rcpt = [_shown(r) for r in rcpt]
        mailbox = self.config.current.mailbox(rcpt[0]) if len(rcpt) == 1 else None
        peer = self._peer(session)
        if helo is not None:
            peer = replace(peer, helo=_shown(helo))
        self.rejections.record(
            stage=stage, reply=reply, reason=reason, peer=peer,
            mail_from=_shown(_mail_from(envelope) if mail_from is None else mail_from),
            rcpt_to=rcpt, mailbox=mailbox.address if mailbox else None, headers=headers,
            authentication=auth,
        )  # fmt: skip


def _read(content: bytes) -> tuple[headerblock.HeaderBlock, HeaderSummary]:
    """One reading of the header block for everything after DATA: what is verified
    here is what is stored, scanned and made a ticket of. Linear and bounded, and
    run beside the loop: a 256 KiB header block takes a few tenths of a second."""
    block = headerblock.read(content)
    return block, summary_of(block)


def _transaction(envelope: SmtpEnvelope) -> Transaction:
    transaction: Transaction | None = getattr(envelope, "firstline", None)
    if transaction is None:
        transaction = Transaction()
        setattr(envelope, "firstline", transaction)  # noqa: B010 - aiosmtpd's Envelope has no slot for us
    return transaction


def _utf8(value: str) -> bool:
    """Whether a command argument was valid UTF-8 (aiosmtpd keeps other bytes as
    surrogate escapes, which nothing downstream can encode)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: str) -> str:
    """A command argument fit for records and logs: invalid bytes as U+FFFD."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _mail_from(envelope: SmtpEnvelope) -> str:
    value = envelope.mail_from or ""
    return "" if value == "<>" else value
