"""Which hop SPF judges when mail is handed over locally (Postfix → LMTP)."""

from __future__ import annotations

import ipaddress

import pytest

from policy.verify.decide import spf_origin
from policy.verify.spf import check_spf
from policy.verify.verdict import Envelope

RECEIVED = [
    "from mail.customer.example (mail.customer.example [198.51.100.7]) by mx.example.com",
    "from laptop (unknown [10.0.0.5]) by mail.customer.example",
]


def envelope(ip: str) -> Envelope:
    return Envelope(ip, None, "postfix.local", "alice@customer.example", ("support@example.com",))


@pytest.mark.parametrize("peer", ["unix", "127.0.0.1", "::1"])
def test_local_peer_is_a_trusted_hop(peer: str) -> None:
    assert spf_origin(RECEIVED, envelope(peer), []) == ("198.51.100.7", "mail.customer.example")


def test_remote_peer_is_judged_itself() -> None:
    assert spf_origin(RECEIVED, envelope("203.0.113.9"), []) == ("203.0.113.9", "postfix.local")


def test_trusted_network_is_skipped() -> None:
    trusted = [ipaddress.ip_network("203.0.113.0/24")]
    origin = spf_origin(RECEIVED, envelope("203.0.113.9"), trusted)
    assert origin == ("198.51.100.7", "mail.customer.example")


async def test_no_address_at_all_is_spf_none_not_a_crash() -> None:
    ip, helo = spf_origin([], envelope("unix"), [])
    assert ip == "unix"
    mailfrom, helo_check = await check_spf(None, ip, "alice@customer.example", helo)  # type: ignore[arg-type]
    assert (mailfrom.result, mailfrom.domain) == ("none", "customer.example")
    assert helo_check.result == "none"


def test_a_forged_older_header_is_never_reached() -> None:
    """The hop our relay wrote names a host under .by; an older, forged header names
    the victim's server. SPF must judge the real hop, not the forgery."""
    received = [
        "from mail.example.by (mail.example.by [198.51.100.7]) by mx.example.com",
        "from mail.victim.example (mail.victim.example [203.0.113.9]) by forged",
    ]
    assert spf_origin(received, envelope("127.0.0.1"), []) == ("198.51.100.7", "mail.example.by")


def test_an_unreadable_trusted_hop_stops_the_walk() -> None:
    received = [
        "by mx.example.com with ESMTP; garbled",
        "from mail.victim.example (mail.victim.example [203.0.113.9]) by forged",
    ]
    assert spf_origin(received, envelope("unix"), []) == ("", "postfix.local")
