"""Delivery adapters, picked by name from configuration."""

from __future__ import annotations

from ..config import Settings
from .base import ACCEPTED, PERMANENT, TRANSIENT, UNKNOWN, Adapter, Result

__all__ = ["ACCEPTED", "PERMANENT", "TRANSIENT", "UNKNOWN", "Adapter", "Result", "make_adapter"]


def make_adapter(settings: Settings, name: str | None = None, folder: str = "messages") -> Adapter:
    """The configured adapter; `folder` names the outbox sub-directory (one per campaign)."""
    name = name or settings.adapter
    if name == "outbox":
        from .outbox import OutboxAdapter

        return OutboxAdapter(settings.outbox_dir, folder)
    if name == "smtp":
        from .smtp import SMTPAdapter

        return SMTPAdapter(settings.smtp_url, settings.smtp_pool, settings.smtp_timeout, settings.smtp_data_timeout)
    if name == "postmark":
        from .postmark import PostmarkAdapter

        return PostmarkAdapter(
            settings.postmark_token,
            settings.postmark_api_url,
            settings.postmark_message_stream,
            settings.http_timeout,
        )
    if name == "sendgrid":
        from .sendgrid import SendGridAdapter

        return SendGridAdapter(settings.sendgrid_api_key, settings.sendgrid_api_url, settings.http_timeout)
    if name == "mailgun":
        from .mailgun import MailgunAdapter

        return MailgunAdapter(
            settings.mailgun_api_key, settings.mailgun_domain, settings.mailgun_api_url, settings.http_timeout
        )
    from ..errors import ConfigError

    raise ConfigError(f"unknown adapter {name!r}")
