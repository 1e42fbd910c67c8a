"""DKIM-sign a reply with the mailbox's own key, when its config asks for it.

Many small providers relay submitted mail without signing it; a reply that
is not DKIM-aligned with the support address then fails DMARC at the
customer's provider. Signing happens at send time, over the exact bytes that
go on the wire, so a rotated key is picked up by the next retry.
"""

from __future__ import annotations

import dkim

from policy.config.sending import DkimConfig
from policy.errors import PermFail

# The headers a customer sees and threads by; signing them stops a relay
# (or anyone in between) from changing them unnoticed.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
)


class SigningFailed(PermFail):
    """The key is missing or unusable: an admin has to fix the configuration."""


def dkim_sign(raw: bytes, config: DkimConfig, address: str) -> bytes:
    """``raw`` with a DKIM-Signature header in front; the domain defaults to the address's."""
    domain = config.domain or address.rpartition("@")[2]
    try:
        key = config.key_file.read_bytes()
    except OSError as exc:
        raise SigningFailed(
            f"cannot read DKIM key file {config.key_file}: {exc.strerror}"
        ) from None
    try:
        signature = dkim.sign(
            raw,
            config.selector.encode("ascii"),
            domain.encode("ascii"),
            key,
            include_headers=list(SIGNED_HEADERS),
        )
    except dkim.DKIMException as exc:
        # The message text of dkimpy names the problem, never the key material.
        raise SigningFailed(f"DKIM signing with {config.key_file} failed: {exc}") from None
    return bytes(signature) + raw
