"""The one error tree of firstline.

Every failure is either temporary or permanent, because that is the only
distinction a sending mail server, a queue or an operator can act on. Each
class lives where it is raised (the module on the right) and joins the tree
here; ``tests/test_error_tree.py`` holds this drawing to the code::

    FirstlineError
    ├── TempFail                    try again later: nothing was lost, nothing decided
    │   ├── StorageUnavailable      the database did not commit (away, busy)
    │   │   └── InsufficientStorage     … because its disk is full
    │   ├── DnsTempError            a DNS timeout or SERVFAIL while verifying
    │   ├── ScannerUnavailable      the antivirus backend could not be asked
    │   │   └── ClamdUnavailable        clamd in particular (ingest/work/clamd.py)
    │   ├── LeaseLost               another worker owns the row now (storage/lease.py)
    │   └── SmtpTempFail            a relay's 4xx, no connection (ingest/outbound/smtpfail.py)
    ├── PermFail                    retrying fails the same way until someone acts
    │   ├── StorageRefused          the database refused the statement itself
    │   ├── SchemaMismatch          the database is not at this code's schema (storage/schema.py)
    │   ├── ConfigError             the YAML file is invalid (policy/config/loading.py)
    │   ├── HeaderTooLarge          the message's header block (policy/message/headerblock.py)
    │   ├── NoAuthor                no single author in From (policy/message/author.py)
    │   ├── InvalidReply            an agent's reply we cannot send (ingest/outbound/compose.py)
    │   ├── SigningFailed           our DKIM key is unusable (ingest/outbound/dkimsign.py)
    │   ├── SmtpPermFail            a relay's 5xx, login, TLS (ingest/outbound/smtpfail.py)
    │   ├── NotQuarantined          no such entry in quarantine (storage/quarantine.py)
    │   ├── BackupError             no backup was made (storage/backup.py)
    │   ├── IntakeFailed            an intake process died unready (ingest/ops/processes.py)
    │   ├── Problem                 an API client's error (ingest/channels/api/problems.py)
    │   ├── Refused                 a console page's 4xx (ingest/console/context.py)
    │   └── SignIn                  a console page without a session (ingest/console/context.py)
    └── SmtpFailure                 raised only as its two kinds (ingest/outbound/smtpfail.py)

(``SmtpTempFail`` and ``SmtpPermFail`` are both ``SmtpFailure``, which
carries the diagnosis that the outbox stores and the send test prints.)

How each branch is answered where it leaves the code:

- **SMTP** (``ingest/smtp/listener.py``). A ``TempFail`` is a ``4xx``:
  ``452 4.3.1`` for ``InsufficientStorage``, ``451 4.7.0`` for a DNS failure,
  ``451 4.3.0`` otherwise. The message's own ``PermFail`` (``HeaderTooLarge``,
  ``NoAuthor``) is a ``5xx`` refusal with its reason code in the rejection
  log: input never makes a ``4xx``. Refusals are verdicts, not exceptions.
  Anything else — our own ``PermFail``, a bug — answers ``451 4.3.0``
  without detail, so that a bug makes the sender retry instead of bouncing a
  customer's mail for good.
- **Batch** (``ingest/work/batch.py``). A ``TempFail`` (database errors are
  read through :func:`storage.engine.classify`) puts the entry back without
  spending an attempt; ``ScannerUnavailable`` makes the rest of the batch
  wait too. ``LeaseLost`` drops the work: the new owner does it. Anything
  else spends an attempt, and after ``batch.max_attempts`` the entry is
  ``failed`` with a ``processing_failed`` rejection record. (The batch never
  sees ``HeaderTooLarge`` or ``NoAuthor``: its parser records them as defects.)
- **Outbox** (``ingest/outbound/replies.py``). ``SmtpTempFail`` is
  ``retrying`` with backoff; ``SmtpPermFail`` and any other ``PermFail``
  (``SigningFailed``) are ``failed`` at once (a refused login ``held``);
  ``LeaseLost`` drops the attempt; a bug is retried as ``internal``.
- **HTTP API** (``ingest/channels/api``). Its problem errors are answered as
  RFC 9457 documents with their own status (``InvalidReply`` becomes ``422
  reply_refused``); anything else, a ``TempFail`` included, is ``500
  internal_error`` without detail. The console answers ``Refused`` with an
  error page of its status, ``SignIn`` with a redirect to its login page.
- **CLI** (``ingest/cli``). ``ConfigError`` (every problem with its line),
  ``SchemaMismatch``, ``IntakeFailed``, ``NotQuarantined``, ``BackupError``, a reply's
  ``InvalidReply`` and the ``SmtpFailure`` of a send test or an OAuth login
  print their message and exit ``1``; click's usage errors exit ``2``;
  anything else is a traceback and ``1``.
- **Webhooks** (``ingest/channels/webhooks.py``) are judged by the
  helpdesk's HTTP answer, not by exceptions; ``LeaseLost`` drops the attempt.
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


class StorageRefused(PermFail):
    """The database refused the statement itself (a constraint, a value, a bug of
    ours): the same write would be refused again, so it spends an attempt."""
