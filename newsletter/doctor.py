"""`newsletter doctor`: what Gmail, Yahoo and Microsoft will check, checked before they do.

Each check returns Findings in plain words with the fix. DNS goes through dnspython
(`dns_resolver` / `--resolver HOST:PORT` points it at another server); the SMTP relay
is greeted, asked for TLS and authenticated, never given a message; `base_url` gets the
RFC 8058 one-click POST a mailbox provider sends, for a token of nobody.

Organisational domains for DMARC alignment are approximated by the last two labels
(no public-suffix list): right for example.org and news.example.org, not for example.co.uk.
"""

from __future__ import annotations

import base64
import ipaddress
import smtplib
import socket
import ssl
from dataclasses import asdict, dataclass, field
from email.utils import parseaddr
from urllib.parse import unquote, urlsplit

import dns.exception
import dns.resolver
import requests

from .config import Settings
from .errors import ConfigError

OK, WARNING, PROBLEM = "ok", "warning", "problem"

GMAIL_GUIDELINES = "https://support.google.com/a/answer/81126"
YAHOO_GUIDELINES = "https://senders.yahooinc.com/best-practices/"
POSTMASTER_TOOLS = "https://postmaster.google.com/"
YAHOO_SENDER_HUB = "https://senders.yahooinc.com/"
MICROSOFT_SNDS = "https://sendersupport.olc.protection.outlook.com/snds/"

CHECKLIST = [
    (
        "Spam complaint rate under 0.3% (aim for under 0.1%), watched in Google Postmaster Tools and Yahoo Sender Hub",
        [POSTMASTER_TOOLS, YAHOO_SENDER_HUB],
    ),
    (
        "The sending IP has a PTR (reverse DNS) name that resolves back to the same IP; ask your relay or provider",
        [GMAIL_GUIDELINES],
    ),
    (
        "Unsubscribe requests honoured within 2 days (one-click and mailto: this app does it at once)",
        [GMAIL_GUIDELINES],
    ),
    ("Bounces and complaints processed: set inbox_url and inbox_poll (see README)", [YAHOO_GUIDELINES]),
    ("Microsoft (Outlook.com): sign up for SNDS and JMRP to see your IP's reputation and complaints", [MICROSOFT_SNDS]),
]


@dataclass
class Finding:
    check: str
    status: str  # ok, warning or problem
    message: str
    fix: str = ""
    links: list[str] = field(default_factory=list)


@dataclass
class Diagnosis:
    findings: list[Finding]

    @property
    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.status == PROBLEM]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {
            "ok": self.healthy,
            "findings": [asdict(finding) for finding in self.findings],
            "checklist": [{"item": item, "links": links} for item, links in CHECKLIST],
        }


def make_resolver(address: str = "", timeout: float = 5.0) -> dns.resolver.Resolver:
    """The system resolver, or the one at HOST:PORT."""
    if not address:
        resolver = dns.resolver.Resolver()
    else:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"resolver {address!r} must be HOST:PORT, e.g. 127.0.0.1:53")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)
    resolver.lifetime = timeout
    return resolver


def organizational(domain: str) -> str:
    return ".".join(domain.lower().rstrip(".").split(".")[-2:])


class Doctor:
    def __init__(self, settings: Settings, resolver: dns.resolver.Resolver):
        self.settings = settings
        self.resolver = resolver
        self.from_domain = settings.from_domain.lower()
        bounce = parseaddr(settings.bounce_address)[1]
        self.envelope_domain = (bounce.rpartition("@")[2] or self.from_domain).lower()
        self._dkim_ok = False
        self._relay_ip: str | None = None

    # -- DNS helpers -----------------------------------------------------------------------
    def txt(self, name: str) -> list[str]:
        try:
            answer = self.resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]

    def addresses(self, name: str) -> list[str]:
        found = []
        for kind in ("A", "AAAA"):
            try:
                found += [record.to_text() for record in self.resolver.resolve(name, kind)]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                pass
        return found

    def mx(self, name: str) -> list[str]:
        try:
            return [record.exchange.to_text().rstrip(".") for record in self.resolver.resolve(name, "MX")]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> Diagnosis:
        findings: list[Finding] = []
        checks = (
            self.check_smtp,
            self.check_spf,
            self.check_dkim,
            self.check_dmarc,
            self.check_mx,
            self.check_one_click,
        )
        for check in checks:
            try:
                findings += check()
            except (dns.exception.Timeout, dns.resolver.NoNameservers):
                findings.append(
                    Finding(
                        check.__name__.removeprefix("check_").upper(),
                        PROBLEM,
                        f"the DNS server {self._resolver_name()} did not answer",
                        fix="check your network or the dns_resolver setting",
                    )
                )
        return Diagnosis(findings)

    def _resolver_name(self) -> str:
        """Which server was asked, so a dead resolver can be told from a dead network."""
        servers = [str(server) for server in getattr(self.resolver, "nameservers", [])]
        port = getattr(self.resolver, "port", 53)
        if not servers:
            return "(none configured)"
        return ", ".join(f"[{s}]:{port}" if ":" in s else f"{s}:{port}" for s in servers)

    # -- SPF -------------------------------------------------------------------------------
    def check_spf(self) -> list[Finding]:
        domain = self.envelope_domain
        records = [record for record in self.txt(domain) if record.lower().startswith("v=spf1")]
        example = f'TXT "v=spf1 include:YOUR-RELAY -all" at {domain}'
        if not records:
            return [
                Finding(
                    "SPF",
                    PROBLEM,
                    f"{domain} (the envelope sender's domain) publishes no SPF record: receivers cannot tell "
                    "which servers may send for it",
                    fix=f"publish {example} (your relay or provider documents its include:)",
                    links=[GMAIL_GUIDELINES],
                )
            ]
        if len(records) > 1:
            return [
                Finding(
                    "SPF",
                    PROBLEM,
                    f"{domain} publishes {len(records)} SPF records; receivers treat that as an error",
                    fix="merge them into one v=spf1 record",
                )
            ]
        record = records[0]
        terms = record.lower().split()
        findings = []
        if "+all" in terms or "all" in terms:
            findings.append(
                Finding("SPF", PROBLEM, f"{domain}: SPF ends in +all, which lets anyone send", fix="end it with -all")
            )
        if self._relay_ip:
            allowed = self.spf_allows(domain, ipaddress.ip_address(self._relay_ip), set())
            if allowed is False:
                findings.append(
                    Finding(
                        "SPF",
                        PROBLEM,
                        f"{domain}: SPF does not allow the SMTP relay's address {self._relay_ip}",
                        fix=f"add ip{ipaddress.ip_address(self._relay_ip).version}:{self._relay_ip} "
                        "(or the relay's include:) to the record",
                    )
                )
        if not findings:
            relay = f"; it allows the relay {self._relay_ip}" if self._relay_ip else ""
            findings.append(Finding("SPF", OK, f"{domain}: {record}{relay}"))
        return findings

    def spf_allows(self, domain: str, ip: ipaddress._BaseAddress, seen: set[str]) -> bool | None:
        """A small SPF evaluator (ip4, ip6, a, mx, include, redirect); None when it cannot tell."""
        if domain in seen or len(seen) > 10:
            return None
        seen.add(domain)
        records = [record for record in self.txt(domain) if record.lower().startswith("v=spf1")]
        if len(records) != 1:
            return None
        redirect = None
        for term in records[0].split()[1:]:
            qualifier = term[0] if term[0] in "+-~?" else "+"
            mechanism = term.lstrip("+-~?")
            name, _, value = mechanism.partition(":")
            name = name.lower()
            if name.startswith("redirect="):
                redirect = mechanism.partition("=")[2]
                continue
            match = False
            if name in ("ip4", "ip6"):
                try:
                    match = ip in ipaddress.ip_network(value, strict=False)
                except ValueError:
                    continue
            elif name.split("/")[0] == "a":
                match = str(ip) in self.addresses(value or domain)
            elif name.split("/")[0] == "mx":
                match = any(str(ip) in self.addresses(host) for host in self.mx(value or domain))
            elif name == "include":
                match = self.spf_allows(value, ip, seen) is True
            elif name == "all":
                return qualifier in "+?"
            if match:
                return qualifier == "+"
        if redirect:
            return self.spf_allows(redirect, ip, seen)
        return False

    # -- DKIM ------------------------------------------------------------------------------
    def check_dkim(self) -> list[Finding]:
        selector, key_path = self.settings.dkim_selector, self.settings.dkim_private_key
        if not (selector and key_path):
            if self.settings.adapter in ("postmark", "sendgrid", "mailgun"):
                return [
                    Finding(
                        "DKIM",
                        WARNING,
                        f"this app does not sign; {self.settings.adapter} signs only once you verified "
                        f"{self.from_domain} with it",
                        fix=f"follow {self.settings.adapter}'s domain verification (it gives the DKIM record)",
                    )
                ]
            return [
                Finding(
                    "DKIM",
                    PROBLEM,
                    "messages are not DKIM-signed; Gmail and Yahoo require DKIM from bulk senders",
                    fix="generate a key (openssl genrsa -out dkim.pem 2048), set dkim_selector and dkim_private_key, "
                    "and publish the TXT record `newsletter doctor` then prints",
                    links=[GMAIL_GUIDELINES],
                )
            ]
        name = f"{selector}._domainkey.{self.from_domain}"
        try:
            expected = public_key_base64(key_path)
        except (OSError, ValueError) as exc:
            return [Finding("DKIM", PROBLEM, f"cannot read dkim_private_key {key_path}: {exc}", fix="check the path")]
        publish = f'TXT "v=DKIM1; k=rsa; p={expected}" at {name}'
        records = [record for record in self.txt(name) if "p=" in record]
        if not records:
            return [Finding("DKIM", PROBLEM, f"no DKIM key published at {name}", fix=f"publish {publish}")]
        published = dkim_tags(records[0]).get("p", "")
        if not published:
            return [Finding("DKIM", PROBLEM, f"the key at {name} is revoked (empty p=)", fix=f"publish {publish}")]
        if published != expected:
            return [
                Finding(
                    "DKIM",
                    PROBLEM,
                    f"the key published at {name} does not match dkim_private_key: every signature will fail",
                    fix=f"publish {publish} (or point dkim_private_key at the key you published)",
                )
            ]
        self._dkim_ok = True
        return [Finding("DKIM", OK, f"{name} publishes the key matching dkim_private_key (d={self.from_domain})")]

    # -- DMARC -----------------------------------------------------------------------------
    def check_dmarc(self) -> list[Finding]:
        name = f"_dmarc.{self.from_domain}"
        records = [record for record in self.txt(name) if record.lower().startswith("v=dmarc1")]
        org = organizational(self.from_domain)
        if not records and org != self.from_domain:
            name = f"_dmarc.{org}"
            records = [record for record in self.txt(name) if record.lower().startswith("v=dmarc1")]
        if not records:
            return [
                Finding(
                    "DMARC",
                    PROBLEM,
                    f"{self.from_domain} has no DMARC record; Gmail and Yahoo require one from bulk senders",
                    fix=f'publish TXT "v=DMARC1; p=none; rua=mailto:dmarc@{org}" at _dmarc.{org}, '
                    "then move to p=quarantine once the reports look clean",
                    links=[GMAIL_GUIDELINES],
                )
            ]
        tags = dkim_tags(records[0])
        findings = []
        policy = tags.get("p", "").lower()
        if policy not in ("none", "quarantine", "reject"):
            findings.append(
                Finding("DMARC", PROBLEM, f"{name}: no valid p= policy", fix="use p=none, p=quarantine or p=reject")
            )
        elif policy == "none":
            findings.append(
                Finding(
                    "DMARC",
                    WARNING,
                    f"{name}: p=none only monitors; mail that fails DMARC is still delivered, so spoofing "
                    "your domain works",
                    fix="once DMARC reports show your own mail passing, change to p=quarantine (then p=reject)",
                )
            )
        spf_aligned = self._aligned(self.envelope_domain, tags.get("aspf", "r"))
        dkim_aligned = self._dkim_ok and self._aligned(self.from_domain, tags.get("adkim", "r"))
        if not (spf_aligned or dkim_aligned):
            findings.append(
                Finding(
                    "DMARC",
                    PROBLEM,
                    f"From: {self.from_domain} is aligned with neither a passing DKIM signature "
                    f"(d={self.from_domain}{'' if self._dkim_ok else ', key not valid'}) nor the bounce domain "
                    f"{self.envelope_domain}: DMARC fails for every message",
                    fix=f"fix DKIM for {self.from_domain} (see above), or set bounce_address on {org} "
                    f"(e.g. bounces@news.{org})",
                )
            )
        if not findings:
            how = " and ".join(
                what for what, ok in (("DKIM", dkim_aligned), ("the bounce domain (SPF)", spf_aligned)) if ok
            )
            findings.append(Finding("DMARC", OK, f"{name}: p={policy}; From is aligned with {how}"))
        return findings

    def _aligned(self, domain: str, mode: str) -> bool:
        if mode.lower().startswith("s"):
            return domain == self.from_domain
        return organizational(domain) == organizational(self.from_domain)

    # -- MX --------------------------------------------------------------------------------
    def check_mx(self) -> list[Finding]:
        findings = []
        for domain, why in (
            (self.from_domain, "replies and some receivers' sender checks"),
            (self.envelope_domain, "bounces and complaints to come back"),
        ):
            if findings and domain == self.from_domain:
                continue
            hosts = self.mx(domain)
            if hosts:
                findings.append(Finding("MX", OK, f"{domain}: mail goes to {', '.join(sorted(hosts))}"))
            elif self.addresses(domain):
                findings.append(
                    Finding(
                        "MX",
                        WARNING,
                        f"{domain} has no MX record (mail falls back to its A record), needed for {why}",
                        fix=f"publish an MX record for {domain}",
                    )
                )
            else:
                findings.append(
                    Finding(
                        "MX",
                        PROBLEM,
                        f"{domain} cannot receive mail (no MX, no address), needed for {why}",
                        fix=f"publish an MX record for {domain}",
                    )
                )
            if self.envelope_domain == self.from_domain:
                break
        return findings

    # -- SMTP relay ------------------------------------------------------------------------
    def check_smtp(self) -> list[Finding]:
        url = self.settings.smtp_url
        if not url:
            if self.settings.adapter == "smtp":
                return [Finding("SMTP", PROBLEM, "adapter is smtp but smtp_url is empty", fix="set smtp_url")]
            return []
        parts = urlsplit(url)
        implicit = parts.scheme == "smtps"
        host, port = parts.hostname or "localhost", parts.port or (465 if implicit else 587)
        where = f"{host}:{port}"
        timeout = min(self.settings.smtp_timeout, 15.0)
        context = ssl.create_default_context()
        findings = []
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            self._relay_ip = infos[0][4][0]
            if implicit:
                client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
            else:
                client = smtplib.SMTP(host, port, timeout=timeout)
        except (OSError, smtplib.SMTPException) as exc:
            return [
                Finding(
                    "SMTP",
                    PROBLEM,
                    f"{where}: cannot connect ({type(exc).__name__})",
                    fix="check the host and port in smtp_url and that this machine may reach it",
                )
            ]
        try:
            client.ehlo()
            secure = implicit
            if not implicit and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
                secure = True
            if secure:
                findings.append(Finding("SMTP", OK, f"{where}: reachable, {'TLS' if implicit else 'STARTTLS'} works"))
            elif host in ("127.0.0.1", "localhost", "::1"):
                findings.append(
                    Finding(
                        "SMTP",
                        WARNING,
                        f"{where}: reachable, no TLS offered (acceptable only for a relay on this machine)",
                        fix="make sure the local relay itself sends onwards with TLS",
                    )
                )
            else:
                findings.append(
                    Finding(
                        "SMTP",
                        PROBLEM,
                        f"{where}: the relay offers no STARTTLS; the password and the mail would travel in clear",
                        fix="use the relay's TLS port (smtps://HOST:465 or smtp://HOST:587 with STARTTLS)",
                    )
                )
            if parts.username:
                if not secure and host not in ("127.0.0.1", "localhost", "::1"):
                    findings.append(Finding("SMTP", PROBLEM, f"{where}: AUTH not tried without TLS"))
                else:
                    try:
                        client.login(unquote(parts.username), unquote(parts.password or ""))
                    except smtplib.SMTPServerDisconnected:
                        # some servers hang up after a refused password instead of answering the next mechanism
                        raise smtplib.SMTPAuthenticationError(535, b"closed after AUTH") from None
                    findings.append(Finding("SMTP", OK, f"{where}: AUTH works (nothing was sent)"))
        except smtplib.SMTPAuthenticationError:
            findings.append(
                Finding(
                    "SMTP", PROBLEM, f"{where}: authentication failed", fix="check the user and password in smtp_url"
                )
            )
        except smtplib.SMTPNotSupportedError:
            findings.append(
                Finding("SMTP", PROBLEM, f"{where}: the relay offers no AUTH", fix="check smtp_url's port and user")
            )
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            findings.append(Finding("SMTP", PROBLEM, f"{where}: {type(exc).__name__} during the session"))
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                pass
        return findings

    # -- one-click unsubscribe -------------------------------------------------------------
    def check_one_click(self) -> list[Finding]:
        from .tokens import Tokens

        base = self.settings.base_url.rstrip("/")
        findings = []
        if not base.startswith("https://"):
            findings.append(
                Finding(
                    "One-click",
                    PROBLEM,
                    f"base_url {base} is not HTTPS; Gmail ignores one-click unsubscribe links not served over HTTPS",
                    fix="serve the app behind TLS (nginx or Caddy) and set base_url to its https:// address",
                    links=[GMAIL_GUIDELINES],
                )
            )
        token = Tokens(self.settings.secret_key).make("unsubscribe", 0, None)  # nobody: changes nothing
        url = f"{base}/u/{token}"
        try:
            answer = requests.post(
                url,
                data="List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                allow_redirects=False,
                timeout=self.settings.http_timeout,
            )
        except requests.RequestException as exc:
            return findings + [
                Finding(
                    "One-click",
                    PROBLEM,
                    f"{base}: the one-click POST got no answer ({type(exc).__name__})",
                    fix="run `newsletter serve` where base_url points, and check its firewall",
                )
            ]
        if answer.status_code == 200:
            findings.append(Finding("One-click", OK, f"{base}: the RFC 8058 one-click POST answers 200 directly"))
        elif answer.is_redirect:
            findings.append(
                Finding(
                    "One-click",
                    PROBLEM,
                    f"{base}: the one-click POST is redirected ({answer.status_code} to "
                    f"{answer.headers.get('Location', '?')}); providers do not follow it",
                    fix="set base_url to the final address (https, right host name), so no redirect is needed",
                )
            )
        else:
            findings.append(
                Finding(
                    "One-click",
                    PROBLEM,
                    f"{base}: the one-click POST answers {answer.status_code}, not 200",
                    fix="make sure base_url reaches `newsletter serve` and that both share secret_key",
                )
            )
        return findings


def public_key_base64(path: str) -> str:
    """The p= value a DKIM record must hold for this PEM private key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

    with open(path, "rb") as handle:
        key = load_pem_private_key(handle.read(), password=None)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def dkim_tags(record: str) -> dict[str, str]:
    """Tag=value pairs of a DKIM or DMARC record (whitespace inside values removed)."""
    tags = {}
    for part in record.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags[name.strip().lower()] = "".join(value.split())
    return tags
