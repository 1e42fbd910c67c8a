"""The Prometheus endpoint and the health check, scraped over HTTP from a running server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest.smtp.verification import configured_verifier
from policy.config.model import Config
from tests.support.dnsserver import DnsServer
from tests.support.server import ServerThread, running
from tests.support.signing import message

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ServerThread) -> Samples:
    assert server.app.metrics is not None
    host, port = server.app.metrics.address
    response = httpx.get(f"http://{host}:{port}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def measured(make_config: Callable[..., Config]) -> Iterator[ServerThread]:
    with running(make_config(metrics={"listen": "127.0.0.1:0"})) as server:
        yield server


def test_scrape_parses_and_counts_what_happened(measured: ServerThread) -> None:
    before = scrape(measured)
    raw = message(sender="Alice <alice@customer.example>", to="support@example.com")
    with measured.smtp() as client:
        client.sendmail("alice@customer.example", ["support@example.com"], raw)
        client.rset()
        client.mail("x@y.example")
        client.rcpt("nobody@example.com")
    measured.flush()
    after = scrape(measured)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("firstline_connections_total", proto="SMTP") == 1
    assert grew("firstline_messages_accepted_total", proto="SMTP", state="queued") == 1
    assert grew("firstline_messages_rejected_total", stage="RCPT", reason="unknown_mailbox") == 1
    assert value(after, "firstline_queue_depth", state="queued") == 1
    assert value(after, "firstline_queue_depth", state="done") == 0
    assert value(after, "firstline_queue_oldest_age_seconds") >= 0
    assert ("firstline_outbox_replies", (("state", "failed"),)) in after

    app = measured.app
    measured.call(app.worker.housekeeping.run_batch(app.worker.batch, app.holder.current))
    batched = scrape(measured)
    assert value(batched, "firstline_batch_duration_seconds_count") == (
        value(after, "firstline_batch_duration_seconds_count") + 1
    )
    assert (
        value(batched, "firstline_batch_size_sum") == value(after, "firstline_batch_size_sum") + 1
    )
    assert value(batched, "firstline_batch_messages_total", outcome="ticket") == (
        value(after, "firstline_batch_messages_total", outcome="ticket") + 1
    )
    assert value(batched, "firstline_queue_depth", state="done") == 1
    assert value(batched, "firstline_queue_oldest_age_seconds") == 0
    assert measured.app.metrics is not None
    host, port = measured.app.metrics.address
    text = httpx.get(f"http://{host}:{port}/metrics", timeout=10).text
    families = {family.name for family in text_string_to_metric_families(text)}
    # Declared for the verification, outbound and DNS code to count into.
    assert {"firstline_verification_results", "firstline_outbound_messages",
            "firstline_dns_lookups", "firstline_dns_cache_hits"} <= families  # fmt: skip


def test_health_is_200_only_while_listeners_and_storage_work(measured: ServerThread) -> None:
    assert measured.app.metrics is not None
    host, port = measured.app.metrics.address
    healthy = httpx.get(f"http://{host}:{port}/healthz", timeout=10)
    assert healthy.status_code == 200
    body = healthy.json()
    assert body["status"] == "ok" and set(body["checks"].values()) == {"ok"}
    assert {"smtp", "lmtp", "storage"} <= set(body["checks"])
    measured.app.servers["LMTP"].close()
    broken = httpx.get(f"http://{host}:{port}/health", timeout=10)
    assert broken.status_code == 503
    assert broken.json()["checks"]["lmtp"] == "not listening"


def test_metrics_are_off_unless_configured(server: ServerThread) -> None:
    assert server.app.metrics is None


def test_verification_results_are_counted_per_method(
    make_config: Callable[..., Config], dns_server: DnsServer
) -> None:
    dns_server.add("customer.example", "TXT", "v=spf1 -all")
    dns_server.add("_dmarc.customer.example", "TXT", "v=DMARC1; p=reject")
    config = make_config(
        metrics={"listen": "127.0.0.1:0"},
        dns={"nameservers": [dns_server.address], "timeout": 5},
    )
    with running(config, verifier_factory=configured_verifier) as server:
        before = scrape(server)
        raw = message(sender="Alice <alice@customer.example>", to="support@example.com")
        with server.smtp() as client:
            client.ehlo("mx.customer.example")
            client.mail("alice@customer.example")
            client.rcpt("support@example.com")
            assert client.data(raw)[0] == 550
        after = scrape(server)
    for check, result in (("spf", "fail"), ("dmarc", "fail"), ("dkim", "none")):
        name = "firstline_verification_results_total"
        labels = {"check": check, "result": result}
        assert value(after, name, **labels) - value(before, name, **labels) == 1, check
