"""What the HTTP API adapters share: a requests session with timeouts and 429/5xx retries.

A call that cannot reach the provider (DNS, refused, TLS, connect timeout) is an outage:
the campaign pauses. A call whose body went out but whose answer was lost (read timeout,
connection closed while waiting) may have been accepted: every message in it is `unknown`,
never retried blindly. urllib3 therefore never repeats a request after a read error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter as _TransportAdapter
from urllib3.util.retry import Retry

from ..errors import DeliveryError
from ..message import Message
from .base import Adapter, Result, transient, unknown

RETRY_STATUSES = (429, 500, 502, 503, 504)


class _RefusalRetry(Retry):
    """urllib3's retries, noting on the adapter a stop that came while waiting to ask again
    after a refusal (429/5xx): nothing of that batch was accepted, so it stays queued
    rather than `unknown` (base.Adapter.send)."""

    def __init__(self, owner: Adapter | None = None, **options: Any):
        super().__init__(**options)
        self.owner = owner

    def new(self, **options: Any) -> _RefusalRetry:
        renewed = super().new(**options)
        renewed.owner = self.owner
        return renewed

    def sleep(self, response: Any = None) -> None:
        try:
            super().sleep(response)
        except KeyboardInterrupt:
            if self.owner is not None:
                self.owner.stopped_after_refusal = True
            raise


class HTTPAdapter(Adapter):
    """Base for provider APIs. urllib3 retries 429 and 5xx answers a few times, sleeping
    as long as Retry-After says; if the provider still refuses, every message of the
    batch comes back as a transient failure and the campaign retries it later."""

    retries = 3

    def __init__(self, base_url: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        retry = _RefusalRetry(
            self,
            total=self.retries,
            read=False,  # the body may have arrived: repeating it could send every message twice
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # POST too: these APIs reject before queueing on 429/5xx
            backoff_factor=0.5,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self.session.mount("http://", _TransportAdapter(max_retries=retry))
        self.session.mount("https://", _TransportAdapter(max_retries=retry))

    def close(self) -> None:
        self.session.close()

    def post(self, path: str, messages: list[Message], **kwargs: Any) -> requests.Response | list[Result]:
        """POST; on a network failure or a refusal that outlived the retries, results instead."""
        try:
            response = self.session.post(f"{self.base_url}{path}", timeout=self.timeout, **kwargs)
        except (requests.ConnectTimeout, requests.exceptions.SSLError, requests.exceptions.InvalidURL) as exc:
            raise self._unreachable(exc) from None
        except requests.ConnectionError as exc:
            if _before_sending(exc):
                raise self._unreachable(exc) from None
            return self._lost(messages, exc)
        except requests.Timeout as exc:  # a read timeout: the request went out
            return self._lost(messages, exc)
        except requests.RequestException as exc:
            reason = f"{self.name}: {type(exc).__name__}"
            return [transient(message, reason) for message in messages]
        if response.status_code in (401, 403):
            raise DeliveryError(
                f"{self.name}: the API refused our credentials ({response.status_code})",
                hint=f"check the {self.name} API key or token setting",
            )
        if response.status_code in RETRY_STATUSES:
            retry_after = _seconds(response.headers.get("Retry-After"))
            reason = f"{self.name}: HTTP {response.status_code}"
            return [transient(message, reason, retry_after) for message in messages]
        return response

    def _unreachable(self, exc: Exception) -> DeliveryError:
        return DeliveryError(
            f"{self.name}: cannot reach {self.base_url} ({_cause(exc)})",
            hint="check the network and the provider's API URL setting",
        )

    def _lost(self, messages: list[Message], exc: Exception) -> list[Result]:
        reason = f"{self.name}: no answer after the request was sent ({_cause(exc)}); the provider may have it"
        return [unknown(message, reason) for message in messages]

    def send_batch(self, messages: list[Message]) -> Iterator[Result]:
        raise NotImplementedError


def _before_sending(exc: requests.ConnectionError) -> bool:
    """True when the connection was never made (so the provider cannot have the request)."""
    from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError

    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, (NewConnectionError, NameResolutionError))


def _cause(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else None
    while reason is not None and hasattr(reason, "reason") and reason.reason is not None:
        reason = reason.reason
    if isinstance(reason, BaseException) and reason.args and isinstance(reason.args[-1], BaseException):
        reason = reason.args[-1]
    return type(reason).__name__ if isinstance(reason, BaseException) else type(exc).__name__


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def slot_tags(message: Message, tag: str) -> tuple[str, str, dict[str, str]]:
    """The shared HTML and text with a provider tag per slot, and this reader's values.

    `tag` formats a slot name into the provider's syntax, e.g. "-{}-" or "%recipient.{}%".
    HTML values are escaped as render.personalise escapes them; text values are raw.
    """
    from ..render import escape_attribute, escape_text

    rendered = message.rendered
    values = message.slot_values
    assert rendered is not None and values is not None
    names = {marker: f"s{index}" for index, marker in enumerate(rendered.slots)}
    html = "".join(tag.format("h" + names[p]) if p in names else p for p in rendered.html_parts)
    text = "".join(tag.format("t" + names[p]) if p in names else p for p in rendered.text_parts)
    per_recipient: dict[str, str] = {}
    for marker, name in names.items():
        escape = escape_attribute if marker in rendered.attribute_slots else escape_text
        per_recipient["h" + name] = escape(values[marker])
        per_recipient["t" + name] = values[marker]
    return html, text, per_recipient


def address(value: str) -> dict[str, str]:
    from email.utils import parseaddr

    name, email = parseaddr(value)
    return {"email": email, "name": name} if name else {"email": email}
