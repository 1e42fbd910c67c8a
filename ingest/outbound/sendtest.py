"""The send test: try a mailbox's relay step by step, for ``smtp-test`` and the console.

Both run these same steps (connect, encryption, login, and with a recipient
MAIL, RCPT, DATA of a small test message), so a fix that makes one pass makes
the other pass. A failure is not an exception here but part of the outcome:
the step it happened in and the diagnosis from :mod:`ingest.outbound.smtpfail`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine

from ingest.outbound.compose import Sender, send_test_message, to_bytes
from ingest.outbound.oauth import Tokens
from ingest.outbound.relay import Relay, StepDone, StepObserver, deliver
from ingest.outbound.smtpfail import Diagnosis, SmtpFailure
from policy.config.model import Config, MailboxConfig
from policy.errors import PermFail


@dataclass
class SendTest:
    steps: list[StepDone] = field(default_factory=list)
    failure: Diagnosis | None = None
    error: str | None = None  # refused before talking to the server (e.g. the DKIM key)
    message_id: str | None = None
    queue_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.error is None


def find_mailbox(config: Config, name: str) -> MailboxConfig | None:
    """A mailbox by its address or its display name (case-insensitive)."""
    wanted = name.strip().lower()
    return config.mailbox(wanted) or next(
        (m for m in config.mailboxes if m.name.strip().lower() == wanted), None
    )


async def send_test(
    config: Config,
    mailbox: MailboxConfig,
    to: str | None,
    on_step: StepObserver | None = None,
    *,
    engine: Engine | None = None,
) -> SendTest:
    """Run the steps; without ``to`` stop after login. ``mailbox.smtp`` must be set.

    With OAuth 2.0 the token comes from (and is kept in) the store behind
    ``engine``, the one replies use, so a token obtained here is theirs too.
    """
    smtp = mailbox.smtp
    assert smtp is not None
    token = Tokens.shared(engine).source(mailbox.address, smtp) if smtp.oauth and engine else None
    outcome = SendTest()

    def seen(done: StepDone) -> None:
        outcome.steps.append(done)
        if on_step is not None:
            on_step(done)

    hostname = config.server.hostname
    try:
        if to is None:
            async with Relay(smtp, hostname, seen, token):
                return outcome
        outcome.message_id = f"<smtp-test.{secrets.token_hex(8)}@{hostname}>"
        sender = Sender(mailbox.name, mailbox.address)
        raw = to_bytes(send_test_message(sender, to, outcome.message_id, datetime.now(UTC)))
        delivered = await deliver(mailbox, smtp, hostname, raw, [to], seen, token)
        outcome.queue_id = delivered.queue_id
    except SmtpFailure as exc:
        outcome.failure = exc.diagnosis
    except PermFail as exc:
        outcome.error = str(exc)
    return outcome
