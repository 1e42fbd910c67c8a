"""OAuth 2.0 for the mailboxes' relays, against the tests' own provider and relay.

A real HTTPS token endpoint (:mod:`tests.support.oauth_server`) issues expiring
tokens by the grants Microsoft 365 and Google Workspace use; an aiosmtpd
relay (:class:`tests.support.relay.OAuthRelayHandler`) takes ``AUTH XOAUTH2`` or
``OAUTHBEARER`` only with a token that endpoint issued, and answers like
Exchange Online or Gmail when it does not. Time is moved on the endpoint's
clock and handed to the code as ``now``; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ingest.cli import main
from ingest.outbound.oauth import Tokens
from ingest.outbound.relay import Relay, StepDone
from ingest.outbound.replies import queue_reply, send_due_replies
from ingest.outbound.smtpfail import Kind, SmtpFailure, Step, token_diagnosis
from policy.config.loading import ConfigError, parse_config
from policy.config.model import Config
from policy.config.sending import SmtpConfig
from storage import oauth_tokens as stored
from storage import schema
from storage.engine import make_engine
from storage.models import OAuthToken, Ticket, WebhookEvent
from tests.support.oauth_server import ACCOUNT, CLIENT_ID, CLIENT_SECRET, OAuthProvider
from tests.support.relay import OAuthRelayHandler, Relays

SECRET_ENV = "TEST_OAUTH_CLIENT_SECRET"
SECRET_REF = "${TEST_OAUTH_CLIENT_SECRET}"
MESSAGE = b"From: support@example.com\r\nTo: customer@example.net\r\nSubject: hi\r\n\r\nHello\r\n"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/firstline.db")
    schema.prepare(engine)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def client_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)


def auth_settings(provider: OAuthProvider, kind: str, tmp_path: Path) -> dict[str, Any]:
    """The ``smtp.auth`` section for one way of getting a token."""
    endpoint = provider.endpoint
    common = {"method": "oauth2", "token_url": endpoint.token_url, "ca_file": str(provider.ca_file)}
    if kind == "microsoft-app":
        return {**common, "provider": "microsoft", "tenant": "contoso.onmicrosoft.com",
                "client_id": CLIENT_ID, "client_secret": SECRET_REF}  # fmt: skip
    if kind == "microsoft-certificate":
        pem = tmp_path / "app.pem"
        pem.write_text(endpoint.app_certificate().pem, encoding="utf-8")
        return {**common, "provider": "microsoft", "tenant": "contoso.onmicrosoft.com",
                "client_id": CLIENT_ID, "certificate": f"file:{pem}"}  # fmt: skip
    if kind == "microsoft-delegated":
        return {**common, "provider": "microsoft", "tenant": "contoso.onmicrosoft.com",
                "client_id": CLIENT_ID, "flow": "delegated",
                "device_url": endpoint.device_url}  # fmt: skip
    if kind == "google-refresh":
        token = tmp_path / "refresh-token"
        token.write_text(endpoint.refresh_token_for(ACCOUNT) + "\n", encoding="utf-8")
        return {**common, "provider": "google", "client_id": CLIENT_ID,
                "client_secret": SECRET_REF, "refresh_token": f"file:{token}"}  # fmt: skip
    if kind == "google-service-account":
        key = tmp_path / "service-account.json"
        key.write_text(endpoint.service_account().json_text, encoding="utf-8")
        return {**common, "provider": "google", "service_account": f"file:{key}"}
    raise AssertionError(kind)


def smtp_config(relays: Relays, port: int, auth: dict[str, Any], **changes: Any) -> SmtpConfig:
    values = {"host": "127.0.0.1", "port": port, "account": ACCOUNT, "encryption": "starttls",
              "ca_file": str(relays.ca_file), "timeout": 10, "auth": auth, **changes}  # fmt: skip
    return SmtpConfig.model_validate(values)


def start_relay(
    relays: Relays, provider: OAuthProvider, *, gmail: bool = False
) -> tuple[int, OAuthRelayHandler]:
    handler = OAuthRelayHandler(endpoint=provider.endpoint, gmail=gmail)
    # Exchange Online offers LOGIN and XOAUTH2; Gmail offers OAUTHBEARER too.
    exclude = () if gmail else ("OAUTHBEARER", "PLAIN")
    port, _ = relays.start("starttls", handler=handler, exclude=exclude)
    return port, handler


async def send(
    tokens: Tokens, smtp: SmtpConfig, now: Any = None, steps: list[StepDone] | None = None
) -> str:
    source = tokens.source(ACCOUNT, smtp, now)
    on_step = steps.append if steps is not None else None
    async with Relay(smtp, "firstline.test", on_step, source) as relay:
        delivered = await relay.send(ACCOUNT, ["customer@example.net"], MESSAGE)
    return delivered.reply


async def failing(tokens: Tokens, smtp: SmtpConfig, now: Any = None) -> SmtpFailure:
    with pytest.raises(SmtpFailure) as caught:
        await send(tokens, smtp, now)
    return caught.value


def assert_nothing_secret(provider: OAuthProvider, *texts: str) -> None:
    forms = [CLIENT_SECRET, *provider.endpoint.handed_out]
    for text in texts:
        for secret in forms:
            assert secret not in text


# --- tokens: first, reused, refreshed -------------------------------------------


async def test_app_token_is_fetched_once_reused_by_every_process_and_renewed_before_expiry(
    relays: Relays, provider: OAuthProvider, engine: Engine, tmp_path: Path
) -> None:
    endpoint = provider.endpoint
    port, handler = start_relay(relays, provider)
    smtp = smtp_config(relays, port, auth_settings(provider, "microsoft-app", tmp_path))
    steps: list[StepDone] = []
    now = endpoint.now()
    assert (await send(Tokens(engine), smtp, now, steps)).startswith("250 ")
    assert [s.step for s in steps][:2] == [Step.TOKEN, Step.CONNECT]
    assert steps[0].reply == "expires in 60 min"
    assert endpoint.requests == ["client_credentials"]
    assert handler.logins == [("XOAUTH2", ACCOUNT, "ok")]

    tokens = Tokens(engine)  # another process on the same database
    await send(tokens, smtp, endpoint.advance(timedelta(minutes=30)))
    await send(tokens, smtp, endpoint.now())
    assert endpoint.requests == ["client_credentials"]  # one token for all of them

    # Five minutes before it expires the token is renewed, once.
    await send(tokens, smtp, endpoint.advance(timedelta(minutes=26)))
    await send(Tokens(engine), smtp, endpoint.now())
    assert endpoint.requests == ["client_credentials"] * 2
    assert [verdict for _, _, verdict in handler.logins] == ["ok"] * 5
    assert len(handler.received) == 5


async def test_workers_finding_the_token_expired_together_ask_the_provider_once(
    relays: Relays, provider: OAuthProvider, db_url: str, tmp_path: Path
) -> None:
    engine = make_engine(db_url)
    schema.prepare(engine)
    smtp = smtp_config(relays, 587, auth_settings(provider, "microsoft-app", tmp_path))
    workers = [Tokens(engine) for _ in range(4)]
    now = provider.endpoint.now()
    got = await asyncio.gather(*(w.get(ACCOUNT, smtp, now) for w in workers for _ in range(2)))
    assert len({t.value for t in got}) == 1
    assert provider.endpoint.requests == ["client_credentials"]
    engine.dispose()


async def test_a_rotated_refresh_token_replaces_the_stored_one(
    relays: Relays, provider: OAuthProvider, db_url: str, tmp_path: Path
) -> None:
    engine = make_engine(db_url)
    schema.prepare(engine)
    endpoint = provider.endpoint
    endpoint.flavour = "google"
    port, handler = start_relay(relays, provider, gmail=True)
    smtp = smtp_config(relays, port, auth_settings(provider, "google-refresh", tmp_path))
    [first_refresh] = endpoint.refresh_tokens
    await send(Tokens(engine), smtp, endpoint.now())
    with Session(engine) as session:
        row = session.get(OAuthToken, ACCOUNT)
        assert row is not None and row.refresh_token is not None
        assert row.refresh_token != first_refresh  # the provider's new one
        assert row.refresh_token in endpoint.refresh_tokens
    # An hour on, the stored (rotated) token works; the file's one is spent.
    await send(Tokens(engine), smtp, endpoint.advance(timedelta(minutes=61)))
    assert endpoint.requests == ["refresh_token", "refresh_token"]
    assert [m for m, _, _ in handler.logins] == ["OAUTHBEARER", "OAUTHBEARER"]
    assert [v for _, _, v in handler.logins] == ["ok", "ok"]
    engine.dispose()


async def test_google_service_account_acts_as_the_mailbox(
    relays: Relays, provider: OAuthProvider, engine: Engine, tmp_path: Path
) -> None:
    endpoint = provider.endpoint
    endpoint.flavour = "google"
    port, handler = start_relay(relays, provider, gmail=True)
    smtp = smtp_config(relays, port, auth_settings(provider, "google-service-account", tmp_path))
    await send(Tokens(engine), smtp, endpoint.now())
    assert endpoint.requests == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assert handler.logins == [("OAUTHBEARER", ACCOUNT, "ok")]

    # A host whose clock is two hours off signs assertions the provider refuses.
    skewed = endpoint.now() + timedelta(hours=2)
    d = (
        await failing(Tokens(engine), smtp.model_copy(update={"account": "b@example.com"}), skewed)
    ).diagnosis
    assert (d.step, d.kind, d.temporary) == (Step.TOKEN, Kind.AUTHENTICATION, False)
    assert "Check your iat and exp values" in d.server_text
    assert "clock" in d.hint and "NTP" in d.hint


async def test_microsoft_certificate_assertion(
    relays: Relays, provider: OAuthProvider, engine: Engine, tmp_path: Path
) -> None:
    port, handler = start_relay(relays, provider)
    smtp = smtp_config(relays, port, auth_settings(provider, "microsoft-certificate", tmp_path))
    assert (await send(Tokens(engine), smtp)).startswith("250 ")
    assert handler.logins == [("XOAUTH2", ACCOUNT, "ok")]


# --- failures, in the provider's and the server's words --------------------------


async def test_a_revoked_refresh_token_says_to_sign_in_again(
    relays: Relays, provider: OAuthProvider, engine: Engine, tmp_path: Path
) -> None:
    provider.endpoint.flavour = "google"
    port, handler = start_relay(relays, provider, gmail=True)
    smtp = smtp_config(relays, port, auth_settings(provider, "google-refresh", tmp_path))
    provider.endpoint.revoke_refresh_tokens()
    d = (await failing(Tokens(engine), smtp)).diagnosis
    assert (d.step, d.kind, d.temporary) == (Step.TOKEN, Kind.AUTHENTICATION, False)
    assert d.server_text == "invalid_grant: Token has been expired or revoked."
    assert "firstline oauth login" in d.hint
    assert handler.logins == []  # no token, no connection


async def test_exchange_with_smtp_auth_disabled_says_which_switch(
    relays: Relays, provider: OAuthProvider, engine: Engine, tmp_path: Path
) -> None:
    port, handler = start_relay(relays, provider)
    handler.smtp_auth_disabled = True
    smtp = smtp_config(relays, port, auth_settings(provider, "microsoft-app", tmp_path))
    tokens = Tokens(engine)
    d = (await failing(tokens, smtp)).diagnosis
    assert (d.step, d.kind, d.code, d.temporary) == (Step.LOGIN, Kind.AUTHENTICATION, 535, False)
    assert d.server_text.startswith("535 5.7.139 Authentication unsuccessful, SmtpClient")
    assert "SmtpClientAuthenticationDisabled" in d.hint
    # The refused token is dropped: the next attempt asks for a new one.
    with Session(engine) as session:
        row = session.get(OAuthToken, ACCOUNT)
        assert row is not None and row.access_token is None
    handler.smtp_auth_disabled = False
    await send(tokens, smtp)
    assert provider.endpoint.requests == ["client_credentials"] * 2


async def test_a_token_for_another_account_is_refused_like_exchange_does(
    relays: Relays, provider: OAuthProvider, engine: Engine, tmp_path: Path
) -> None:
    endpoint = provider.endpoint
    port, handler = start_relay(relays, provider)
    auth = auth_settings(provider, "microsoft-delegated", tmp_path)
    smtp = smtp_config(relays, port, auth, account="billing@example.com")
    with Session(engine) as session, session.begin():  # as `oauth login` leaves it (for ACCOUNT)
        stored.store_login(
            session, ACCOUNT, smtp.credentials(), endpoint.refresh_token_for(ACCOUNT)
        )
    d = (await failing(Tokens(engine), smtp)).diagnosis
    assert d.server_text == "535 5.7.3 Authentication unsuccessful"
    assert "account must be the mailbox" in d.hint
    assert handler.logins == [("XOAUTH2", "billing@example.com", "account")]


async def test_a_server_without_oauth_login_is_named(
    relays: Relays, provider: OAuthProvider, engine: Engine, tmp_path: Path
) -> None:
    port, _ = relays.start("starttls")  # LOGIN and PLAIN only
    smtp = smtp_config(relays, port, auth_settings(provider, "microsoft-app", tmp_path))
    d = (await failing(Tokens(engine), smtp)).diagnosis
    assert (d.step, d.kind) == (Step.LOGIN, Kind.AUTHENTICATION)
    assert "offers no OAuth login (AUTH mechanisms: LOGIN, PLAIN)" in d.server_text


async def test_a_certificate_that_is_not_one_is_named_before_asking_anyone(
    relays: Relays, provider: OAuthProvider, engine: Engine, tmp_path: Path
) -> None:
    auth = auth_settings(provider, "microsoft-certificate", tmp_path)
    (tmp_path / "app.pem").write_text("-----BEGIN NONSENSE-----\n", encoding="utf-8")
    smtp = smtp_config(relays, 587, auth)
    d = (await failing(Tokens(engine), smtp)).diagnosis
    assert (d.step, d.kind, d.temporary) == (Step.TOKEN, Kind.AUTHENTICATION, False)
    assert d.server_text.startswith("invalid_key: ValueError")
    assert "cannot be used" in d.hint
    assert provider.endpoint.requests == []


async def test_an_unreachable_token_endpoint_is_temporary(
    relays: Relays, provider: OAuthProvider, engine: Engine, tmp_path: Path
) -> None:
    auth = {
        **auth_settings(provider, "microsoft-app", tmp_path),
        "token_url": "https://127.0.0.1:9/token",
    }
    d = (await failing(Tokens(engine), smtp_config(relays, 587, auth))).diagnosis
    assert (d.step, d.kind, d.temporary) == (Step.TOKEN, Kind.CONNECTION, True)
    assert "not reachable" in d.hint


# --- the send test and the sign-in, as an admin runs them ----------------------


def write_config(
    tmp_path: Path, relays: Relays, port: int, auth: dict[str, Any], **more: Any
) -> Path:
    smtp = {"host": "127.0.0.1", "port": port, "account": ACCOUNT, "encryption": "starttls",
            "ca_file": str(relays.ca_file), "timeout": 10, "auth": auth}  # fmt: skip
    data = {
        "server": {"hostname": "mx.firstline.test"},
        "storage": {"url": f"sqlite:///{tmp_path}/firstline.db"},
        "channels": [
            {
                "name": "helpdesk",
                "type": "webhook",
                "url": "http://127.0.0.1:9/hook",
                "secret": SECRET_REF,
            }
        ],
        "mailboxes": [
            {"channel": "helpdesk", "name": "Example Support", "address": ACCOUNT, "smtp": smtp}
        ],
        **more,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def cli(path: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "-c", str(path)], catch_exceptions=False)


def test_smtp_test_shows_the_token_step_first(
    relays: Relays, provider: OAuthProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port, _ = start_relay(relays, provider)
    path = write_config(tmp_path, relays, port, auth_settings(provider, "microsoft-app", tmp_path))
    result = cli(path, "smtp-test", ACCOUNT)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1] == "  token     microsoft app for support@example.com: ok, expires in 60 min"
    assert [line.split()[0] for line in lines[1:-1]] == [
        "token", "connect", "starttls", "starttls", "login"
    ]  # fmt: skip
    assert f"  login     as {ACCOUNT} (XOAUTH2): ok, 235 2.7.0 Authentication successful" in lines
    assert lines[-1] == "OK"
    assert_nothing_secret(provider, result.output, caplog.text)


def test_smtp_test_shows_a_wrong_secret_in_microsofts_words(
    relays: Relays, provider: OAuthProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-secret-8Q~x"
    monkeypatch.setenv(SECRET_ENV, wrong)
    port, handler = start_relay(relays, provider)
    path = write_config(tmp_path, relays, port, auth_settings(provider, "microsoft-app", tmp_path))
    result = cli(path, "smtp-test", ACCOUNT)
    assert result.exit_code == 1
    assert "FAILED at step 'token': authentication (permanent)" in result.output
    assert "invalid_client: AADSTS7000215: Invalid client secret provided." in result.output
    assert "the secret's Value (not its ID)" in result.output
    assert "connect" not in result.output and handler.logins == []
    assert wrong not in result.output and wrong not in caplog.text


def test_smtp_test_names_an_app_missing_from_the_tenant(
    relays: Relays, provider: OAuthProvider, tmp_path: Path
) -> None:
    port, _ = start_relay(relays, provider)
    auth = {**auth_settings(provider, "microsoft-app", tmp_path), "client_id": "not-registered"}
    result = cli(write_config(tmp_path, relays, port, auth), "smtp-test", ACCOUNT)
    assert result.exit_code == 1
    assert (
        "AADSTS700016: Application with identifier 'not-registered' was not found" in result.output
    )
    assert "check client_id and tenant" in result.output


def test_oauth_login_stores_the_refresh_token_without_showing_it(
    relays: Relays, provider: OAuthProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port, handler = start_relay(relays, provider)
    auth = auth_settings(provider, "microsoft-delegated", tmp_path)
    path = write_config(tmp_path, relays, port, auth)
    before = cli(path, "smtp-test", ACCOUNT)
    assert before.exit_code == 1 and "firstline oauth login" in before.output

    result = cli(path, "oauth", "login", ACCOUNT)
    assert result.exit_code == 0, result.output
    assert f"open {provider.endpoint.device_url.removesuffix('code')}" in result.output
    assert "FLT-4711" in result.output
    assert "signed in: the refresh token for support@example.com is stored" in result.output
    grants = provider.endpoint.requests
    assert grants == ["urn:ietf:params:oauth:grant-type:device_code"] * 3  # pending twice

    after = cli(path, "smtp-test", ACCOUNT)
    assert after.exit_code == 0, after.output
    assert "  token     microsoft delegated for support@example.com: ok" in after.output
    assert grants[-1] == "refresh_token"
    assert handler.logins == [("XOAUTH2", ACCOUNT, "ok")]
    assert_nothing_secret(provider, result.output, after.output, caplog.text)


def test_oauth_login_refuses_the_app_flow_and_google(
    relays: Relays, provider: OAuthProvider, tmp_path: Path
) -> None:
    path = write_config(tmp_path, relays, 587, auth_settings(provider, "microsoft-app", tmp_path))
    result = cli(path, "oauth", "login", ACCOUNT)
    assert result.exit_code == 2
    assert "uses the app flow, which needs no sign-in" in result.output
    google = write_config(
        tmp_path, relays, 587, auth_settings(provider, "google-refresh", tmp_path)
    )
    result = cli(google, "oauth", "login", ACCOUNT)
    assert result.exit_code == 2
    assert "Google's does not allow the Gmail scope" in result.output


# --- the outbox: a refused login waits for new credentials ---------------------


def queue_one(engine: Engine, config: Config) -> int:
    with Session(engine) as session, session.begin():
        ticket = Ticket(
            mailbox=ACCOUNT, subject="Printer on fire", requester="alice@customer.example"
        )
        session.add(ticket)
        session.flush()
        assert ticket.id is not None
        return queue_reply(session, config, ticket.id, text="We are on it.\n").reply_id


def test_a_refused_token_holds_the_reply_until_the_secret_changes(
    relays: Relays, provider: OAuthProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(SECRET_ENV, "an-old-secret")
    port, handler = start_relay(relays, provider)
    path = write_config(tmp_path, relays, port, auth_settings(provider, "microsoft-app", tmp_path))
    config = parse_config(path.read_text(), str(path))
    engine = make_engine(config.storage.url)
    schema.prepare(engine)
    tokens = Tokens(engine)
    reply_id = queue_one(engine, config)
    now = provider.endpoint.now()

    def run(config: Config, now: Any) -> Any:
        return asyncio.run(send_due_replies(engine, config, owner="w", now=now, tokens=tokens))

    assert run(config, now).held == 1
    assert run(config, now + timedelta(days=1)).taken == 0  # not asked again every minute
    shown = json.loads(cli(path, "tickets", "show", "1", "--json").stdout)["replies"][0]
    assert (shown["state"], shown["error_class"]) == ("held", "authentication")
    assert shown["diagnosis"]["step"] == "token" and "AADSTS7000215" in shown["last_error"]
    assert provider.endpoint.requests == ["client_credentials"]

    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)  # the admin puts in the new secret, reloads
    fixed = parse_config(path.read_text(), str(path))
    assert run(fixed, now + timedelta(days=1)).sent == 1
    assert len(handler.received) == 1
    with Session(engine) as session:
        payloads = [json.dumps(e.payload) for e in session.scalars(select(WebhookEvent))]
    assert any('"reply.sent"' in p for p in payloads)
    shown_text = cli(path, "tickets", "show", "1").stdout
    assert_nothing_secret(provider, *payloads, shown_text, caplog.text)
    assert reply_id == 1
    engine.dispose()


def test_an_operator_can_retry_a_held_reply(
    relays: Relays, provider: OAuthProvider, tmp_path: Path
) -> None:
    port, handler = start_relay(relays, provider)
    handler.smtp_auth_disabled = True
    path = write_config(tmp_path, relays, port, auth_settings(provider, "microsoft-app", tmp_path))
    config = parse_config(path.read_text(), str(path))
    engine = make_engine(config.storage.url)
    schema.prepare(engine)
    queue_one(engine, config)
    tokens = Tokens(engine)
    assert asyncio.run(send_due_replies(engine, config, owner="w", tokens=tokens)).held == 1
    handler.smtp_auth_disabled = False  # the Exchange admin turned SMTP AUTH on
    retried = cli(path, "outbox", "retry", "--mailbox", ACCOUNT)
    assert retried.output == "re-queued 1 reply: 1\n"
    assert asyncio.run(send_due_replies(engine, config, owner="w", tokens=tokens)).sent == 1
    engine.dispose()


# --- configuration ---------------------------------------------------------------


def config_text(auth: dict[str, Any], **smtp: Any) -> str:
    settings = {"host": "smtp.office365.com", "port": 587, "account": ACCOUNT, "auth": auth, **smtp}
    mailbox = {"channel": "c", "name": "n", "address": ACCOUNT, "smtp": settings}
    return yaml.safe_dump({"channels": [{"name": "c"}], "mailboxes": [mailbox]}, sort_keys=False)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml")
    return [str(p) for p in caught.value.problems]


def test_the_auth_section_is_checked_with_line_numbers() -> None:
    microsoft = {"method": "oauth2", "provider": "microsoft", "tenant": "contoso.onmicrosoft.com",
                 "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}  # fmt: skip
    [literal] = problems(config_text(microsoft))
    assert literal.startswith("c.yaml:16: mailboxes[0].smtp.auth.client_secret: give this as")
    assert CLIENT_SECRET not in literal
    no_tenant = {k: v for k, v in microsoft.items() if k != "tenant"} | {
        "client_secret": SECRET_REF
    }
    assert problems(config_text(no_tenant)) == [
        "c.yaml:11: mailboxes[0].smtp.auth.tenant: Microsoft needs the tenant "
        "(contoso.onmicrosoft.com or its id)"
    ]
    google = {"method": "oauth2", "provider": "google", "flow": "app"}
    assert problems(config_text(google))[0].endswith(
        "the app flow needs the service account's JSON key"
    )
    both = {**microsoft, "client_secret": SECRET_REF}
    [password] = problems(config_text(both, password=SECRET_REF))
    assert password.endswith("smtp.password: not used with auth.method: oauth2")
    http = {**both, "token_url": "http://login.example/token"}
    assert "is not an https URL" in problems(config_text(http))[0]


def test_the_password_form_stays_as_it_was() -> None:
    text = config_text({"method": "password"}, password="plain-is-still-allowed-here")
    smtp = parse_config(text).mailboxes[0].smtp
    assert smtp is not None and not smtp.oauth
    assert smtp.credentials() != smtp.model_copy(update={"account": "x@example.com"}).credentials()


def test_a_providers_words_reach_logs_and_terminals_on_one_bounded_line(
    relays: Relays, provider: OAuthProvider, tmp_path: Path
) -> None:
    smtp = smtp_config(relays, 587, auth_settings(provider, "microsoft-app", tmp_path))
    hostile = "AADSTS7000215: bad\r\nX-Injected: yes\x1b[2J" + "A" * 100_000
    d = token_diagnosis(smtp, "invalid_client", hostile, 401)
    assert "\n" not in d.server_text and "\r" not in d.server_text and "\x1b" not in d.server_text
    assert len(d.server_text) <= 1001 and d.server_text.endswith("…")
    assert "secret's Value" in d.hint and not d.temporary
    assert token_diagnosis(smtp, "temporarily_unavailable", "busy", 503).temporary
