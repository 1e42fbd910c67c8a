"""The one error tree of firstline.

Every failure is either temporary or permanent, because that is the only
distinction a sending mail server, a queue or an operator can act on::

    FirstlineError
    ├── TempFail                 4xx at SMTP time; retried later by the batch / outbox
    │   ├── StorageUnavailable   the database did not commit
    │   │   └── InsufficientStorage  … because its disk is full (452 4.3.1)
    │   ├── DnsTempError         a DNS timeout or SERVFAIL during verification
    │   └── ScannerUnavailable   the antivirus backend could not be reached
    └── PermFail                 5xx at SMTP time; 'failed' in the batch / outbox
        ├── ConfigError          the YAML file is invalid (carries every problem)
        └── PolicyRefusal        a decision to refuse: SMTP code, enhanced code,
                                 text, and the stable reason code of the rejection log

The listeners turn anything that is not a :class:`PolicyRefusal` into
``451 4.3.0`` and log it; nothing else decides SMTP replies. A bug therefore
makes the forwarder retry instead of bouncing a customer's mail for good.
"""

from __future__ import annotations

from dataclasses import dataclass


class FirstlineError(Exception):
    """Base of everything firstline raises on purpose."""


class TempFail(FirstlineError):
    """Try again later; nothing was lost and nothing was decided."""


class StorageUnavailable(TempFail):
    """The store could not commit; the message was not accepted."""


class InsufficientStorage(StorageUnavailable):
    """The storage volume is (nearly) full: ``452 4.3.1``, as Postfix answers."""


class DnsTempError(TempFail):
    """A DNS lookup timed out or failed in a way that may clear up."""


class ScannerUnavailable(TempFail):
    """The antivirus backend is away; the message waits in the queue."""


class PermFail(FirstlineError):
    """Retrying will not help."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration file, located for a human."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(PermFail):
    """The configuration file is invalid; ``problems`` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PolicyRefusal(PermFail):
    """A deliberate refusal with the exact SMTP reply to send.

    ``reason`` is the stable code written to the rejection log
    (``unknown_mailbox``, ``dmarc_reject`` …); operators grep for it.
    """

    def __init__(self, code: int, enhanced: str, text: str, reason: str) -> None:
        self.code = code
        self.enhanced = enhanced
        self.text = text
        self.reason = reason
        super().__init__(self.reply)

    @property
    def reply(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"
