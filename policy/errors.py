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
        └── ConfigError          the YAML file is invalid (policy/config/loading.py)

The listeners turn any exception into ``451 4.3.0`` and log it; refusals are
verdicts, not exceptions. A bug therefore
makes the forwarder retry instead of bouncing a customer's mail for good.
"""

from __future__ import annotations


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
