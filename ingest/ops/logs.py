"""Logging: one ``mail.`` logger tree, as text for people or JSON for machines.

aiosmtpd already logs to ``mail.log``; our loggers (``mail.smtp``,
``mail.reject``, ``mail.batch`` …) sit beside it, so one handler on ``mail``
catches everything a mail operator cares about. Each line names its process,
as Postfix's ``smtpd[1234]`` does: ``serve`` runs several intake processes
(``server.processes``) that log side by side.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
        )
    root = logging.getLogger("mail")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    # aiosmtpd logs every command at INFO under mail.log; that is debug noise for us.
    logging.getLogger("mail.log").setLevel(max(logging.getLevelName(level), logging.WARNING))
