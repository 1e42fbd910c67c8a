"""Ingest with full verification (SPF, DKIM, DMARC) against the bare sink.

The same load as :mod:`bench.ingest`, but every message is DKIM-signed by
the sender's domain, whose SPF (``ip4:127.0.0.1``), DMARC (``p=reject``) and
key records are served by the loopback DNS server of the tests. The server
is measured once it has started (``READY=1``: every intake process listens)
and has settled (:func:`bench.harness.settle`), after a warm-up round that
fills the resolver's cache, so the measured rounds see a warm cache as a
busy server does. Each verified message costs two SPF evaluations, one DKIM
verification (2048-bit RSA), ARC, DMARC and the forwarding checks; all must
pass for the message to count as accepted. The server runs with
``server.processes`` 1 and 2 (its default is the core count), as the ingest
bench does.
"""

from __future__ import annotations

import asyncio
import statistics

from bench.harness import (
    Measured,
    bench_config,
    free_port,
    load_average,
    measure,
    process,
    serving,
    settle,
    sink_cmd,
    workdir,
)
from bench.load import make_message, run_load
from tests.support.dnsserver import DnsServer
from tests.support.signing import Signer

ROUNDS = 3
SESSIONS, PER_SESSION, WARM_UP = 50, 40, 100


def _measure(port: int, pid: int, messages: list[bytes]) -> Measured:
    """The warm-up round, then the measured one with the CPU of ``pid``'s process tree."""

    def pick(index: int) -> bytes:
        return messages[index % len(messages)]

    asyncio.run(run_load("127.0.0.1", port, sessions=10, per_session=10, messages=pick))
    settle(pid)
    return measure(pid, lambda: asyncio.run(run_load("127.0.0.1", port, messages=pick)))


def _sink(messages: list[bytes]) -> Measured:
    port = free_port()
    with process(sink_cmd(port), port) as sink:
        return _measure(port, sink.pid, messages)


def _verified(dns: DnsServer, messages: list[bytes], processes: int) -> Measured:
    with workdir() as tmp:
        smtp, lmtp = free_port(), free_port()
        config = bench_config(
            tmp,
            smtp,
            lmtp,
            processes=processes,
            dns={"nameservers": [dns.address], "timeout": 2},
            policy={"verify_senders": True},
        )
        with serving(tmp, config, smtp) as server:
            return _measure(smtp, server.pid, messages)


def _signed_mail(dns: DnsServer) -> list[bytes]:
    """Signed messages from example.net (the load's MAIL FROM domain)."""
    dns.add("example.net", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    dns.add("_dmarc.example.net", "TXT", "v=DMARC1; p=reject")
    signer = Signer("example.net", "bench", bits=2048).publish(dns)
    return [signer.sign(make_message(i)) for i in range(SESSIONS * PER_SESSION + WARM_UP)]


PROCESSES = (1, 2)


def run() -> list[str]:
    sinks: list[Measured] = []
    verified: dict[int, list[Measured]] = {n: [] for n in PROCESSES}
    load = load_average()
    with DnsServer() as dns:
        messages = _signed_mail(dns)
        for _ in range(ROUNDS):  # interleaved, so drift on the machine hits all alike
            sinks.append(_sink(messages))
            for processes in PROCESSES:
                verified[processes].append(_verified(dns, messages, processes))
    sink_rate = statistics.median(m.result.rate for m in sinks)
    sink_cpu = statistics.median(m.cpu for m in sinks) * 1e6
    lines = [
        f"verification (signed mail; SPF, DKIM, DMARC p=reject; warm DNS cache; "
        f"median of {ROUNDS} rounds; load average before: {load})",
        f"  sink                    {sink_rate:8.0f} msg/s  server CPU {sink_cpu:5.0f} us/msg",
    ]
    for processes, measured in verified.items():
        middle = sorted(measured, key=lambda m: m.result.rate)[ROUNDS // 2].result
        cpu = statistics.median(m.cpu for m in measured) * 1e6
        name = f"verified, {processes} process{'es' if processes > 1 else ''}"
        lines.append(
            f"  {name:<23} {middle.summary()}  ratio {middle.rate / sink_rate:5.2f}  "
            f"server CPU {cpu:5.0f} us/msg"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
