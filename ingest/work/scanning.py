"""The antivirus step of the batch: one call, one :class:`ScanResult`.

The built-in scanner always runs: it is the attachment policy (executables,
macros, encrypted archives, zip bombs), which stays the same whichever
backend is configured. With ``backend: clamd`` the message then goes to
clamd as well, for signatures. If clamd cannot answer, the message waits
(:class:`~policy.errors.ScannerUnavailable` leaves it queued for the next
batch) unless ``on_unavailable: pass``, in which case it passes marked
:attr:`~policy.antivirus.Outcome.UNSCANNED` and a warning is logged.
"""

from __future__ import annotations

import asyncio
import logging

from ingest.work.clamd import ClamdClient, ClamdStatus
from policy.antivirus import Outcome, ScanResult, scan_message_bytes
from policy.config.model import AntivirusConfig
from policy.errors import ScannerUnavailable

log = logging.getLogger("mail.antivirus")


async def scan_message(
    raw: bytes, config: AntivirusConfig, builtin: ScanResult | None = None
) -> ScanResult:
    """Scan a message as received; raises ScannerUnavailable when it must wait.

    ``builtin`` is the built-in scanner's result when it already ran (the
    batch runs it in its process pool, :mod:`ingest.work.reading`).
    """
    # CPU-bound and bounded by the scanner's limits: off the event loop so the
    # listeners keep answering while a big archive is looked into.
    result = builtin if builtin is not None else await asyncio.to_thread(scan_message_bytes, raw)
    if not result.passes or config.backend == "builtin":
        return result
    assert config.clamd is not None  # the config validator requires it
    client = ClamdClient(config.clamd, config.timeout)
    try:
        reply = await client.instream(raw)
    except ScannerUnavailable as exc:
        if config.on_unavailable != "pass":
            raise
        log.warning("antivirus: passing a message unscanned (on_unavailable: pass): %s", exc)
        return ScanResult(Outcome.UNSCANNED, detail=str(exc), scanner="clamd")
    if reply.status is ClamdStatus.FOUND:
        return ScanResult(
            Outcome.INFECTED,
            reason="virus",
            signature=reply.signature,
            detail="found by clamd",
            scanner="clamd",
        )
    if reply.status is ClamdStatus.SIZE_LIMIT:
        return ScanResult(
            Outcome.BLOCKED,
            reason="scan_size_limit",
            detail=f"larger than clamd's StreamMaxLength ({len(raw)} bytes)",
            scanner="clamd",
        )
    return ScanResult(Outcome.CLEAN, scanner="builtin+clamd")
