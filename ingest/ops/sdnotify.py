"""systemd's readiness protocol (``Type=notify``), spoken over a plain datagram socket.

systemd passes ``$NOTIFY_SOCKET``: a unix socket path, or an abstract-namespace
name written with a leading ``@``. We say ``READY=1`` once the listeners are
bound (so ``systemctl start`` returns when mail can be accepted, and units
ordered after us start then), ``RELOADING=1`` with the monotonic clock in
``MONOTONIC_USEC`` (systemd since v253 requires it to match a reload to its
request) and ``READY=1`` again around a reload, and ``STOPPING=1`` when
shutting down. Without the variable (not under systemd) nothing is sent.
The protocol is one ``sendto`` per message; libsystemd's ``sd_notify`` is a
C library we would link for that alone.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("mail.app")


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other forms are not for us


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, …) as one datagram; False when not under systemd."""
    value = os.environ.get("NOTIFY_SOCKET", "")
    address = _address(value) if value else None
    if address is None:
        if value:
            log.warning("NOTIFY_SOCKET=%s is not a unix socket; systemd is not told", value)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode() + b"\n")
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", value, exc.strerror or exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def reloading() -> bool:
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the configuration")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=shutting down: finishing open sessions and commits")
