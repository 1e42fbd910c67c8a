"""The client's name for the logs: forward-confirmed reverse DNS, or nothing.

A PTR record is whatever the owner of the address block says, so it is only
used when the name also resolves back to the client's address (what Postfix
calls a "verified" name); otherwise logs and rejection records say
``unknown``. The lookup is cosmetic: it has a short deadline and any failure
just leaves the name unknown, never the session.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress

import dns.reversename

from policy.errors import DnsTempError
from policy.verify.dns import Resolver

#: Never hold a greeting longer than this for a name that only decorates logs.
MAX_WAIT = 2.0
#: A hostile PTR set can be long; the first few names are plenty.
MAX_NAMES = 3


@functools.lru_cache(maxsize=4096)
def _pointer(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The PTR name of ``address`` (dnspython builds it slowly; clients come back)."""
    return str(dns.reversename.from_address(str(address)).to_text(omit_final_dot=True))


async def confirmed_name(resolver: Resolver, ip: str) -> str | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None  # a unix socket peer has no address to look up
    pointer = _pointer(address)
    family = "AAAA" if address.version == 6 else "A"
    try:
        async with asyncio.timeout(min(resolver.timeout, MAX_WAIT)):
            for name in (await resolver.resolve(pointer, "PTR"))[:MAX_NAMES]:
                assert isinstance(name, str)
                forward = await resolver.resolve(name, family)
                if any(ipaddress.ip_address(str(a)) == address for a in forward):
                    return name
    except (TimeoutError, DnsTempError, ValueError):
        return None
    return None
