"""Secrets of this installation, made once and shared by every process on the store.

DMARC ``pct`` sampling hashes the Message-ID with one of these (HMAC), so a
spoofer who picks the Message-ID cannot pick being sampled out, while a
forwarder retrying after a ``451`` (same Message-ID), whichever listener it
reaches, meets the same decision. Kept in the database, not a file, because
several hosts share one PostgreSQL and must agree.
"""

from __future__ import annotations

import secrets

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import InstanceKey

DMARC_SAMPLING = "dmarc_sampling"


def instance_key(engine: Engine, name: str) -> bytes:
    """The key called ``name``, created (32 random bytes) by whoever asks first."""
    for _ in range(2):
        with Session(engine) as session, session.begin():
            found = session.get(InstanceKey, name)
            if found is not None:
                return bytes.fromhex(found.value)
        try:
            with Session(engine) as session, session.begin():
                session.add(InstanceKey(name=name, value=secrets.token_hex(32)))
        except IntegrityError:
            continue  # another process made it first: read theirs
    raise RuntimeError(f"instance key {name} could neither be read nor made")  # pragma: no cover
