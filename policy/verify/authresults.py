"""Our one RFC 8601 Authentication-Results header, and removal of forged ones.

Downstream (the helpdesk, an operator reading the raw message) trusts an
Authentication-Results header only because it carries *our* authserv-id, so
any such header arriving from outside is a forgery and is removed before we
add ours (RFC 8601 5). Headers of other authserv-ids are left alone: they
are history, and deleting them could break a signature that covers them.

Values come from hostile messages (a DKIM ``d=`` can hold anything), so
property values and comments are reduced to safe characters and the header
is folded by us, one result per line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from authres.core import AuthenticationResult, AuthenticationResultProperty

from policy.verify.arc import ArcResult
from policy.verify.dkim import DkimSignature
from policy.verify.dmarc import DmarcOutcome
from policy.verify.spf import SpfCheck

FIELD = b"Authentication-Results"
_UNSAFE_VALUE = re.compile(r"[^A-Za-z0-9._@+/=:-]")
_UNSAFE_COMMENT = re.compile(r"[^ -'*-\[\]-~]")  # printable ASCII without ( ) \
_COMMENTS = re.compile(r"\([^()]*\)")


def _value(text: str) -> str:
    return _UNSAFE_VALUE.sub("", text)[:255]


def _comment(text: str) -> str | None:
    cleaned = _UNSAFE_COMMENT.sub(" ", text).strip()[:100]
    return cleaned or None


def _result(
    method: str, result: str, comment: str | None, properties: list[tuple[str, str, str]]
) -> AuthenticationResult:
    props = [AuthenticationResultProperty(t, n, _value(v)) for t, n, v in properties if _value(v)]
    return AuthenticationResult(method, None, result, _comment(comment or ""), None, None, props)


def build(
    authserv_id: str,
    spf: Sequence[SpfCheck] = (),
    dkim: Sequence[DkimSignature] = (),
    arc: ArcResult | None = None,
    dmarc: DmarcOutcome | None = None,
    client_ip: str = "",
) -> str:
    """The header's value (without the field name), folded one result per line."""
    results = []
    for check in spf:
        prop = "mailfrom" if check.identity == "mailfrom" else "helo"
        results.append(_result("spf", check.result, None, [("smtp", prop, check.domain)]))
    for signature in dkim:
        results.append(
            _result(
                "dkim",
                signature.result,
                None if signature.result == "pass" else signature.reason,
                [
                    ("header", "d", signature.domain),
                    ("header", "s", signature.selector),
                    ("header", "a", signature.algorithm),
                    ("header", "b", signature.header_b),
                ],
            )
        )
    if not dkim:
        results.append(_result("dkim", "none", None, []))
    if arc is not None:
        sealer = f"sealed by {arc.newest_sealer}" if arc.newest_sealer else None
        results.append(_result("arc", arc.cv, sealer, [("smtp", "remote-ip", client_ip)]))
    if dmarc is not None:
        comment = f"p={dmarc.requested} dis={dmarc.policy}" if dmarc.result == "fail" else None
        results.append(_result("dmarc", dmarc.result, comment, [("header", "from", dmarc.author)]))
    # authserv_id is our validated host name; authres formats each result.
    return authserv_id + "".join(";\r\n\t" + str(r) for r in results)


def _authserv_id(value: bytes) -> str:
    text = _COMMENTS.sub(" ", value.decode("utf-8", "replace"))
    first = text.split(";", 1)[0].split()
    return first[0].lower() if first else ""


def _header_end(raw: bytes) -> int:
    """Offset of the blank line ending the header section (or len(raw))."""
    match = re.search(rb"\r?\n\r?\n", raw)
    return match.start() + len(match.group(0)) if match else len(raw)


def strip_ours(raw: bytes, authserv_id: str) -> bytes:
    """Remove every Authentication-Results field that claims ``authserv_id``."""
    end = _header_end(raw)
    head = raw[:end]
    if FIELD.lower() not in head.lower():
        return raw  # the common case: nothing to strip, and no copy of the body
    fields = re.split(rb"(?<=\n)(?=[^ \t])", head)
    ours = authserv_id.lower()
    kept = []
    for field in fields:
        name, colon, value = field.partition(b":")
        if colon and name.strip().lower() == FIELD.lower() and _authserv_id(value) == ours:
            continue
        kept.append(field)
    return b"".join(kept) + memoryview(raw)[end:]
