"""Who is asking: a channel's bearer token, and the mailboxes it may see.

Tokens are compared in constant time against every channel of the
configuration in force (it may have been reloaded since the last request),
and a request without a known token never reaches a route. What a token sees
is its channel's mailboxes and nothing else; routes ask :meth:`Access.sees`
and answer 404 otherwise, exactly as for what does not exist.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from ingest.channels.api.problems import Problem
from ingest.ops.metrics import HealthCheck
from policy.config.model import ChannelConfig, Config


class Context:
    """What every request needs: the configuration in force, the store, health and metrics."""

    def __init__(
        self,
        current: Callable[[], Config],
        engine: Engine,
        health: HealthCheck | None,
        registry: CollectorRegistry | None,
    ) -> None:
        self.current = current
        self.engine = engine
        self.health = health
        self.registry = registry


class Access:
    """The channel a token belongs to, and the mailboxes it may see."""

    def __init__(self, config: Config, channel: ChannelConfig) -> None:
        self.config = config
        self.channel = channel
        self.mailboxes = {m.key for m in config.mailboxes if m.channel == channel.name}

    def sees(self, mailbox: str | None) -> bool:
        return mailbox is not None and mailbox.lower() in self.mailboxes


def _context(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


Ctx = Annotated[Context, Depends(_context)]

_bearer = HTTPBearer(auto_error=False, description="the channel's `token`")


def _access(
    context: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Access:
    config = context.current()
    if credentials is None:
        raise Problem(
            401, "unauthorized", "a channel's bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    offered = credentials.credentials.encode()
    for channel in config.channels:
        if channel.token is not None and hmac.compare_digest(
            channel.token.get_secret_value().encode(), offered
        ):
            return Access(config, channel)
    # A different text, so "I forgot the header" and "I pasted the wrong token" are told apart.
    raise Problem(
        401, "unauthorized", "the bearer token is not any channel's token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )  # fmt: skip


Auth = Annotated[Access, Depends(_access)]
