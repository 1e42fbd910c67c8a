"""The configuration model: one YAML file that admins edit by hand.

Validation happens here, once, with pydantic, so that everything past
loading can trust a :class:`Config`. What surrounds it lives beside it:
reading the YAML and pointing every problem at its line
(:mod:`policy.config.loading`), resolving secrets
(:mod:`policy.config.credentials`), and a mailbox's outgoing relay
(:mod:`policy.config.sending`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from policy.config.credentials import HashedPassword, Secret
from policy.config.section import LocatedError, Section
from policy.config.sending import SmtpConfig

_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


class Listen(Section):
    """A TCP ``host:port`` or, when it contains a ``/``, a unix socket path."""

    listen: str

    @property
    def is_unix(self) -> bool:
        return "/" in self.listen

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @field_validator("listen")
    @classmethod
    def _check(cls, value: str) -> str:
        if "/" in value:
            return value
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is neither host:port nor a unix socket path")
        return value


class TlsConfig(Section):
    """Certificate for STARTTLS on the SMTP listener (forwarding MTAs use it opportunistically)."""

    cert_file: Path
    key_file: Path


def _cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class ServerConfig(Section):
    hostname: str = Field(default_factory=socket.getfqdn)
    smtp: Listen | None = Listen(listen="127.0.0.1:2525")
    lmtp: Listen | None = Listen(listen="127.0.0.1:2424")
    max_message_size: int = Field(default=25 * 1024 * 1024, gt=0)
    max_recipients: int = Field(default=100, ge=1)
    # Strangers share max_connections, at most max_connections_per_ip each; LMTP and
    # policy.trusted_networks (our own MTA) have max_trusted_connections of their own.
    max_connections: int = Field(default=200, ge=1)
    max_connections_per_ip: int = Field(default=10, ge=1)
    max_trusted_connections: int = Field(default=100, ge=1)
    timeout: float = Field(default=300, gt=0, description="seconds a session may idle")
    max_session_seconds: float = Field(default=1800, gt=0, description="a session's lifetime")
    max_session_commands: int = Field(default=2000, ge=10)
    # When the strangers' share is full, a session slower than this (bytes per
    # second over its life: idle or trickling) is closed to make room.
    min_session_rate: float = Field(default=100, ge=0)
    tls: TlsConfig | None = None
    # Intake processes `serve` runs on the same ports (SO_REUSEPORT), each with its own
    # group-commit writer; the batch worker, outbox, webhooks and API run once, in the first.
    processes: int = Field(default_factory=_cores, ge=1, le=64)
    # The event loop of serve's processes: uvloop (auto: when installed, as it is by
    # default) spends less CPU per session than asyncio's own; asyncio for comparison.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    # Where serve/worker keep their pid files and reload outcomes for `firstline reload`
    # (unset: no pid files; reload with SIGHUP).
    run_dir: Path | None = None

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", value):
            raise ValueError(f"{value!r} is not a host name")
        return value


class LimitsConfig(Section):
    """What one message may cost: bounds that keep work per message small and linear.

    Mail over a header limit is refused at DATA (``5xx`` with a reason code);
    what the batch meets beyond the others (mail queued before a change, or
    from a trusted hop) is cut there and recorded as a defect of the ticket.
    """

    max_header_fields: int = Field(default=1000, ge=50)
    max_header_field_size: int = Field(default=64 * 1024, ge=4096, description="bytes, unfolded")
    # At most the bound of the one header reading (policy.message.headerblock): every stage
    # reads the block with that bound, so a larger setting could promise nothing.
    max_header_bytes: int = Field(
        default=256 * 1024, ge=16 * 1024, le=256 * 1024, description="whole block"
    )
    max_addresses: int = Field(default=1000, ge=100, description="From, To, Cc … together")
    max_mime_depth: int = Field(default=30, ge=5, le=100)
    max_mime_parts: int = Field(default=1000, ge=10)
    # lxml (under the text conversion) gives up at 256 levels, so the bound stays below.
    max_html_depth: int = Field(default=128, ge=16, le=200)


class StorageConfig(Section):
    url: str = "sqlite:///./data/firstline.db"
    # Seconds a session waits for its commit before answering 451 (a stalled database).
    commit_timeout: float = Field(default=60, gt=0)
    # Bytes that must stay free on the SQLite database's volume, or new mail gets
    # 452 4.3.1 (unset: four times server.max_message_size; 0: no check).
    min_free: int | None = Field(default=None, ge=0)


class BatchConfig(Section):
    interval: float = Field(default=300, gt=0)
    size: int = Field(default=500, ge=1)
    lease_seconds: float = Field(default=300, gt=0)
    max_attempts: int = Field(default=3, ge=1)


class OutboxConfig(Section):
    """Sending replies: how often to look for due ones, and how long to keep trying."""

    interval: float = Field(default=10, gt=0, description="seconds between looks")
    max_attempts: int = Field(default=8, ge=1)
    retry_seconds: float = Field(default=60, gt=0, description="first retry; doubles each time")
    max_retry_seconds: float = Field(default=3600, gt=0)
    lease_seconds: float = Field(default=600, gt=0)


class DnsConfig(Section):
    nameservers: list[str] = Field(default_factory=list, description="host or host:port")
    timeout: float = Field(default=5.0, gt=0)


class PolicyConfig(Section):
    # false only when the MTA in front of firstline already verifies senders
    # (e.g. OpenDMARC on Postfix): nothing is checked or recorded then.
    verify_senders: bool = True
    dmarc: Literal["enforce", "monitor"] = "enforce"
    manual_forward: Literal["reject", "accept", "quarantine"] = "reject"
    trusted_arc_sealers: list[str] = Field(default_factory=list)
    trusted_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list
    )
    min_dkim_key_bits: int = Field(default=1024, ge=512)


class PolicyOverride(Section):
    """Per-mailbox policy: any field given here replaces the global one."""

    dmarc: Literal["enforce", "monitor"] | None = None
    manual_forward: Literal["reject", "accept", "quarantine"] | None = None
    trusted_arc_sealers: list[str] | None = None
    trusted_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None
    min_dkim_key_bits: int | None = Field(default=None, ge=512)


class RetentionConfig(Section):
    days: int = Field(default=30, ge=1)


class AntivirusConfig(Section):
    backend: Literal["builtin", "clamd"] = "builtin"
    clamd: str | None = Field(default=None, description="host:port or unix socket path")
    timeout: float = Field(default=30, gt=0)
    on_unavailable: Literal["wait", "pass"] = "wait"
    action: Literal["quarantine", "reject"] = "quarantine"

    @field_validator("clamd")
    @classmethod
    def _clamd_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Listen(listen=value)
            except ValidationError as exc:
                raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return value

    @model_validator(mode="after")
    def _clamd_needs_address(self) -> AntivirusConfig:
        if self.backend == "clamd" and not self.clamd:
            raise ValueError("the clamd backend needs clamd: host:port or a unix socket path")
        return self


class HttpConfig(Section):
    listen: str | None = None


class ApiConfig(HttpConfig):
    # How helpdesks reach the API (behind a proxy, say), for the download
    # links in webhook events; without it the links are paths.
    base_url: str | None = None


class ConsoleUser(Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    password: HashedPassword
    # read-only: sees every page; cannot release, delete, retry or run send tests.
    role: Literal["operator", "read-only"] = "operator"


class ConsoleConfig(Section):
    """The operators' web console under /console on ``api.listen`` (off without this section)."""

    users: list[ConsoleUser] = Field(min_length=1)
    session_hours: float = Field(default=12, gt=0, description="idle sessions end after this")
    # Failed logins per client address (and per user name) in login_window seconds.
    login_attempts: int = Field(default=5, ge=1)
    login_window: float = Field(default=300, gt=0)

    @model_validator(mode="after")
    def _unique_names(self) -> ConsoleConfig:
        names = [u.name.lower() for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError("console user names must be unique")
        return self


class LoggingConfig(Section):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


EventType = Literal[
    "ticket.created",
    "ticket.message_added",
    "reply.sent",
    "reply.failed",
    "message.quarantined",
    "message.rejected",
]
# Every type but message.rejected: refusals are noise for most helpdesks, so they opt in.
DEFAULT_EVENTS: tuple[EventType, ...] = (
    "ticket.created",
    "ticket.message_added",
    "reply.sent",
    "reply.failed",
    "message.quarantined",
)
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


class ChannelConfig(Section):
    name: str = Field(min_length=1)
    type: Literal["local", "webhook"] = "local"
    url: str | None = None
    secret: Secret | None = None
    token: Secret | None = Field(default=None, description="bearer token for the HTTP API")
    events: list[EventType] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    retry_window: float = Field(
        default=3 * 24 * 3600, gt=0, description="seconds to keep retrying before dead-letter"
    )
    backoff: float = Field(default=30, gt=0, description="first retry delay; doubles each time")
    timeout: float = Field(default=10, gt=0, description="seconds to wait for the helpdesk")

    @model_validator(mode="after")
    def _webhook_needs_target(self) -> ChannelConfig:
        if self.type == "webhook" and not (self.url and self.secret):
            raise ValueError("a webhook channel needs both url and secret")
        return self

    @field_validator("url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        """Events carry customer mail: plain HTTP only to this machine."""
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
            raise ValueError("a webhook URL must be https (plain http only to localhost)")
        return value


class MailboxConfig(Section):
    channel: str
    name: str = Field(min_length=1, description="display name on replies")
    description: str = ""
    address: str
    smtp: SmtpConfig | None = None
    policy: PolicyOverride | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        if not _ADDRESS.match(value):
            raise ValueError(f"{value!r} is not an email address")
        local = value.rpartition("@")[0]
        if "+" in local:
            raise ValueError(
                "email aliases are not supported: a sub-address tag ('+') "
                "cannot be a service address"
            )
        return value

    @property
    def key(self) -> str:
        """The address as matched against RCPT TO."""
        return self.address.lower()


class Config(Section):
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    limits: LimitsConfig = LimitsConfig()
    batch: BatchConfig = BatchConfig()
    outbox: OutboxConfig = OutboxConfig()
    dns: DnsConfig = DnsConfig()
    policy: PolicyConfig = PolicyConfig()
    retention: RetentionConfig = RetentionConfig()
    antivirus: AntivirusConfig = AntivirusConfig()
    metrics: HttpConfig = HttpConfig()
    api: ApiConfig = ApiConfig()
    console: ConsoleConfig | None = None
    logging: LoggingConfig = LoggingConfig()
    channels: list[ChannelConfig] = Field(default_factory=list)
    mailboxes: list[MailboxConfig] = Field(default_factory=list)

    # Where the file came from and a digest of its bytes (for reload logs).
    source: str = Field(default="<memory>", exclude=True)
    digest: str = Field(default="", exclude=True)
    # The line of each mailbox in the file, for pages that point the admin there.
    mailbox_lines: tuple[int | None, ...] = Field(default=(), exclude=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.console is not None and not self.api.listen:
            raise LocatedError(
                ("console",), "the console is served on the HTTP API: set api.listen too"
            )
        problems = cross_problems(
            [c.name for c in self.channels], [(m.channel, m.address) for m in self.mailboxes]
        )
        if problems:
            raise LocatedError(*problems[0])
        return self

    @property
    def min_free_bytes(self) -> int:
        """Free space the storage volume must keep (``storage.min_free``)."""
        if self.storage.min_free is not None:
            return self.storage.min_free
        return 4 * self.server.max_message_size

    def mailbox(self, address: str) -> MailboxConfig | None:
        """The mailbox whose service address is exactly ``address`` (case-insensitive)."""
        for mailbox in self.mailboxes:
            if mailbox.key == address.lower():
                return mailbox
        return None

    def effective_policy(self, mailbox: MailboxConfig | None) -> PolicyConfig:
        if mailbox is None or mailbox.policy is None:
            return self.policy
        changes = mailbox.policy.model_dump(exclude_none=True)
        return self.policy.model_copy(update=changes)


def cross_problems(
    channels: list[Any], mailboxes: list[tuple[Any, Any]]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks across sections: channel names once, mailboxes on known channels, no alias.

    Plain data in, so that :func:`parse_config` can also run them when other
    fields are invalid (pydantic skips a model validator then): every problem
    is reported in one pass.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[Any] = set()
    for index, name in enumerate(channels):
        if name in seen:
            problems.append((("channels", index, "name"), f"channel {name!r} is defined twice"))
        seen.add(name)
    addresses: dict[str, int] = {}
    for index, (channel, address) in enumerate(mailboxes):
        if channel not in seen:
            problems.append((("mailboxes", index, "channel"),
                             f"channel {channel!r} is not defined under channels"))  # fmt: skip
        key = str(address).strip().lower()
        if key in addresses:
            problems.append((
                ("mailboxes", index, "address"),
                f"{str(address).strip()} is already the address of mailboxes"
                f"[{addresses[key]}]; aliases are not supported",
            ))  # fmt: skip
        addresses.setdefault(key, index)
    return problems
