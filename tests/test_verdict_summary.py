"""policy.verify.verdict.summary/explain: a recorded verdict as people read it."""

from __future__ import annotations

from typing import Any

from policy.verify.verdict import explain, summary

MANUAL: dict[str, Any] = {
    "action": "reject",
    "reason": "manual_forward",
    "from_domain": "customer.example",
    "spf_ip": "203.0.113.5",
    "spf": [
        {"identity": "helo", "domain": "mx.customer.example", "result": "none", "explanation": ""},
        {"identity": "mailfrom", "domain": "customer.example", "result": "fail",
         "explanation": "SPF fail - not authorized"},
    ],
    "dkim": [],
    "arc": {"cv": "none", "reason": "Message is not ARC signed", "sealers": [], "instances": 0},
    "dmarc": {"result": "fail", "author": "customer.example", "requested": "reject",
              "policy": "reject", "record_domain": "customer.example",
              "reason": "no aligned SPF or DKIM pass"},
    "forwarding": {"kind": "manual", "native": [],
                   "manual": ["inline forward marker '---------- Forwarded message ---------'",
                              "subject prefix 'Fwd'"]},
}  # fmt: skip


def test_the_issue_s_example_line() -> None:
    assert summary(MANUAL) == (
        "spf=fail dkim=none dmarc=fail (p=reject) forwarding=manual (Gmail marker)"
    )


def test_the_original_sender_of_a_manual_forward_is_named_when_recorded() -> None:
    forwarded = {**MANUAL, "forwarding": {**MANUAL["forwarding"], "original_from": "x@y.example"}}
    assert summary(forwarded).endswith(
        "forwarding=manual (Gmail marker; original from x@y.example)"
    )
    assert (
        "forwarding",
        "manual: inline forward marker '---------- Forwarded message "
        "---------'; subject prefix 'Fwd'; original from x@y.example",
    ) in explain(forwarded)


def test_labelled_lines_carry_each_check_with_its_reason() -> None:
    lines = dict(explain(MANUAL))
    assert lines["decision"] == "reject (manual_forward)"
    assert lines["spf"] == "fail for customer.example from 203.0.113.5: SPF fail - not authorized"
    assert lines["dkim"] == "none: the message is not signed"
    assert lines["dmarc"].startswith("fail for customer.example; p=reject")


def test_signed_sealed_and_partial_verdicts() -> None:
    signed = {
        "dkim": [{"domain": "a.example", "selector": "s1", "algorithm": "rsa-sha256",
                  "result": "pass", "reason": "", "key_bits": 2048}],
        "arc": {"cv": "pass", "sealers": ["google.com"], "instances": 1, "reason": ""},
        "dmarc": {"result": "none", "author": "a.example", "record_domain": None},
    }  # fmt: skip
    assert summary(signed) == "dkim=pass (d=a.example) arc=pass (google.com) dmarc=none"
    assert ("dkim", "pass d=a.example s=s1 (rsa-sha256, 2048 bits)") in explain(signed)
    assert summary({"from": "no address"}) == "from=malformed"
    assert summary({"dns": "SPF: timeout"}) == "dns=tempfail"
    assert summary({}) == summary(None) == "not verified"
