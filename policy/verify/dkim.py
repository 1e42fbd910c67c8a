"""DKIM (RFC 6376) with dkimpy: every signature, not only the first.

Verification is split in two so that the event loop never waits on a CPU
and the CPU never waits on the network:

1. :func:`key_names` reads the ``d=``/``s=`` tags of every DKIM-Signature,
   ARC-Message-Signature and ARC-Seal (cheap header parsing) and
   :func:`fetch_keys` resolves them all concurrently through the shared,
   cached resolver. A DNS timeout or SERVFAIL raises
   :class:`policy.errors.DnsTempError` here, or is recorded per key for a
   caller that decides whether it matters (another aligned signature passing).
2. :func:`verify_dkim` (and :func:`policy.verify.arc.verify_arc`) do the RSA and
   ed25519 work with dkimpy, answering its ``dnsfunc`` from the prefetched
   keys. They are pure functions of picklable arguments, so the caller can
   run them in a process pool and use every core.

Each signature gets an RFC 8601 result: ``pass``, ``fail`` (bad signature,
body hash mismatch, key below the minimum size, rsa-sha1, unknown
algorithm), ``permerror`` (malformed signature, no key published) or
``temperror`` (the key lookup failed; see :func:`unresolved`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

import policy.verify.rsacheck  # noqa: F401 - dkimpy's RSA check and key parse, in C and cached
from policy.errors import DnsTempError
from policy.message.headerblock import HeaderBlock
from policy.verify.dns import Resolver

DkimResult = Literal["pass", "fail", "permerror", "temperror"]

SIGNATURE_HEADERS = (b"dkim-signature", b"arc-message-signature", b"arc-seal")

# Hostile input is normal input: bound the work one message can cause.
MAX_SIGNATURES = 10
MAX_KEY_NAMES = 64

# Keys fetched for one message: DNS name (with final dot) → the TXT record.
Keys = dict[str, bytes | None]


@dataclass(frozen=True)
class DkimSignature:
    domain: str
    selector: str
    algorithm: str
    result: DkimResult
    reason: str
    # The first characters of b=, which RFC 6008 uses to tell signatures apart.
    header_b: str = ""
    key_bits: int | None = None


_LINE_BREAK = re.compile(rb"\r?\n")
_SignerT = TypeVar("_SignerT", bound=dkim.DomainSigner)


def dkimpy_message(cls: type[_SignerT], block: HeaderBlock, min_key_bits: int) -> _SignerT:
    """A dkimpy verifier over our one reading of the message.

    dkimpy's own parser reads the header block differently from everything
    else (it gives up on obsolete syntax, and appending continuation lines one
    by one is quadratic), so it is handed the fields of
    :func:`policy.message.headerblock.read` and the body as its parser would have
    made it (CRLF line breaks).
    """
    verifier: _SignerT = cls(None, minkey=min_key_bits)
    verifier.headers = [[name, value] for name, value in block.fields]
    body = block.body
    if body.count(b"\n") != body.count(b"\r\n"):
        body = b"\r\n".join(_LINE_BREAK.split(body))
    verifier.body = body
    return verifier


def _tags(value: bytes) -> dict[bytes, bytes] | None:
    try:
        return dict(parse_tag_value(value))
    except InvalidTagValueList:
        return None


def _key_name(tags: dict[bytes, bytes]) -> str | None:
    selector = tags.get(b"s", b"").strip()
    domain = tags.get(b"d", b"").strip()
    if not selector or not domain:
        return None
    try:
        return (selector + b"._domainkey." + domain + b".").decode("ascii").lower()
    except UnicodeDecodeError:
        return None


def key_names(fields: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every key any signature of the message needs, without duplicates."""
    names: dict[str, None] = {}
    for name, value in fields:
        if name.lower() in SIGNATURE_HEADERS:
            tags = _tags(value)
            key = _key_name(tags) if tags is not None else None
            if key is not None:
                names[key] = None
    return list(names)[:MAX_KEY_NAMES]


def _pick_key(records: list[bytes]) -> bytes | None:
    """RFC 6376 3.6.2.2: with several TXT records, use one that is a key."""
    for record in records:
        if b"p=" in record:
            return record
    return records[0] if records else None


async def fetch_keys(
    resolver: Resolver, names: Iterable[str], failed: dict[str, str] | None = None
) -> Keys:
    """Resolve every key concurrently.

    A DnsTempError propagates, unless ``failed`` is given: then the names whose
    lookup failed are recorded there (name → why) and left out of the keys, for
    the caller to judge whether the failure could change its verdict at all.
    """
    wanted = list(names)
    answers = await asyncio.gather(
        *(resolver.txt(name) for name in wanted), return_exceptions=failed is not None
    )
    keys: Keys = {}
    for name, answer in zip(wanted, answers, strict=True):
        if isinstance(answer, DnsTempError) and failed is not None:
            failed[name] = str(answer)
        elif isinstance(answer, BaseException):
            raise answer
        else:
            keys[name] = _pick_key(answer)
    return keys


def unresolved(signatures: list[DkimSignature], failed: dict[str, str]) -> list[DkimSignature]:
    """``signatures`` with those whose key lookup failed marked ``temperror``."""
    return [
        replace(s, result="temperror", reason=f"key lookup failed: {why}")
        if (why := failed.get(f"{s.selector}._domainkey.{s.domain}.")) is not None
        else s
        for s in signatures
    ]


def dnsfunc(keys: Keys) -> Callable[..., bytes | None]:
    """dkimpy's DNS callback, answered from prefetched keys only."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return keys.get(name.decode("ascii", "replace").lower())

    return lookup


def tag_text(value: bytes, name: bytes) -> str:
    """One tag of a signature field's value, as text ("" when unreadable)."""
    return _tag(_tags(value), name)


def _tag(tags: dict[bytes, bytes] | None, name: bytes) -> str:
    value = (tags or {}).get(name, b"")
    return value.strip().decode("ascii", "replace").lower()


def _header_b(tags: dict[bytes, bytes] | None) -> str:
    value = (tags or {}).get(b"b", b"")
    return b"".join(value.split())[:8].decode("ascii", "replace")


def verify_dkim(block: HeaderBlock, keys: Keys, min_key_bits: int) -> list[DkimSignature]:
    """Verify every DKIM-Signature of the message, topmost first."""
    verifier = dkimpy_message(dkim.DKIM, block, min_key_bits)
    values = [v for n, v in verifier.headers if n.lower() == b"dkim-signature"]
    lookup = dnsfunc(keys)
    results = []
    for index, value in enumerate(values):
        tags = _tags(value)
        if index < MAX_SIGNATURES:
            result, reason, bits = _verify_one(verifier, index, tags, keys, lookup)
        else:
            result, reason, bits = "permerror", f"not verified: over {MAX_SIGNATURES}", None
        results.append(
            DkimSignature(
                _tag(tags, b"d"),
                _tag(tags, b"s"),
                _tag(tags, b"a"),
                result,
                reason,
                _header_b(tags),
                bits,
            )
        )
    return results


def _verify_one(
    verifier: dkim.DKIM,
    index: int,
    tags: dict[bytes, bytes] | None,
    keys: Keys,
    lookup: Callable[..., bytes | None],
) -> tuple[DkimResult, str, int | None]:
    if tags is None:
        return "permerror", "malformed signature", None
    if tags.get(b"a", b"").strip().lower() == b"rsa-sha1":
        # RFC 8301: rsa-sha1 signatures must not be considered valid.
        return "fail", "rsa-sha1 is not accepted (RFC 8301)", None
    key_name = _key_name(tags)
    if key_name is not None and keys.get(key_name) is None:
        return "permerror", f"no key published at {key_name}", None
    try:
        valid = verifier.verify(idx=index, dnsfunc=lookup)
    except dkim.KeyFormatError as exc:
        return "fail", f"key: {exc}", _bits(verifier)
    except dkim.ValidationError as exc:
        return "fail", str(exc), _bits(verifier)
    except dkim.DKIMException as exc:
        return "permerror", str(exc), None
    bits = _bits(verifier)
    if valid:
        return "pass", "signature verified", bits
    return "fail", "signature did not verify", bits


def _bits(verifier: dkim.DKIM) -> int | None:
    with contextlib.suppress(AttributeError, TypeError):
        return int(verifier.keysize)
    return None
