"""The configuration model: one YAML file that admins edit by hand.

Validation happens here, once, with pydantic; every problem is reported with
the YAML line it comes from, because an admin fixing a file at 3 a.m. needs
``config.yaml:14``, not a pydantic traceback. Secrets are resolved from
``${ENV}`` references or ``file:`` paths into :class:`pydantic.SecretStr`, so
they cannot leak through ``repr``, logs or ``check-config``.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from policy.errors import ConfigError, ConfigProblem

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_ENV_IN_PATH = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def resolve_secret(value: Any, info: ValidationInfo) -> Any:
    """Turn ``${NAME}`` into the environment's value and ``file:PATH`` into the file's.

    ``PATH`` may name variables too: ``file:${CREDENTIALS_DIRECTORY}/smtp-password``
    reads a credential systemd passed with ``LoadCredential=``. The error
    messages name the variable or file, never a value. Read with
    ``resolve_secrets=False`` (commands that send nothing), references stay
    unresolved: :data:`UNRESOLVED`, which no server will take for a password.
    """
    if not isinstance(value, str):
        return value
    if (info.context or {}).get("resolve_secrets") is False:
        return UNRESOLVED if _ENV_REF.match(value.strip()) or value.startswith("file:") else value
    match = _ENV_REF.match(value.strip())
    if match:
        return _env_value(match)
    if value.startswith("file:"):
        path = Path(_ENV_IN_PATH.sub(_env_value, value[len("file:") :])).expanduser()
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return value


def _env_value(match: re.Match[str]) -> str:
    name = match.group(1)
    if name not in os.environ:
        raise ValueError(f"environment variable {name} is not set")
    return os.environ[name]


# What an unresolved secret reads as: not a value anyone configured.
UNRESOLVED = "\x00unresolved secret\x00"
Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]


def _reference_only(value: Any, info: ValidationInfo) -> Any:
    """OAuth credentials are long-lived and powerful: refuse them written into the file."""
    if isinstance(value, str) and not (_ENV_REF.match(value.strip()) or value.startswith("file:")):
        raise ValueError("give this as ${ENV_VAR} or file:PATH, not the secret itself")
    return resolve_secret(value, info)


ReferencedSecret = Annotated[SecretStr, BeforeValidator(_reference_only)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Model):
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


class TlsConfig(_Model):
    """Certificate for STARTTLS on the SMTP listener (forwarding MTAs use it opportunistically)."""

    cert_file: Path
    key_file: Path


class ServerConfig(_Model):
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
    # Where serve/worker keep their pid files and reload outcomes for `firstline reload`
    # (unset: no pid files; reload with SIGHUP).
    run_dir: Path | None = None

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", value):
            raise ValueError(f"{value!r} is not a host name")
        return value


class LimitsConfig(_Model):
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


class StorageConfig(_Model):
    url: str = "sqlite:///./data/firstline.db"
    # Seconds a session waits for its commit before answering 451 (a stalled database).
    commit_timeout: float = Field(default=60, gt=0)
    # Bytes that must stay free on the SQLite database's volume, or new mail gets
    # 452 4.3.1 (unset: four times server.max_message_size; 0: no check).
    min_free: int | None = Field(default=None, ge=0)


class BatchConfig(_Model):
    interval: float = Field(default=300, gt=0)
    size: int = Field(default=100, ge=1)
    lease_seconds: float = Field(default=300, gt=0)
    max_attempts: int = Field(default=3, ge=1)


class OutboxConfig(_Model):
    """Sending replies: how often to look for due ones, and how long to keep trying."""

    interval: float = Field(default=10, gt=0, description="seconds between looks")
    max_attempts: int = Field(default=8, ge=1)
    retry_seconds: float = Field(default=60, gt=0, description="first retry; doubles each time")
    max_retry_seconds: float = Field(default=3600, gt=0)
    lease_seconds: float = Field(default=600, gt=0)


class DnsConfig(_Model):
    nameservers: list[str] = Field(default_factory=list, description="host or host:port")
    timeout: float = Field(default=5.0, gt=0)


class PolicyConfig(_Model):
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


class PolicyOverride(_Model):
    """Per-mailbox policy: any field given here replaces the global one."""

    dmarc: Literal["enforce", "monitor"] | None = None
    manual_forward: Literal["reject", "accept", "quarantine"] | None = None
    trusted_arc_sealers: list[str] | None = None
    trusted_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None
    min_dkim_key_bits: int | None = Field(default=None, ge=512)


class RetentionConfig(_Model):
    days: int = Field(default=30, ge=1)


class AntivirusConfig(_Model):
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


class HttpConfig(_Model):
    listen: str | None = None


class ApiConfig(HttpConfig):
    # How helpdesks reach the API (behind a proxy, say), for the download
    # links in webhook events; without it the links are paths.
    base_url: str | None = None


_PASSWORD_HASH = re.compile(r"^\$(argon2(id|i|d)\$|2[aby]\$)")


def _hash_or_reference(value: Any, info: ValidationInfo) -> Any:
    """A password written in the file must be a hash; a plain one only via ``${ENV}``/``file:``."""
    if isinstance(value, str):
        reference = _ENV_REF.match(value.strip()) or value.startswith("file:")
        if not reference and not _PASSWORD_HASH.match(value):
            raise ValueError(
                "write an argon2 or bcrypt hash (firstline console-password prints one), "
                "or a ${ENV} / file: reference"
            )
    return resolve_secret(value, info)


class ConsoleUser(_Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    password: Annotated[SecretStr, BeforeValidator(_hash_or_reference)]
    # read-only: sees every page; cannot release, delete, retry or run send tests.
    role: Literal["operator", "read-only"] = "operator"


class ConsoleConfig(_Model):
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


class LoggingConfig(_Model):
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


class ChannelConfig(_Model):
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


class DkimConfig(_Model):
    """Sign replies ourselves, for providers that relay without signing."""

    selector: str = Field(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
    key_file: Path
    domain: str | None = Field(default=None, description="default: the mailbox address's domain")


MICROSOFT_APP_SCOPE = "https://outlook.office365.com/.default"
MICROSOFT_DELEGATED_SCOPE = "https://outlook.office.com/SMTP.Send offline_access"
GOOGLE_SCOPE = "https://mail.google.com/"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105
_MICROSOFT_LOGIN = "https://login.microsoftonline.com"


class SmtpAuthConfig(_Model):
    """How the relay logs in: the password beside it, or an OAuth 2.0 access token.

    ``flow`` is ``app`` (the application's own credentials: Microsoft's client
    credentials with a secret or certificate, a Google service account with
    domain-wide delegation, a generic client-credentials grant) or
    ``delegated`` (a refresh token for the mailbox's user, from the file or
    from ``firstline oauth login``). Left out, it follows from what is given.
    """

    method: Literal["password", "oauth2"] = "password"
    provider: Literal["microsoft", "google", "generic"] | None = None
    flow: Literal["app", "delegated"] | None = None
    tenant: str | None = Field(default=None, description="Microsoft: tenant domain or id")
    client_id: str | None = None
    client_secret: ReferencedSecret | None = None
    # Microsoft: a PEM holding the app's private key and its certificate.
    certificate: ReferencedSecret | None = None
    refresh_token: ReferencedSecret | None = None
    # Google: the service account's JSON key (domain-wide delegation).
    service_account: ReferencedSecret | None = None
    subject: str | None = Field(default=None, description="Google: user to act as")
    token_url: str | None = None
    device_url: str | None = None
    scope: str | None = None
    # Trust only this CA for the token endpoint (a private identity provider).
    ca_file: Path | None = None
    timeout: float = Field(default=30, gt=0)

    @field_validator("token_url", "device_url")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError(f"{value!r} is not an https URL")
        return value

    @model_validator(mode="after")
    def _complete(self) -> SmtpAuthConfig:
        if self.method == "password":
            given = [k for k, v in self if k not in ("method", "timeout") and v is not None]
            if given:
                raise _LocatedError((given[0],), "only used with method: oauth2")
            return self
        if self.provider is None:
            raise _LocatedError(
                ("provider",), "oauth2 needs provider: microsoft, google or generic"
            )
        flow = self.flow or self._default_flow()
        problem = self._missing(flow)
        if problem is not None:
            raise _LocatedError(problem[0], problem[1])
        object.__setattr__(self, "flow", flow)
        return self

    def _default_flow(self) -> Literal["app", "delegated"]:
        if self.refresh_token is not None:
            return "delegated"
        if self.provider == "google":
            return "app" if self.service_account is not None else "delegated"
        if self.provider == "microsoft" and (self.client_secret or self.certificate):
            return "app"
        return "delegated"

    def _missing(self, flow: str) -> tuple[tuple[str, ...], str] | None:
        """The first setting this provider and flow cannot do without, and why."""
        if self.provider == "microsoft":
            if not self.tenant:
                return ("tenant",), "Microsoft needs the tenant (contoso.onmicrosoft.com or its id)"
            if not self.client_id:
                return ("client_id",), "Microsoft needs the app's client_id (Application ID)"
            if flow == "app" and not (self.client_secret or self.certificate):
                return ("client_secret",), "the app flow needs client_secret or certificate"
            if self.client_secret and self.certificate:
                return ("certificate",), "give client_secret or certificate, not both"
        elif self.provider == "google":
            if flow == "app" and self.service_account is None:
                return ("service_account",), "the app flow needs the service account's JSON key"
            if flow == "delegated" and not (self.client_id and self.client_secret):
                return (
                    "client_id",
                ), "Google's refresh-token flow needs client_id and client_secret"
            if self.service_account is not None:
                return self._service_account_problem()
        else:
            if not self.token_url:
                return ("token_url",), "a generic provider needs token_url"
            if not self.client_id:
                return ("client_id",), "a generic provider needs client_id"
            if flow == "app" and not self.client_secret:
                return ("client_secret",), "the client-credentials grant needs client_secret"
        return None

    def _service_account_problem(self) -> tuple[tuple[str, ...], str] | None:
        assert self.service_account is not None
        try:
            key = json.loads(self.service_account.get_secret_value())
        except ValueError:
            return ("service_account",), "the service account key is not JSON"
        wanted = ("client_email", "private_key", "token_uri")
        if not isinstance(key, dict) or any(not isinstance(key.get(k), str) for k in wanted):
            return ("service_account",), "the service account JSON lacks " + ", ".join(wanted)
        return None

    @property
    def endpoint(self) -> str:
        """The token endpoint."""
        if self.token_url:
            return self.token_url
        if self.provider == "microsoft":
            return f"{_MICROSOFT_LOGIN}/{self.tenant}/oauth2/v2.0/token"
        if self.service_account is not None:
            return str(json.loads(self.service_account.get_secret_value())["token_uri"])
        return GOOGLE_TOKEN_URL

    @property
    def device_endpoint(self) -> str | None:
        """The device authorization endpoint (RFC 8628), for ``firstline oauth login``."""
        if self.device_url:
            return self.device_url
        if self.provider == "microsoft":
            return f"{_MICROSOFT_LOGIN}/{self.tenant}/oauth2/v2.0/devicecode"
        return None  # Google's device sign-in does not allow the Gmail scope

    @property
    def scopes(self) -> str | None:
        if self.scope:
            return self.scope
        if self.provider == "microsoft":
            return MICROSOFT_APP_SCOPE if self.flow == "app" else MICROSOFT_DELEGATED_SCOPE
        if self.provider == "google":
            return GOOGLE_SCOPE
        return None


class SmtpConfig(_Model):
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    account: str | None = None
    password: Secret | None = None
    auth: SmtpAuthConfig = SmtpAuthConfig()
    encryption: Literal["starttls", "ssl", "none"] = "starttls"
    ca_file: Path | None = None
    timeout: float = Field(default=30, gt=0)
    dkim: DkimConfig | None = None

    @model_validator(mode="after")
    def _oauth_needs_account(self) -> SmtpConfig:
        if self.auth.method == "oauth2":
            if self.account is None:
                raise _LocatedError(("account",), "OAuth 2.0 needs the account to log in as")
            if self.password is not None:
                raise _LocatedError(("password",), "not used with auth.method: oauth2")
        return self

    @property
    def oauth(self) -> bool:
        return self.auth.method == "oauth2"

    def credentials(self) -> str:
        """A digest of everything the login depends on, to notice when an admin changed it."""
        parts = [
            self.host,
            self.account or "",
            self.password.get_secret_value() if self.password else "",
        ]
        for name, value in self.auth:
            shown = value.get_secret_value() if isinstance(value, SecretStr) else value
            parts.append(f"{name}={shown}")
        return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:32]

    @field_validator("port")
    @classmethod
    def _not_port_25(cls, value: int) -> int:
        if value == 25:
            raise ValueError(
                "port 25 is not allowed for sending: it is the server-to-server port, "
                "which providers block or do not authenticate on; use 587 (starttls) "
                "or 465 (ssl), the submission ports"
            )
        return value


class MailboxConfig(_Model):
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


class Config(_Model):
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
            raise _LocatedError(
                ("console",), "the console is served on the HTTP API: set api.listen too"
            )
        problems = cross_problems(
            [c.name for c in self.channels], [(m.channel, m.address) for m in self.mailboxes]
        )
        if problems:
            raise _LocatedError(*problems[0])
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


class _LocatedError(ValueError):
    """A cross-field error that knows which field it belongs to."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        self.loc = loc
        super().__init__(message)


# --- YAML with line numbers -------------------------------------------------


def _line_index(
    node: yaml.Node, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], int]]:
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield (*path, key.value), key.start_mark.line + 1
            for sub in _line_index(value, (*path, key.value)):
                if sub[0] != (*path, key.value):
                    yield sub
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _line_index(item, (*path, index))


def _format_path(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _nearest_line(
    lines: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]
) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def parse_config(text: str, source: str = "<memory>", *, resolve_secrets: bool = True) -> Config:
    """Validate YAML text; raise :class:`ConfigError` listing every problem.

    ``resolve_secrets=False`` is for commands that only read the database:
    they must work where the relay and webhook secrets are not available.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(exc, text, source)]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(source, 1, "", "the file must be a mapping of sections")])
    lines = dict(_line_index(node)) if node is not None else {}
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    try:
        boxes = data.get("mailboxes")
        count = len(boxes) if isinstance(boxes, list) else 0
        located = tuple(lines.get(("mailboxes", i)) for i in range(count))
        return Config.model_validate(
            {**data, "source": source, "digest": digest, "mailbox_lines": located},
            context={"resolve_secrets": resolve_secrets},
        )
    except ValidationError as exc:
        problems = []
        cross_checked = False
        for error in exc.errors():
            loc = tuple(error["loc"])
            message = error["msg"]
            ctx_error = (error.get("ctx") or {}).get("error")
            if isinstance(ctx_error, _LocatedError):
                loc = (*loc, *ctx_error.loc)
                message = str(ctx_error)
                cross_checked = True
            elif message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            if error["type"] == "extra_forbidden":
                message = "unknown setting" + _did_you_mean(loc)
            problems.append(
                ConfigProblem(source, _nearest_line(lines, loc), _format_path(loc), message)
            )
        if not cross_checked:  # the cross-section checks did not run: run them on the data
            for loc, message in _raw_cross_problems(data):
                problems.append(
                    ConfigProblem(source, _nearest_line(lines, loc), _format_path(loc), message)
                )
        problems.sort(key=lambda p: p.line or 0)  # stable: one line's problems keep their order
        raise ConfigError(problems) from None


def _raw_cross_problems(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    channels = data.get("channels") if isinstance(data.get("channels"), list) else []
    mailboxes = data.get("mailboxes") if isinstance(data.get("mailboxes"), list) else []
    return cross_problems(
        [c.get("name") for c in channels or [] if isinstance(c, dict)],
        [(m.get("channel"), m.get("address")) for m in mailboxes or [] if isinstance(m, dict)],
    )


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model whose fields may stand at ``loc`` (for suggestions), if any."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = next(
            (t for t in _types_in(field.annotation) if isinstance(t, type)
             and issubclass(t, BaseModel)), None,
        )  # fmt: skip
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _types_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    for argument in get_args(annotation):
        yield from _types_in(argument)


def _did_you_mean(loc: tuple[str | int, ...]) -> str:
    """``; did you mean 'encryption'?`` for a misspelt key (difflib's closest field)."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    names = [n for n, f in model.model_fields.items() if not f.exclude]
    close = difflib.get_close_matches(loc[-1], names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _yaml_problem(exc: yaml.YAMLError, text: str, source: str) -> ConfigProblem:
    """A YAML error at the line to look at, in words for someone who edited by hand."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if mark is not None and (problem.startswith("expected <block end>")
                             or problem == "mapping values are not allowed here"):  # fmt: skip
        lines = text.splitlines()
        here = _indent(lines[mark.line]) if mark.line < len(lines) else 0
        above = next(
            (n for n in range(mark.line - 1, -1, -1)
             if lines[n].strip() and not lines[n].lstrip().startswith("#")), None,
        )  # fmt: skip
        if above is not None and _indent(lines[above]) != here:
            return _indent_problem(lines, above, mark.line, source, problem)
    if context and context_mark is not None and context_mark.line + 1 != line:
        problem = f"{problem} ({context} at line {context_mark.line + 1})"
    return ConfigProblem(source, line, "", f"invalid YAML: {problem}")


def _indent_problem(
    lines: list[str], above: int, here: int, source: str, problem: str
) -> ConfigProblem:
    """Which of two lines is out of step: an odd indentation among even ones;
    else the first line of a block when the next one sits between it and its
    parent (the first line sets the block's indentation, so YAML only notices
    at the line after). The other line is named either way."""
    parent = next(
        (n for n in range(above - 1, -1, -1)
         if lines[n].strip() and not lines[n].lstrip().startswith("#")), None,
    )  # fmt: skip
    first_child = parent is not None and _indent(lines[parent]) < _indent(lines[above])
    spaces_above, spaces_here = _indent(lines[above]), _indent(lines[here])
    if spaces_here % 2 != spaces_above % 2:  # YAML is indented by twos: odd is out of step
        blame_above = spaces_above % 2 == 1
    else:
        blame_above = (first_child and parent is not None
                       and _indent(lines[parent]) < spaces_here < spaces_above)  # fmt: skip
    if blame_above:
        return ConfigProblem(source, above + 1, "", (
            f"invalid YAML: this line is indented by {_spaces(spaces_above)} and the next one "
            f"(line {here + 1}) by {spaces_here}: the lines of a block line up with its first"
        ))  # fmt: skip
    return ConfigProblem(source, here + 1, "", (
        f"invalid YAML: this line is indented by {_spaces(spaces_here)} but line {above + 1} "
        f"above it by {spaces_above} ({problem})"
    ))  # fmt: skip


def _spaces(count: int) -> str:
    return f"{count} space" + ("" if count == 1 else "s")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def inline_secrets(text: str, source: str = "<memory>") -> list[ConfigProblem]:
    """Secrets written into the file itself (``password: hunter2``), for a warning.

    They work, but the file then carries the secret into backups, tickets and
    version control; ``${ENV}`` and ``file:`` exist for that. The value is never
    part of the message.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    found: list[ConfigProblem] = []
    for loc, value, line in _scalars(node, ()) if node is not None else ():
        model = _model_at(loc[:-1])
        field = getattr(model, "model_fields", {}).get(loc[-1]) if model is not None else None
        if field is None or SecretStr not in set(_types_in(field.annotation)):
            continue
        if value and not _ENV_REF.match(value.strip()) and not value.startswith("file:"):
            found.append(ConfigProblem(source, line, _format_path(loc), (
                "the secret is written in the file: use ${ENV_VAR} or file:/path/to/secret "
                "so it stays out of the file, its backups and version control"
            )))  # fmt: skip
    return found


def _scalars(
    node: yaml.Node, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str, int]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(value, yaml.ScalarNode):
                yield (*path, key.value), str(value.value), value.start_mark.line + 1
            else:
                yield from _scalars(value, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _scalars(item, (*path, index))


def load_config(path: str | os.PathLike[str], *, resolve_secrets: bool = True) -> Config:
    """Read and validate a configuration file."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(source, None, "", f"cannot read: {exc.strerror}")]
        ) from None
    return parse_config(text, source, resolve_secrets=resolve_secrets)
