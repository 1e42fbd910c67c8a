"""The tests' own OAuth 2.0 token endpoint, over HTTPS with a trustme certificate.

A real HTTP server in a thread that implements what the relays' providers
do: the client-credentials grant (client secret, or a ``private_key_jwt``
assertion signed with the app's certificate key), the refresh-token grant
(rotating the refresh token on every use, so a reused one is refused), the
JWT-bearer grant of a Google service account, and the device authorization
grant (pending for a few polls, then approved). Tokens expire by the
endpoint's clock, which a test moves instead of sleeping. Errors come in
Microsoft's shape (``AADSTS…`` codes, ``error_codes``) or Google's.

The SMTP relay (:mod:`tests.support.relay`) asks :meth:`TokenEndpoint.check` whether
a bearer token it was given was issued here, is unexpired, and is for the
account logging in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

Flavour = Literal["microsoft", "google"]
CLIENT_ID = "00000000-1111-2222-3333-444444444444"
CLIENT_SECRET = "client-secret-value-Q8Z~"
ACCOUNT = "support@example.com"


@dataclass
class Issued:
    client_id: str
    account: str | None  # None: the app's own token, good for any mailbox it may use
    expires_at: datetime


@dataclass
class ServiceAccount:
    """A Google service account's JSON key, and the public half to verify it."""

    json_text: str
    client_email: str
    public_key: RSAKey


@dataclass
class AppCertificate:
    """An Entra app's certificate: the PEM firstline holds, the thumbprint Entra knows."""

    pem: str
    public_key: RSAKey
    x5t: str


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public(key: rsa.RSAPrivateKey) -> RSAKey:
    return RSAKey.import_key(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@dataclass
class TokenEndpoint:
    """The provider's state: clients, issued tokens, refresh tokens, device codes."""

    base_url: str = ""
    flavour: Flavour = "microsoft"
    lifetime: int = 3600
    rotate: bool = True
    offset: timedelta = timedelta(0)
    secrets: dict[str, str] = field(default_factory=lambda: {CLIENT_ID: CLIENT_SECRET})
    issued: dict[str, Issued] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> account
    device_codes: dict[str, int] = field(default_factory=dict)  # code -> polls left
    certificates: dict[str, AppCertificate] = field(default_factory=dict)
    service_accounts: dict[str, ServiceAccount] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)  # the grant of every token request
    # What this endpoint ever handed out: no log line or output may contain any of it.
    handed_out: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def device_url(self) -> str:
        return f"{self.base_url}/devicecode"

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> datetime:
        """Move the endpoint's clock; returns the new time (for the code's ``now`` too)."""
        self.offset += delta
        return self.now()

    # --- what tests set up --------------------------------------------------

    def refresh_token_for(self, account: str = ACCOUNT) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens[token] = account
        self.handed_out.append(token)
        return token

    def revoke_refresh_tokens(self) -> None:
        self.refresh_tokens.clear()

    def app_certificate(self, client_id: str = CLIENT_ID) -> AppCertificate:
        key = _rsa()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "firstline test app")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        der = certificate.public_bytes(serialization.Encoding.DER)
        thumb = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).decode().rstrip("=")
        cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        app = AppCertificate(_pem(key) + cert_pem, _public(key), thumb)
        self.certificates[client_id] = app
        return app

    def service_account(self) -> ServiceAccount:
        key = _rsa()
        email = "firstline@project.iam.gserviceaccount.com"
        data = {
            "type": "service_account",
            "client_email": email,
            "client_id": "1234567890",
            "private_key_id": "kid-1",
            "private_key": _pem(key),
            "token_uri": self.token_url,
        }
        account = ServiceAccount(json.dumps(data), email, _public(key))
        self.service_accounts[email] = account
        return account

    # --- what the relay asks ------------------------------------------------

    def check(self, token: str, account: str) -> Literal["ok", "expired", "unknown", "account"]:
        with self.lock:
            issued = self.issued.get(token)
        if issued is None:
            return "unknown"
        if issued.expires_at <= self.now():
            return "expired"
        if issued.account is not None and issued.account.lower() != account.lower():
            return "account"
        return "ok"

    # --- the grants -----------------------------------------------------------

    def error(self, status: int, error: str, code: int, text: str) -> tuple[int, dict[str, Any]]:
        if self.flavour == "google":
            return status, {"error": error, "error_description": text}
        return status, {
            "error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: 0f1e Correlation ID: 9a8b "
            f"Timestamp: {self.now():%Y-%m-%d %H:%M:%SZ}",
            "error_codes": [code],
            "trace_id": "0f1e",
            "correlation_id": "9a8b",
        }

    def _issue(self, client_id: str, account: str | None, *, refresh: bool) -> dict[str, Any]:
        token = "at-" + secrets.token_urlsafe(32)
        with self.lock:
            self.issued[token] = Issued(
                client_id, account, self.now() + timedelta(seconds=self.lifetime)
            )
            self.handed_out.append(token)
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": self.lifetime,
            "access_token": token,
        }
        if refresh and account is not None:
            answer["refresh_token"] = self.refresh_token_for(account)
        return answer

    def _verify_jwt(self, assertion: str, key: RSAKey, audience: str) -> dict[str, Any] | None:
        try:
            token = jwt.decode(assertion, key, algorithms=["RS256"])
        except (JoseError, ValueError):
            return None
        claims = dict(token.claims)
        if claims.get("aud") != audience:
            return None
        return claims

    def _in_time(self, claims: dict[str, Any]) -> bool:
        now = self.now().timestamp()
        return float(claims.get("iat", 0)) <= now + 60 and float(claims.get("exp", 0)) > now - 60

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type", "")
        self.requests.append(grant)
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._jwt_bearer(form)
        client_id = form.get("client_id", "")
        if form.get("client_assertion"):
            app = self.certificates.get(client_id)
            claims = (
                self._verify_jwt(form["client_assertion"], app.public_key, self.token_url)
                if app
                else None
            )
            if claims is None:
                return self.error(401, "invalid_client", 700027, "Client assertion failed.")
            if not self._in_time(claims):
                return self.error(
                    401,
                    "invalid_client",
                    700024,
                    "Client assertion is not within its valid time range.",
                )
        elif client_id not in self.secrets:
            return self.error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory.",
            )
        elif form.get("client_secret", self.secrets[client_id]) != self.secrets[client_id]:
            return self.error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if grant == "client_credentials":
            if form.get("scope") != "https://outlook.office365.com/.default":
                return self.error(400, "invalid_scope", 70011, "The provided scope is invalid.")
            return 200, self._issue(client_id, None, refresh=False)
        if grant == "refresh_token":
            account = self.refresh_tokens.get(form.get("refresh_token", ""))
            if account is None:
                if self.flavour == "google":
                    return 400, {
                        "error": "invalid_grant",
                        "error_description": "Token has been expired or revoked.",
                    }
                return self.error(
                    400,
                    "invalid_grant",
                    700082,
                    "The refresh token has expired due to inactivity.",
                )
            if self.rotate:
                del self.refresh_tokens[form["refresh_token"]]
            return 200, self._issue(client_id, account, refresh=self.rotate)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            left = self.device_codes.get(form.get("device_code", ""))
            if left is None:
                return self.error(400, "expired_token", 70020, "The device code has expired.")
            if left > 0:
                self.device_codes[form["device_code"]] = left - 1
                return 400, {"error": "authorization_pending", "error_description": "pending"}
            del self.device_codes[form["device_code"]]
            return 200, self._issue(client_id, ACCOUNT, refresh=True)
        return self.error(400, "unsupported_grant_type", 70003, f"grant {grant!r} unsupported.")

    def _jwt_bearer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        assertion = form.get("assertion", "")
        try:
            unverified = json.loads(
                base64.urlsafe_b64decode(assertion.split(".")[1] + "==").decode()
            )
        except (ValueError, IndexError):
            unverified = {}
        account = self.service_accounts.get(str(unverified.get("iss", "")))
        claims = (
            self._verify_jwt(assertion, account.public_key, self.token_url) if account else None
        )
        if claims is None:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if not self._in_time(claims):
            return 400, {
                "error": "invalid_grant",
                "error_description": "Invalid JWT: Token must be a short-lived token (60 "
                "minutes) and in a reasonable timeframe. Check your iat and exp values in the "
                "assertion.",
            }
        if claims.get("scope") != "https://mail.google.com/":
            return 400, {
                "error": "unauthorized_client",
                "error_description": "Client is unauthorized to retrieve access tokens using "
                "this method, or client not authorized for any of the scopes requested.",
            }
        return 200, self._issue(str(claims["iss"]), str(claims.get("sub")), refresh=False)

    def device(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") not in self.secrets:
            return self.error(400, "unauthorized_client", 700016, "Application not found.")
        code = secrets.token_urlsafe(16)
        self.device_codes[code] = 2
        return 200, {
            "device_code": code,
            "user_code": "FLT-4711",
            "verification_uri": f"{self.base_url}/device",
            "expires_in": 900,
            "interval": 0,
            "message": "To sign in, use a web browser.",
        }


def _handler(endpoint: TokenEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode()
            form = {k: v[0] for k, v in parse_qs(body).items()}
            basic = self.headers.get("Authorization", "")
            if basic.startswith("Basic "):
                user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                form.setdefault("client_id", user)
                form.setdefault("client_secret", password)
            if self.path == "/token":
                status, answer = endpoint.token(form)
            elif self.path == "/devicecode":
                status, answer = endpoint.device(form)
            else:
                status, answer = 404, {"error": "not_found"}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the request line is no one's business in a test run."""

    return Handler


@dataclass
class OAuthProvider:
    endpoint: TokenEndpoint
    ca_file: Path


def new_ca(ca_file: Path) -> trustme.CA:
    """A test CA, its certificate written where the client under test is told to trust it."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(ca_file))
    return ca


@pytest.fixture(name="provider")
def provider_fixture(tmp_path: Path) -> Iterator[OAuthProvider]:
    """Import this function into a test module to use the fixture."""
    ca_file = tmp_path / "oauth-ca.pem"
    ca = new_ca(ca_file)
    endpoint = TokenEndpoint()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(endpoint))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    endpoint.base_url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield OAuthProvider(endpoint, ca_file)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
