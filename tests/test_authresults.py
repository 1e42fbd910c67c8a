"""Our Authentication-Results header: built from results, forged copies removed."""

from __future__ import annotations

from email.parser import BytesHeaderParser

from policy.verify.arc import ArcResult
from policy.verify.authresults import build, strip_ours
from policy.verify.dkim import DkimSignature
from policy.verify.dmarc import DmarcOutcome
from policy.verify.spf import SpfCheck

ID = "mx.help.example"


def test_one_result_per_line_with_every_check() -> None:
    value = build(
        ID,
        [SpfCheck("mailfrom", "example.com", "pass", ""), SpfCheck("helo", "mx.ex", "none", "")],
        [
            DkimSignature(
                "esp.example", "s1", "rsa-sha256", "fail", "body hash mismatch", "AbC+/1=x"
            ),
            DkimSignature("example.com", "s2", "ed25519-sha256", "pass", "ok", "Zz09"),
        ],
        ArcResult("pass", "success", ("forwarder.example",)),
        DmarcOutcome("fail", "example.com", "reject", "quarantine"),
        "192.0.2.1",
    )
    lines = value.split("\r\n\t")
    assert lines == [
        "mx.help.example;",
        "spf=pass smtp.mailfrom=example.com;",
        "spf=none smtp.helo=mx.ex;",
        "dkim=fail (body hash mismatch) header.d=esp.example header.s=s1 header.a=rsa-sha256"
        ' header.b="AbC+/1=x";',
        "dkim=pass header.d=example.com header.s=s2 header.a=ed25519-sha256 header.b=Zz09;",
        "arc=pass (sealed by forwarder.example) smtp.remote-ip=192.0.2.1;",
        "dmarc=fail (p=reject dis=quarantine) header.from=example.com",
    ]
    assert build(ID).endswith("dkim=none")


def test_hostile_values_cannot_inject_header_lines() -> None:
    evil = DkimSignature(
        "evil.example\r\nX-Injected: yes", "s;1", "rsa-sha256", "fail", "bad (reason)\r\nX: y", ""
    )
    value = build(ID, [], [evil])
    assert "\n" not in value.replace("\r\n\t", "")
    assert "X-Injected" not in value.replace("evil.exampleX-Injected:yes", "")
    parsed = BytesHeaderParser().parsebytes(
        b"Authentication-Results: " + value.encode() + b"\r\n\r\n"
    )
    assert len(parsed.get_all("Authentication-Results") or []) == 1
    assert parsed.get("X-Injected") is None and parsed.get("X") is None


def test_strip_ours_removes_forgeries_and_keeps_others() -> None:
    body = b"\r\nAuthentication-Results: mx.help.example; in the body stays\r\n"
    raw = (
        b"Authentication-Results: MX.HELP.EXAMPLE; dkim=pass header.d=example.com\r\n"
        b"Received: from a by b\r\n"
        b"Authentication-Results: (forged) mx.help.example;\r\n\tdmarc=pass\r\n"
        b"Authentication-Results: mx.forwarder.example; dmarc=pass\r\n"
        b"Authentication-Results: mx.help.example.evil; dmarc=pass\r\n"
        b"Subject: hi\r\n"
    ) + body
    assert (
        strip_ours(raw, ID)
        == (
            b"Received: from a by b\r\n"
            b"Authentication-Results: mx.forwarder.example; dmarc=pass\r\n"
            b"Authentication-Results: mx.help.example.evil; dmarc=pass\r\n"
            b"Subject: hi\r\n"
        )
        + body
    )


def test_strip_ours_without_a_body_or_with_bare_newlines() -> None:
    assert strip_ours(b"Authentication-Results: mx.help.example; x\r\nA: b\r\n", ID) == b"A: b\r\n"
    assert strip_ours(b"A: b\nAuthentication-Results: mx.help.example; x\n\nbody\n", ID) == (
        b"A: b\n\nbody\n"
    )
    assert strip_ours(b"", ID) == b""
