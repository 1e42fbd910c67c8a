"""OAuth 2.0 tokens of the mailboxes' relays, shared by every process on the database.

One row per mailbox keeps the access token until shortly before it expires
and the refresh token (from ``firstline oauth login`` or rotated by the
provider), tagged with the digest of the configuration they were obtained
with: a changed client, secret or account makes them stale at once.

Refreshing is claimed like work is (a lease with a fencing token, taken by a
compare-and-set), so however many workers find the token expiring, one asks
the provider and the others wait for its answer; no transaction stays open
while the provider is asked, so intake never waits behind a token request.
The answer — access token and, if the provider rotated it, the new refresh
token — is written by one fenced ``UPDATE``: a rotated refresh token cannot
be lost to a second refresh racing with the old one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.lease import LeaseLost, table_of
from storage.models import OAuthToken, aware, utcnow


@dataclass(frozen=True)
class Stored:
    """A usable access token, as stored."""

    access_token: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True)
class Refresh:
    """This process may ask the provider now; ``refresh_token`` is the stored one, if any."""

    mailbox: str
    token: str
    refresh_token: str | None = field(repr=False)


def _ensure_row(session: Session, mailbox: str) -> None:
    table = table_of(OAuthToken)
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(
        insert(table).values(mailbox=mailbox, updated_at=utcnow()).on_conflict_do_nothing()
    )


def usable(
    session: Session, mailbox: str, credentials: str, valid_until: datetime
) -> Stored | None:
    """The stored access token, if made with these credentials and good past ``valid_until``."""
    row = session.get(OAuthToken, mailbox, populate_existing=True)
    if row is None or row.credentials != credentials or not row.access_token:
        return None
    if row.expires_at is None or aware(row.expires_at) <= valid_until:
        return None
    return Stored(row.access_token, aware(row.expires_at))


def begin_refresh(
    session: Session, mailbox: str, credentials: str, *, now: datetime, seconds: float
) -> Refresh | None:
    """Claim the refresh for ``seconds``; None while another process holds it."""
    _ensure_row(session, mailbox)
    token = secrets.token_hex(16)
    claimed = session.execute(
        update(OAuthToken)
        .where(
            col(OAuthToken.mailbox) == mailbox,
            or_(
                col(OAuthToken.lease_expires_at).is_(None),
                col(OAuthToken.lease_expires_at) < now,
            ),
        )
        .values(lease_token=token, lease_expires_at=now + timedelta(seconds=seconds))
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = session.get(OAuthToken, mailbox, populate_existing=True)
    assert row is not None
    stored = row.refresh_token if row.credentials == credentials else None
    return Refresh(mailbox, token, stored)


def finish_refresh(
    session: Session,
    claim: Refresh,
    credentials: str,
    *,
    access_token: str | None,
    expires_at: datetime | None,
    refresh_token: str | None,
) -> None:
    """Store what the provider answered and give the claim back (:class:`LeaseLost` if it lapsed).

    ``refresh_token`` None keeps the stored one (the provider did not rotate it).
    """
    values: dict[str, object] = {
        "credentials": credentials,
        "access_token": access_token,
        "expires_at": expires_at,
        "lease_token": None,
        "lease_expires_at": None,
        "updated_at": utcnow(),
    }
    if refresh_token is not None:
        values["refresh_token"] = refresh_token
    elif claim.refresh_token is None:
        values["refresh_token"] = None  # a token of other credentials is of no use
    done = session.execute(
        update(OAuthToken)
        .where(col(OAuthToken.mailbox) == claim.mailbox, col(OAuthToken.lease_token) == claim.token)
        .values(**values)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"the token refresh of {claim.mailbox} was taken over")


def abandon_refresh(session: Session, claim: Refresh) -> None:
    """The provider refused or could not be reached: let the next attempt try again."""
    session.execute(
        update(OAuthToken)
        .where(col(OAuthToken.mailbox) == claim.mailbox, col(OAuthToken.lease_token) == claim.token)
        .values(lease_token=None, lease_expires_at=None)
    )


def store_login(session: Session, mailbox: str, credentials: str, refresh_token: str) -> None:
    """Keep the refresh token ``firstline oauth login`` obtained; any older access token goes."""
    _ensure_row(session, mailbox)
    session.execute(
        update(OAuthToken)
        .where(col(OAuthToken.mailbox) == mailbox)
        .values(
            credentials=credentials,
            refresh_token=refresh_token,
            access_token=None,
            expires_at=None,
            updated_at=utcnow(),
        )
    )


def forget_access_token(session: Session, mailbox: str, access_token: str) -> None:
    """The server refused this token: the next attempt asks for a new one (if it is still ours)."""
    session.execute(
        update(OAuthToken)
        .where(
            and_(
                col(OAuthToken.mailbox) == mailbox,
                col(OAuthToken.access_token) == access_token,
            )
        )
        .values(access_token=None, expires_at=None)
    )
