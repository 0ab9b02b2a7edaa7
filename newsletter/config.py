"""Configuration: built-in defaults < newsletter.toml < NEWSLETTER_* environment < CLI options.

Everything is validated once, here, into one immutable Settings object; nothing else in
the package reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

CONFIG_FILE = "newsletter.toml"
ENV_PREFIX = "NEWSLETTER_"
ADAPTERS = ("outbox", "smtp", "postmark", "sendgrid", "mailgun")


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    kind: type
    help: str
    secret: bool = False


OPTIONS: tuple[Option, ...] = (
    Option(
        "database_url",
        "sqlite:///subscribers.db",
        str,
        "SQLAlchemy URL; postgresql+psycopg://user@host/db for PostgreSQL",
    ),
    Option(
        "secret_key",
        "",
        str,
        "Signs unsubscribe/preference tokens and keys the suppression list",
        secret=True,
    ),
    Option("base_url", "http://127.0.0.1:8000", str, "Public URL of the web app, used in links"),
    Option("organization", "Calm Harbor Ketamine Clinic", str, "Sender name shown in the footer"),
    Option("from_address", "Calm Harbor Clinic <newsletter@calmharbor.example>", str, "From header"),
    Option("reply_to", "", str, "Reply-To header (empty: none)"),
    Option("postal_address", "", str, "Physical postal address (CAN-SPAM); required for real sends"),
    Option("list_id", "", str, "List-Id header value (default: derived from the From domain)"),
    Option("issues_dir", "issues", str, "Directory holding issue Markdown files"),
    Option("templates_dir", "", str, "Email templates directory (default: the bundled templates/)"),
    Option("adapter", "outbox", str, "Delivery adapter: " + ", ".join(ADAPTERS)),
    Option("outbox_dir", "outbox", str, "Where the outbox adapter writes .eml files"),
    Option("smtp_url", "", str, "smtp://user:pass@host:587 (STARTTLS) or smtps://user:pass@host:465", secret=True),
    Option("smtp_pool", 1, int, "Number of SMTP connections used in parallel"),
    Option("smtp_timeout", 30.0, float, "SMTP socket timeout in seconds"),
    Option(
        "smtp_data_timeout",
        600.0,
        float,
        "Seconds to wait for the reply after a message's final '.' (RFC 5321 4.5.3.2: 10 minutes)",
    ),
    Option("postmark_token", "", str, "Postmark server token", secret=True),
    Option("postmark_api_url", "https://api.postmarkapp.com", str, "Postmark API base URL"),
    Option("postmark_message_stream", "broadcast", str, "Postmark message stream"),
    Option("sendgrid_api_key", "", str, "SendGrid API key", secret=True),
    Option("sendgrid_api_url", "https://api.sendgrid.com", str, "SendGrid API base URL"),
    Option("mailgun_api_key", "", str, "Mailgun API key", secret=True),
    Option("mailgun_domain", "", str, "Mailgun sending domain"),
    Option("mailgun_api_url", "https://api.mailgun.net", str, "Mailgun API base URL (EU: api.eu.mailgun.net)"),
    Option("http_timeout", 30.0, float, "Timeout in seconds for provider API calls"),
    Option("dkim_selector", "", str, "DKIM selector; DKIM signing is on when this and the key are set"),
    Option("dkim_private_key", "", str, "Path to the PEM DKIM private key", secret=False),
    Option("rate", 0.0, float, "Messages per second cap (0 = unlimited)"),
    Option("max_attempts", 5, int, "Attempts per message before a transient failure becomes final"),
    Option("retry_base_delay", 2.0, float, "First retry delay in seconds (doubles each attempt, with jitter)"),
    Option("batch_size", 200, int, "Deliveries claimed per batch (one claim query per batch)"),
    Option(
        "pause_after_failures",
        10,
        int,
        "Consecutive transient failures, for different readers, that pause a campaign as an outage",
    ),
    Option(
        "claim_lease", 300.0, float, "Seconds a worker's claim on a batch lasts; then another worker may take it over"
    ),
    Option(
        "synchronous_commit",
        False,
        bool,
        "PostgreSQL: make each message's 'sent' commit wait for the server's disk (off: a server crash can "
        "lose its last fraction of a second; a sender crash loses nothing)",
    ),
    Option(
        "topics",
        "monthly, patients, caregivers",
        str,
        "Comma-separated tags subscribers may choose in the preference centre",
    ),
    Option(
        "consent_text",
        "Yes, send me the Calm Harbor newsletter: education about anxiety and ketamine "
        "treatment, tips and patient stories. I can unsubscribe at any time.",
        str,
        "The wording shown next to the signup checkbox, stored with every consent",
    ),
    Option("subscribe_rate_limit", "5 per 10 minutes", str, "Signups allowed per IP address"),
    Option("signup_tags", ("monthly",), list, "Tags every web signup gets when confirmed (topics chosen add theirs)"),
    Option(
        "signup_origins",
        (),
        list,
        "Origins (https://clinic.example) whose pages may post the embeddable signup form",
    ),
    Option("confirm_link_days", 7.0, float, "Days a signup confirmation link works (single use)"),
    Option(
        "resubscribe_window_hours",
        24.0,
        float,
        "Hours the Resubscribe button undoes an unsubscribe made from the same link; later it asks to confirm",
    ),
    Option(
        "rate_limit_storage",
        "memory://",
        str,
        "Where signup counts live: memory:// (per process) or redis://host:6379 (shared by all processes)",
    ),
    Option("proxy_count", 0, int, "Reverse proxies in front of `serve` whose X-Forwarded-* headers to trust"),
    Option(
        "postmark_webhook_auth", "", str, "user:password expected as HTTP Basic auth on Postmark webhooks", secret=True
    ),
    Option("sendgrid_webhook_public_key", "", str, "SendGrid event webhook verification key (base64)", secret=True),
    Option("mailgun_webhook_signing_key", "", str, "Mailgun webhook signing key", secret=True),
    Option(
        "bounce_address",
        "",
        str,
        "Envelope sender mailbox; each delivery is sent as bounces+TOKEN@domain (VERP) when set",
    ),
    Option(
        "unsubscribe_address",
        "",
        str,
        "Mailbox of the mailto List-Unsubscribe (default: unsubscribe@ the bounce_address or From domain)",
    ),
    Option(
        "inbox_url",
        "",
        str,
        "Mailbox where bounces, complaints and mailto unsubscribes arrive: imap(s)://, pop3(s)://, maildir:, mbox:",
        secret=True,
    ),
    Option("inbox_folder", "Processed", str, "IMAP folder processed messages are moved to"),
    Option("inbox_poll", 0.0, float, "Minutes between inbox checks in `worker` and `serve` (0 = off)"),
    Option("soft_bounce_limit", 3, int, "Campaigns with 4.x.x failures in soft_bounce_days that make one bounced"),
    Option("soft_bounce_days", 30, int, "Window in days for soft_bounce_limit"),
    Option("dns_resolver", "", str, "HOST:PORT of the DNS server `doctor` asks (default: the system's)"),
    Option(
        "claims",
        "",
        str,
        "Comma-separated extra phrases that promise results, reported by lint like the bundled list",
    ),
    Option("reading_grade", 8.0, float, "Flesch-Kincaid grade above which lint warns about a block"),
)
OPTION_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class Settings:
    database_url: str
    secret_key: str
    base_url: str
    organization: str
    from_address: str
    reply_to: str
    postal_address: str
    list_id: str
    issues_dir: str
    templates_dir: str
    adapter: str
    outbox_dir: str
    smtp_url: str
    smtp_pool: int
    smtp_timeout: float
    smtp_data_timeout: float
    postmark_token: str
    postmark_api_url: str
    postmark_message_stream: str
    sendgrid_api_key: str
    sendgrid_api_url: str
    mailgun_api_key: str
    mailgun_domain: str
    mailgun_api_url: str
    http_timeout: float
    dkim_selector: str
    dkim_private_key: str
    rate: float
    max_attempts: int
    retry_base_delay: float
    batch_size: int
    pause_after_failures: int
    claim_lease: float
    synchronous_commit: bool
    topics: str
    consent_text: str
    subscribe_rate_limit: str
    signup_tags: tuple[str, ...]
    signup_origins: tuple[str, ...]
    confirm_link_days: float
    resubscribe_window_hours: float
    rate_limit_storage: str
    proxy_count: int
    postmark_webhook_auth: str
    sendgrid_webhook_public_key: str
    mailgun_webhook_signing_key: str
    bounce_address: str
    unsubscribe_address: str
    inbox_url: str
    inbox_folder: str
    inbox_poll: float
    soft_bounce_limit: int
    soft_bounce_days: int
    dns_resolver: str
    claims: str
    reading_grade: float
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def require(self, *names: str, why: str) -> None:
        """Raise ConfigError naming the first empty setting among `names`."""
        for name in names:
            if not getattr(self, name):
                raise ConfigError(
                    f"setting '{name}' is required {why}",
                    hint=f"set it in {CONFIG_FILE} or as {ENV_PREFIX}{name.upper()}",
                )

    @property
    def templates_path(self) -> Path:
        if self.templates_dir:
            return Path(self.templates_dir)
        return Path(__file__).resolve().parent.parent / "templates"

    @property
    def from_domain(self) -> str:
        from email.utils import parseaddr

        return parseaddr(self.from_address)[1].rpartition("@")[2] or "localhost"

    @property
    def unsubscribe_mailbox(self) -> str:
        """Where mailto unsubscribes go: the setting, else unsubscribe@ the bounce (or From) domain."""
        if self.unsubscribe_address:
            return self.unsubscribe_address
        from email.utils import parseaddr

        domain = parseaddr(self.bounce_address)[1].rpartition("@")[2] or self.from_domain
        return f"unsubscribe@{domain}"

    @property
    def claim_list(self) -> list[str]:
        return [phrase.strip() for phrase in self.claims.split(",") if phrase.strip()]

    @property
    def topic_list(self) -> list[str]:
        return [topic.strip() for topic in self.topics.split(",") if topic.strip()]

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def describe(self) -> list[tuple[str, str, str]]:
        """(name, shown value, source) per setting, with secrets masked."""
        rows = []
        for option in OPTIONS:
            value = getattr(self, option.name)
            shown = ", ".join(value) if isinstance(value, tuple) else str(value)
            if option.secret and value:
                shown = mask(option.name, str(value))
            rows.append((option.name, shown, self.sources.get(option.name, "default")))
        return rows


def mask(name: str, value: str) -> str:
    if name in ("smtp_url", "inbox_url"):
        parts = urlsplit(value)
        if parts.password:
            return value.replace(f":{parts.password}@", ":****@")
        return value
    return "****" + value[-4:] if len(value) > 12 else "****"


def _coerce(option: Option, raw: Any, origin: str) -> Any:
    try:
        if option.kind is bool:
            if isinstance(raw, str):
                return raw.strip().lower() in ("1", "true", "yes", "on")
            return bool(raw)
        if option.kind is list:
            # A TOML array, or a comma-separated string (environment, command line).
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            if not all(isinstance(item, str) for item in items):
                raise TypeError
            return tuple(item.strip() for item in items if item.strip())
        if isinstance(raw, str):
            raw = raw.strip()
        value = option.kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting '{option.name}' from {origin} must be a {option.kind.__name__}, got {raw!r}"
        ) from None
    return value


def _validate(values: dict[str, Any], sources: dict[str, str]) -> None:
    def where(name: str) -> str:
        return sources.get(name, "default")

    if values["adapter"] not in ADAPTERS:
        raise ConfigError(
            f"setting 'adapter' ({where('adapter')}) must be one of {', '.join(ADAPTERS)}, got {values['adapter']!r}"
        )
    base = urlsplit(values["base_url"])
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ConfigError(f"setting 'base_url' ({where('base_url')}) must be an http(s) URL")
    if values["smtp_url"]:
        smtp = urlsplit(values["smtp_url"])
        try:
            port_ok = smtp.port is None or smtp.port > 0
        except ValueError:
            port_ok = False
        if smtp.scheme not in ("smtp", "smtps") or not smtp.hostname or not port_ok:
            raise ConfigError(
                f"setting 'smtp_url' ({where('smtp_url')}) must look like smtp://user:pass@host:587 or smtps://host:465"
                " (a port from 1 to 65535)"
            )
    for name in ("bounce_address", "unsubscribe_address"):
        local, at, domain = values[name].rpartition("@")
        if values[name] and (not at or not local or "." not in domain or "+" in local or " " in values[name]):
            raise ConfigError(
                f"setting '{name}' ({where(name)}) must be a bare address without '+', e.g. bounces@news.example.org"
            )
    if values["inbox_url"]:
        from .inbox.mailboxes import SCHEMES

        scheme = values["inbox_url"].partition(":")[0].lower()
        if scheme not in SCHEMES:
            raise ConfigError(
                f"setting 'inbox_url' ({where('inbox_url')}) must start with one of "
                + ", ".join(f"{s}:" for s in SCHEMES)
            )
    if values["inbox_poll"] < 0:
        raise ConfigError(f"setting 'inbox_poll' ({where('inbox_poll')}) must not be negative")
    for name in ("soft_bounce_limit", "soft_bounce_days"):
        if values[name] < 1:
            raise ConfigError(f"setting '{name}' ({where(name)}) must be at least 1")
    if values["dns_resolver"]:
        host, _, port = values["dns_resolver"].rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"setting 'dns_resolver' ({where('dns_resolver')}) must be HOST:PORT, e.g. 127.0.0.1:53")
    if values["claim_lease"] < 5:
        raise ConfigError(f"setting 'claim_lease' ({where('claim_lease')}) must be at least 5 seconds")
    for name in ("smtp_pool", "max_attempts", "batch_size", "pause_after_failures"):
        if values[name] < 1:
            raise ConfigError(f"setting '{name}' ({where(name)}) must be at least 1")
    for name in ("smtp_timeout", "smtp_data_timeout", "http_timeout"):
        if values[name] <= 0:
            raise ConfigError(f"setting '{name}' ({where(name)}) must be more than 0 seconds")
    if not 1 <= values["reading_grade"] <= 20:
        raise ConfigError(f"setting 'reading_grade' ({where('reading_grade')}) must be a school grade from 1 to 20")
    if values["rate"] < 0:
        raise ConfigError(f"setting 'rate' ({where('rate')}) must not be negative")
    for name in ("confirm_link_days", "resubscribe_window_hours"):
        if values[name] <= 0:
            raise ConfigError(f"setting '{name}' ({where(name)}) must be more than 0")
    for origin in values["signup_origins"]:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(
                f"setting 'signup_origins' ({where('signup_origins')}): {origin!r} is not an origin "
                "like https://clinic.example"
            )


def public_base_url_problem(base_url: str) -> str | None:
    """Why `base_url` cannot go into real mail (None when it can): every List-Unsubscribe
    and footer link points there, so it must be public HTTPS, not a loopback or private
    address a reader's mail client cannot reach."""
    import ipaddress
    import socket

    parts = urlsplit(base_url)
    if parts.scheme != "https":
        return f"base_url {base_url!r} is not https://"
    host = (parts.hostname or "").strip("[]").rstrip(".")  # "localhost." is localhost
    if not host or host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return f"base_url {base_url!r} points at a local host name"
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)]
        except (OSError, UnicodeError):
            addresses = []  # not resolvable from here: may still be public; the name is checked above
    for address in addresses:
        if address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified:
            return f"base_url {base_url!r} points at a loopback or private address ({address})"
    return None


def load_settings(
    config_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve every setting from its four layers and validate the result."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {option.name: option.default for option in OPTIONS}
    sources: dict[str, str] = {}

    path = Path(config_file) if config_file else Path(CONFIG_FILE)
    if config_file and not path.exists():
        raise ConfigError(f"{path}: configuration file not found")
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for key, raw in data.items():
            option = OPTION_BY_NAME.get(key)
            if option is None:
                raise ConfigError(f"{path}: unknown setting '{key}'")
            values[key] = _coerce(option, raw, str(path))
            sources[key] = str(path)

    for option in OPTIONS:
        env_name = ENV_PREFIX + option.name.upper()
        if env_name in environ:
            values[option.name] = _coerce(option, environ[env_name], env_name)
            sources[option.name] = f"env {env_name}"

    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        option = OPTION_BY_NAME[key]
        values[key] = _coerce(option, raw, "command line")
        sources[key] = "command line"

    _validate(values, sources)
    return Settings(**values, sources=sources)


def write_starter_config(path: Path) -> bool:
    """Create newsletter.toml (mode 0600: it holds the secret key) with a fresh secret key;
    never overwrite an existing file."""
    if path.exists():
        return False
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(descriptor, 0o600)  # whatever the umask
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(
            "# newsletter configuration; see README.md for every setting.\n"
            "# Keep this file out of version control: it holds the secret key.\n"
            f'secret_key = "{secrets.token_urlsafe(32)}"\n'
            'postal_address = "Calm Harbor Clinic, 100 Example Street, Springfield, IL 62701, USA"\n'
            'adapter = "outbox"\n',
        )
    return True
