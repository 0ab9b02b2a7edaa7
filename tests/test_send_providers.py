"""Sending through Postmark, SendGrid and Mailgun APIs, played by a local HTTP server."""

from __future__ import annotations

import re

import pytest

from .helpers import SAMPLE_ISSUE, add_subscribers, address_for_link, delivery_states, subscriber_status
from .provider_server import LIMITS, ProviderServer

PROVIDERS = ["postmark", "sendgrid", "mailgun"]


@pytest.fixture
def provider_env(send_env, monkeypatch):
    return monkeypatch


def use(monkeypatch, server, provider):
    monkeypatch.setenv("NEWSLETTER_ADAPTER", provider)
    for name, value in server.env(provider).items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_reader_gets_their_own_message(cli, provider_env, provider):
    addresses = [f"reader{i}@example.com" for i in range(4)]
    add_subscribers(cli.database_url, addresses)
    with ProviderServer() as server:
        use(provider_env, server, provider)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        state = server.state
    assert state.problems == []
    assert "sent 4, failed 0" in result.stdout
    assert sorted(state.received_by()) == addresses
    tokens = set()
    for delivered in state.delivered:
        assert delivered.subject == "Understanding anxiety, and how ketamine treatment can help"
        assert delivered.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https = re.findall(r"<([^>]+)>", delivered.headers["List-Unsubscribe"])[0]
        token = https.rsplit("/", 1)[1]
        assert address_for_link(cli.database_url, "unsubscribe", token) == delivered.to
        assert https in delivered.html and f"Unsubscribe: {https}" in delivered.text
        assert "Hi Reader," in delivered.html
        assert "zslot" not in delivered.html and "zslot" not in delivered.text
        tokens.add(token)
    assert len(tokens) == 4


@pytest.mark.parametrize("provider", PROVIDERS)
def test_batches_respect_the_provider_limit(cli, provider_env, provider, tmp_path):
    limit = LIMITS[provider]
    count = limit + 20
    csv_file = tmp_path / "many.csv"
    csv_file.write_text("email,tags\n" + "".join(f"p{i}@example.com,monthly\n" for i in range(count)))
    cli("subscribers", "import", str(csv_file))
    provider_env.setenv("NEWSLETTER_BATCH_SIZE", str(count))
    with ProviderServer() as server:
        use(provider_env, server, provider)
        cli("send", str(SAMPLE_ISSUE), "--yes")
        state = server.state
    assert state.problems == []
    assert [size for _, size in state.requests] == [limit, 20]
    assert len(state.received_by()) == count and max(state.received_by().values()) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_and_500_are_retried_without_duplicates(cli, provider_env, provider):
    addresses = [f"r{i}@example.com" for i in range(3)]
    add_subscribers(cli.database_url, addresses)
    with ProviderServer() as server:
        server.state.faults = [429, 500, 429, 503, 500]  # outlasts urllib3's retries once
        use(provider_env, server, provider)
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
        assert server.state.faults == []
        assert server.state.received_by() == {a: 1 for a in addresses}
    assert "sent 3, failed 0" in result.stdout


def test_postmark_inactive_recipient_marks_bounced(cli, provider_env):
    add_subscribers(cli.database_url, ["ok@example.com", "gone@example.com"])
    with ProviderServer() as server:
        server.state.inactive = {"gone@example.com"}
        use(provider_env, server, "postmark")
        result = cli("send", str(SAMPLE_ISSUE), "--yes")
    assert "sent 1, failed 1" in result.stdout and "postmark 406" in result.stdout
    assert subscriber_status(cli.database_url, "gone@example.com") == "bounced"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bad_credentials_pause_the_campaign_and_send_nothing(cli, provider_env, provider):
    add_subscribers(cli.database_url, ["a@example.com"])
    with ProviderServer() as server:
        use(provider_env, server, provider)
        key = {
            "postmark": "NEWSLETTER_POSTMARK_TOKEN",
            "sendgrid": "NEWSLETTER_SENDGRID_API_KEY",
            "mailgun": "NEWSLETTER_MAILGUN_API_KEY",
        }[provider]
        provider_env.setenv(key, "wrong")
        result = cli("send", str(SAMPLE_ISSUE), "--yes", expect=1)
        assert "refused our credentials (401)" in result.stderr
        assert "then run: newsletter campaigns resume 1" in result.stderr
        assert "Traceback" not in result.output
        assert delivery_states(cli.database_url) == {"a@example.com": "queued"}
        assert "[paused]" in cli("campaigns", "show", "1").stdout
        use(provider_env, server, provider)
        resumed = cli("campaigns", "resume", "1")
        assert "sent 1" in resumed.stdout
        assert server.state.received_by() == {"a@example.com": 1}
