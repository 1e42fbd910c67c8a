"""dkimpy's two costly steps, done in C and once per key.

dkimpy checks an RSA signature in Python (``dkim.crypto``: the modular power
is C, but the integer/byte conversions are Python loops, about 0.4 ms for a
2048-bit key) and parses the key record (tag list, base64, its own ASN.1
reader) for every signature it checks. dkimpy offers no hook for either, so
this module replaces the two module functions it calls, as
:mod:`policy.verify.spf` does for pyspf's lookups, once, at import:

* ``dkim.RSASSA_PKCS1_v1_5_verify``: OpenSSL through ``cryptography``, the
  same check (RFC 8017 8.2.2: the signature raised to ``e`` mod ``n`` equals
  the EMSA-PKCS1-v1_5 encoding of the digest). The cases where OpenSSL would
  judge differently from dkimpy's arithmetic (a signature longer than the
  modulus or not below it, a modulus too short for the digest, a key OpenSSL
  will not load, another hash) go to dkimpy's own function, so every result
  stays what dkimpy would answer;
* ``dkim.evaluate_pk``: remembered per (key name, record text). The record
  comes from the TTL-honouring resolver, so a changed record is a new entry
  and an expired one is never asked for; the memory is bounded (LRU). It also
  refuses what the sender's DNS could use to make one check cost seconds: a
  modulus over :data:`MAX_KEY_BITS` or an exponent over
  :data:`MAX_EXPONENT_BITS` (a full-size exponent turns a 17-step power into
  thousands of steps, and dkimpy's arithmetic would do it; a small message is
  checked on the event loop).

Both are pure functions of their arguments, so the replacement is safe in
every process, the verification pool's workers included.
"""

from __future__ import annotations

import functools
from typing import Any

import dkim
import dkim.crypto
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

# Keys in use at once across all senders; each entry is a few hundred bytes.
KEY_CACHE_SIZE = 4096
# RFC 8301 3.2: verifiers must handle 1024 to 4096 bits; twice that leaves room
# for the rare larger key. OpenSSL allows exponents of at most 64 bits on large
# moduli; real keys use 65537 (17 bits).
MAX_KEY_BITS = 8192
MAX_EXPONENT_BITS = 64

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
# DER DigestInfo of each digest plus the 11 bytes of padding EMSA-PKCS1-v1_5 needs at least.
_MIN_MODULUS_BYTES = {"sha256": 19 + 32 + 11, "sha1": 15 + 20 + 11}

_dkimpy_verify = dkim.crypto.RSASSA_PKCS1_v1_5_verify
_dkimpy_evaluate_pk = dkim.evaluate_pk


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _public_key(modulus: int, exponent: int) -> rsa.RSAPublicKey | None:
    try:
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None


def rsa_verify(digest: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """dkimpy's ``RSASSA_PKCS1_v1_5_verify(hash, signature, key)``, by OpenSSL."""
    modulus, exponent = public_key["modulus"], public_key["publicExponent"]
    size = (modulus.bit_length() + 7) // 8
    name = str(digest.name).lower()
    key = _public_key(modulus, exponent) if name in _HASHES else None
    if (
        key is None
        or size < _MIN_MODULUS_BYTES[name]
        or len(signature) > size
        or int.from_bytes(signature, "big") >= modulus
    ):
        return bool(_dkimpy_verify(digest, signature, public_key))
    try:
        key.verify(
            signature.rjust(size, b"\x00"),
            digest.digest(),
            padding.PKCS1v15(),
            Prehashed(_HASHES[name]()),
        )
    except InvalidSignature:
        return False
    return True


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def evaluate_pk(name: bytes, record: bytes | str | None) -> tuple[Any, Any, Any, bool]:
    """dkimpy's key-record parse, once per (name, record); errors are not kept."""
    result: tuple[Any, Any, Any, bool] = _dkimpy_evaluate_pk(name, record)
    key, bits, kind, _tlsrpt = result
    if kind == b"rsa" and bits > MAX_KEY_BITS:
        raise dkim.KeyFormatError(f"RSA key of {bits} bits, over {MAX_KEY_BITS}")
    if kind == b"rsa" and int(key["publicExponent"]).bit_length() > MAX_EXPONENT_BITS:
        raise dkim.KeyFormatError(f"RSA exponent over {MAX_EXPONENT_BITS} bits")
    return result


dkim.RSASSA_PKCS1_v1_5_verify = rsa_verify
dkim.evaluate_pk = evaluate_pk
