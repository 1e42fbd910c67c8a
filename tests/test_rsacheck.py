"""dkimpy's RSA check by OpenSSL answers exactly what dkimpy's own arithmetic does."""

from __future__ import annotations

import base64
import hashlib

import dkim
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from policy.verify import rsacheck
from tests.support.signing import rsa_key


class _Digest:
    """The shape dkimpy hands the check: a finished hash with a ``name``."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self._digest = hashlib.new(name, data).digest()

    def digest(self) -> bytes:
        return self._digest


def _variants(signature: bytes, modulus: int) -> list[bytes]:
    """The signature, tampered, re-lengthened and pushed out of range."""
    size = (modulus.bit_length() + 7) // 8
    value = int.from_bytes(signature, "big")
    return [
        signature,
        bytes([signature[0] ^ 1]) + signature[1:],
        signature[:-1] + bytes([signature[-1] ^ 0x80]),
        signature.lstrip(b"\x00"),
        b"\x00" + signature,
        (value + modulus).to_bytes(size + 1, "big"),
        b"",
        b"\x01",
        b"\xff" * size,
    ]


def _answer(check: object, *args: object) -> tuple[str, object]:
    try:
        return "result", check(*args)  # type: ignore[operator]
    except Exception as exc:  # dkimpy raises on a modulus too short for the digest
        return "raises", type(exc).__name__


@pytest.mark.parametrize("bits", [2048, 1024, 512, 384])
@pytest.mark.parametrize("name", ["sha256", "sha1"])
def test_openssl_agrees_with_dkimpy(bits: int, name: str) -> None:
    pem, _record = rsa_key(bits, "agree")
    key = serialization.load_pem_private_key(pem, None)
    numbers = key.public_key().public_numbers()  # type: ignore[union-attr]
    public = {"modulus": numbers.n, "publicExponent": numbers.e}
    data = b"the canonicalised header block"
    try:
        signature = key.sign(data, padding.PKCS1v15(), getattr(hashes, name.upper())())  # type: ignore[union-attr, call-arg]
    except ValueError:  # the key is too small for the digest: any bytes will do
        signature = b"\x5a" * ((numbers.n.bit_length() + 7) // 8)
    answers = []
    for candidate in _variants(signature, numbers.n):
        for signed in (data, data + b"!"):
            ours = _answer(rsacheck.rsa_verify, _Digest(name, signed), candidate, public)
            theirs = _answer(rsacheck._dkimpy_verify, _Digest(name, signed), candidate, public)
            assert ours == theirs, (candidate.hex()[:16], signed)
            answers.append(ours)
    if bits >= 1024:
        assert ("result", True) in answers and ("result", False) in answers


def test_a_key_record_is_parsed_once_and_a_new_record_anew() -> None:
    first, second = rsa_key(1024, "first")[1].encode(), rsa_key(1024, "second")[1].encode()
    name = b"sel._domainkey.example.com."
    assert rsacheck.evaluate_pk(name, first) is rsacheck.evaluate_pk(name, first)
    assert rsacheck.evaluate_pk(name, second)[0] != rsacheck.evaluate_pk(name, first)[0]


def _record(exponent: int, modulus: int) -> bytes:
    public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@pytest.mark.parametrize(
    ("exponent", "modulus", "refusal"),
    [
        (65537, (1 << 9000) | 1, "RSA key of 9001 bits, over 8192"),
        ((1 << 100) + 1, (1 << 2047) | 1, "RSA exponent over 64 bits"),
    ],
)
def test_a_key_that_would_make_one_check_cost_seconds_is_refused(
    exponent: int, modulus: int, refusal: str
) -> None:
    """The sender's DNS chooses the key; a small message is checked on the event loop."""
    with pytest.raises(dkim.KeyFormatError, match=refusal):
        rsacheck.evaluate_pk(b"big._domainkey.example.com.", _record(exponent, modulus))
    largest = _record(65537, (1 << (rsacheck.MAX_KEY_BITS - 1)) | 1)
    assert rsacheck.evaluate_pk(b"big._domainkey.example.com.", largest)[1] == 8192
