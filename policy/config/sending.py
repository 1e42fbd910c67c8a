"""How a mailbox sends agents' replies: its provider's SMTP server, the login, DKIM.

The login is the part of the file with the most rules, because providers
differ: a password beside the account, or an OAuth 2.0 token from Microsoft,
Google or a generic identity provider, each with its own endpoints, scopes
and flows. Every missing piece is named here, at ``check-config`` time, so
an admin does not learn it from the first reply that fails to go out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from policy.config.credentials import ReferencedSecret, Secret
from policy.config.section import LocatedError, Section


class DkimConfig(Section):
    """Sign replies ourselves, for providers that relay without signing."""

    selector: str = Field(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
    key_file: Path
    domain: str | None = Field(default=None, description="default: the mailbox address's domain")


MICROSOFT_APP_SCOPE = "https://outlook.office365.com/.default"
MICROSOFT_DELEGATED_SCOPE = "https://outlook.office.com/SMTP.Send offline_access"
GOOGLE_SCOPE = "https://mail.google.com/"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105
_MICROSOFT_LOGIN = "https://login.microsoftonline.com"


class SmtpAuthConfig(Section):
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
                raise LocatedError((given[0],), "only used with method: oauth2")
            return self
        if self.provider is None:
            raise LocatedError(("provider",), "oauth2 needs provider: microsoft, google or generic")
        flow = self.flow or self._default_flow()
        problem = self._missing(flow)
        if problem is not None:
            raise LocatedError(problem[0], problem[1])
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


class SmtpConfig(Section):
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
                raise LocatedError(("account",), "OAuth 2.0 needs the account to log in as")
            if self.password is not None:
                raise LocatedError(("password",), "not used with auth.method: oauth2")
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
