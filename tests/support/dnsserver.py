"""An authoritative DNS server on a loopback port, serving zones the tests write.

Real packets over real UDP (and TCP for truncated answers), so the resolver,
its timeouts and its cache are exercised exactly as in production. Tests add
records with :meth:`DnsServer.add`, and can make a name time out (no reply at
all) or answer SERVFAIL. ``queries`` counts what actually reached the server,
which is how the cache is tested.

Usage::

    with DnsServer() as server:
        server.add("example.com", "TXT", "v=spf1 -all")
        Resolver([server.address], timeout=0.5)
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import pytest
from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSLabel, DNSRecord
from dnslib.server import DNSError, DNSHandler, DNSLogger, DNSServer

RecordValue = str | bytes | tuple[int, str] | list[str | bytes]


class _Silence(DNSError):
    """Raised by the resolver to send no reply at all (a timeout for the client)."""


class _QuietLogger(DNSLogger):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(log="-recv,-send,-request,-reply,-truncated,-data,-error")


def _txt(value: RecordValue) -> TXT:
    """One TXT record; a list is several character strings of one record."""
    if isinstance(value, list):
        return TXT([v.encode() if isinstance(v, str) else v for v in value])
    if isinstance(value, str):
        value = value.encode()
    assert isinstance(value, bytes)
    # RFC 1035 character strings are at most 255 octets; split long ones.
    return TXT([value[i : i + 255] for i in range(0, len(value), 255)] or [b""])


def _rdata(rtype: str, value: RecordValue) -> Any:
    if rtype in ("TXT", "SPF"):
        return _txt(value)
    if rtype == "A":
        return A(str(value))
    if rtype == "AAAA":
        return AAAA(str(value))
    if rtype == "MX":
        assert isinstance(value, tuple)
        return MX(value[1], value[0])
    if rtype == "PTR":
        return PTR(str(value))
    if rtype == "CNAME":
        return CNAME(str(value))
    raise ValueError(f"unsupported record type {rtype}")


def _key(name: str | DNSLabel) -> str:
    """Labels joined by dots, unescaped, so names with odd bytes still match."""
    labels = DNSLabel(name).label if isinstance(name, str) else name.label
    return b".".join(labels).decode("utf-8", "replace").lower()


class DnsServer:
    """A thread serving the zones in ``records`` on 127.0.0.1 (UDP and TCP)."""

    def __init__(self, ttl: int = 300) -> None:
        self.ttl = ttl
        self.records: dict[str, list[tuple[str, RecordValue, int]]] = {}
        # name → record types still answered (the others time out).
        self.timeouts: dict[str, frozenset[str]] = {}
        self.servfails: set[str] = set()
        self.queries: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._udp, self._tcp = self._bind()
        self.port: int = self._udp.server.server_address[1]

    def _bind(self, attempts: int = 20) -> tuple[DNSServer, DNSServer]:
        """UDP on an ephemeral port and TCP on the same number (which may be taken)."""
        for _ in range(attempts):
            udp = DNSServer(self, address="127.0.0.1", port=0, logger=_QuietLogger())
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(self, address="127.0.0.1", port=port, tcp=True,
                                logger=_QuietLogger())  # fmt: skip
            except OSError:
                udp.server.server_close()
                continue
            return udp, tcp
        raise OSError("no port free for both UDP and TCP")

    @property
    def address(self) -> str:
        """The ``host:port`` to put into ``dns.nameservers``."""
        return f"127.0.0.1:{self.port}"

    def add(self, name: str, rtype: str, value: RecordValue, ttl: int | None = None) -> None:
        with self._lock:
            self.records.setdefault(_key(name), []).append(
                (rtype.upper(), value, self.ttl if ttl is None else ttl)
            )

    def remove(self, name: str) -> None:
        with self._lock:
            self.records.pop(_key(name), None)

    def clear(self) -> None:
        with self._lock:
            self.records.clear()
            self.timeouts.clear()
            self.servfails.clear()

    def timeout(self, name: str, except_types: frozenset[str] = frozenset()) -> None:
        """Never answer questions about ``name``, except for ``except_types``."""
        self.timeouts[_key(name)] = except_types

    def servfail(self, name: str) -> None:
        self.servfails.add(_key(name))

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        """dnslib's resolver interface: build the reply for one question."""
        question = request.q
        name = _key(question.qname)
        qtype = QTYPE[question.qtype]
        with self._lock:
            self.queries[(name, qtype)] += 1
            if name in self.timeouts and qtype not in self.timeouts[name]:
                raise _Silence(f"timeout for {name}")
            reply = request.reply()
            if name in self.servfails:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            self._answer(reply, name, qtype, depth=0)
        return reply

    def _answer(self, reply: DNSRecord, name: str, qtype: str, depth: int) -> None:
        records = self.records.get(name)
        if records is None:
            if depth == 0:
                reply.header.rcode = RCODE.NXDOMAIN
            return
        matched = [r for r in records if r[0] == qtype]
        if not matched and qtype != "CNAME":
            cnames = [r for r in records if r[0] == "CNAME"]
            if cnames and depth < 8:
                _rtype, target, ttl = cnames[0]
                reply.add_answer(RR(name, QTYPE.CNAME, rdata=_rdata("CNAME", target), ttl=ttl))
                self._answer(reply, _key(str(target)), qtype, depth + 1)
                return
        for rtype, value, ttl in matched:
            reply.add_answer(RR(name, getattr(QTYPE, rtype), rdata=_rdata(rtype, value), ttl=ttl))

    def __enter__(self) -> DnsServer:
        for server in (self._udp, self._tcp):
            # A short poll interval: shutdown() waits for one poll.
            thread = threading.Thread(
                target=server.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for server in (self._udp, self._tcp):
            server.stop()
            server.server.server_close()


@pytest.fixture(name="dns_server")
def dns_server_fixture() -> Iterator[DnsServer]:
    """A running server; import this function into a test module to use it."""
    with DnsServer() as server:
        yield server
