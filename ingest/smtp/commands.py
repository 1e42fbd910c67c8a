"""aiosmtpd's per-connection set-up and per-command parsing, done once.

aiosmtpd 1.4.6 builds a protocol's command table on every connection by
scanning ``dir()`` and ``inspect.getmembers`` of the protocol and the handler,
and parses every MAIL and RCPT path with the standard library's header parser
(defining a class on each call). For a session of one message those were a
third of the server's CPU, more than the bare aiosmtpd sink's whole session.
Here the names, the wrapped command tables, the EHLO hook's signature and
the parsed paths are kept per class and per argument, with the same results.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, TypeVar

Command = Callable[[Any, str | None], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])


def aiosmtpd_names(cls: type) -> list[str]:
    """What ``dir()`` of a protocol or handler of class ``cls`` says: only its command,
    AUTH and hook methods, which is all aiosmtpd's ``__init__`` looks for, with
    ``dir()`` and ``inspect.getmembers`` (a getattr of every attribute), on every
    connection."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = [n for n in dir(cls) if n.startswith(("smtp_", "auth_", "handle_"))]
    return names


_NAMES: dict[type, list[str]] = {}


@functools.lru_cache(maxsize=4096)
def parsed_path(arg: str, local_part_limit: int) -> tuple[str | None, str | None]:
    """The address and the rest of a MAIL or RCPT argument, as aiosmtpd's ``_getaddr``
    (1.4.6) parses it: the same few paths (a forwarder's sender, our mailboxes)
    come again and again. Bounded: at most 4096 arguments of at most a command
    line each."""
    if not arg:
        return "", ""
    parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
    try:
        address, rest = parse(arg)
    except HeaderParseError:
        return None, None
    found: str = address.addr_spec
    if local_part_limit and len(found.rpartition("@")[0]) > local_part_limit:
        return None, None
    return found, rest


def command_table(cls: type, wrap: Callable[[Command], Command]) -> dict[str, Command]:
    """``cls``'s command methods by command, each wrapped by ``wrap`` (made once per
    class; each connection binds them to itself)."""
    found = _COMMANDS.get(cls)
    if found is None:
        found = _COMMANDS[cls] = {
            name.removeprefix("smtp_"): wrap(getattr(cls, name))
            for name in aiosmtpd_names(cls)
            if name.startswith("smtp_")
        }
    return found


_COMMANDS: dict[type, dict[str, Command]] = {}


def known_signature(function: F) -> F:
    """``function`` with its signature worked out once: aiosmtpd inspects the EHLO
    hook's signature on every connection (to tell its old four-argument form)."""
    function.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    return function
