"""Read one message from the feedback mailbox and say what it is.

Order matters: a complaint report (ARF, RFC 5965) first, then a delivery report (a DSN,
RFC 3464, or one of the non-standard bounce formats flufl.bounce knows), and only then
the auto-reply test, because real DSNs carry `Auto-Submitted: auto-replied` too. Mail to
the unsubscribe address comes next; anything else is left alone.

A bounce or complaint is acted on only when it is tied to a message we sent through
something a stranger cannot make up: the VERP envelope address it was mailed to, or the
original it quotes (a Message-ID whose keyed hash verifies, or that a delivery recorded; our
VERP return path; a valid unsubscribe token). The reader is then the one of THAT delivery
or token, never the address the report names: a forged DSN quoting any Message-ID and
naming a subscriber changes nothing, and a genuine one naming another address still only
concerns the reader we sent that message to.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

from ..feedback import Feedback
from ..tokens import InvalidToken, TokenData, Tokens
from ..verp import ReturnPaths

# flufl.bounce logs a traceback when one of its heuristic detectors trips over a malformed
# message (no From:, say); such a message is simply not a bounce we recognise.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False

SOURCE = "inbox"
MAILTO_SOURCE = "mailto"

# Verdicts, also the rows of the per-run report.
BOUNCE, COMPLAINT, UNSUBSCRIBE = "bounce", "complaint", "unsubscribe"
AUTO_REPLY, UNMATCHED, POLICY, UNRECOGNISED = "auto-reply", "unmatched", "policy-block", "unrecognised"

RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_LINE = re.compile(r"\b[45]\d\d[ -](?:[45]\.\d{1,3}\.\d{1,3}\b)?.{4,}")
_OUR_MESSAGE_ID = re.compile(r"^<(\d+)\.(\d+)\.([0-9a-f]{16})@[^>\s]+>$")
_UNSUBSCRIBE_URL = re.compile(r"/u/([A-Za-z0-9_.\-]+)")
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|answer)|auto:|out of (the )?office|abwesenheit|r[ée]ponse automatique|"
    r"vacation)",
    re.IGNORECASE,
)


@dataclass
class Verdict:
    kind: str
    events: list[Feedback] = field(default_factory=list)
    note: str = ""


@dataclass
class Original:
    """What a report quotes of the message we sent."""

    message_id: str | None = None
    return_path: str | None = None
    unsubscribe_tokens: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Handles:
    delivery_id: int | None = None  # from our VERP address or a Message-ID we verified
    subscriber_link: TokenData | None = None  # whose unsubscribe token the message carried
    campaign_id: int | None = None
    message_id: str | None = None

    @property
    def tied(self) -> bool:
        """Only verified handles tie a report to a reader; a quoted Message-ID alone is words."""
        return self.delivery_id is not None or self.subscriber_link is not None


def message_id_delivery(message_id: str | None, secret_key: str) -> tuple[int, int] | None:
    """(campaign id, delivery id) of a Message-ID we made (message.py `MessageBuilder.message_id`:
    `<C.D.hash@domain>`, hash keyed with secret_key), None for any other or a forged one."""
    found = _OUR_MESSAGE_ID.match((message_id or "").strip())
    if found is None:
        return None
    label = f"{found.group(1)}.{found.group(2)}"
    key = (secret_key or "newsletter").encode()
    expected = hmac.new(key, label.encode(), hashlib.sha256).hexdigest()[:16]
    if not hmac.compare_digest(expected, found.group(3)):
        return None
    return int(found.group(1)), int(found.group(2))


def parse(raw: bytes) -> Message:
    return message_from_bytes(raw, policy=policy.compat32)


def _parts(message: Message, maintype: str, subtype: str) -> Iterator[Message]:
    for part in message.walk():
        if part.get_content_maintype() == maintype and part.get_content_subtype() == subtype:
            yield part


def _text(message: Message) -> str:
    """The human-readable text of a message, for the reason line and quoted-header fallbacks."""
    chunks = []
    for part in message.walk():
        if part.get_content_type() in ("text/plain", "text/rfc822-headers") and not part.is_multipart():
            payload = part.get_payload(decode=True) or b""
            chunks.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return "\n".join(chunks)


def _header_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload
    if isinstance(payload, str):  # some builders leave the blocks as text
        return [parse(block.encode()) for block in re.split(r"\r?\n\r?\n", payload) if block.strip()]
    return []


def _quoted_original(message: Message) -> Original:
    original = Original()
    headers: Message | None = None
    for part in message.walk():
        if part.get_content_type() == "message/rfc822":
            payload = part.get_payload()
            headers = payload[0] if isinstance(payload, list) and payload else None
        elif part.get_content_type() == "text/rfc822-headers":
            headers = parse((part.get_payload(decode=True) or b"").lstrip())
        if headers is not None:
            break
    text = _text(message)
    if headers is not None:
        original.message_id = (headers.get("Message-ID") or "").strip() or None
        original.return_path = (headers.get("Return-Path") or "").strip() or None
        unsubscribe = str(headers.get("List-Unsubscribe") or "")
    else:  # quoted inline in the text of the bounce (Exim, qmail)
        found = re.search(r"^Message-ID:\s*(<[^>\s]+>)", text, re.IGNORECASE | re.MULTILINE)
        original.message_id = found.group(1) if found else None
        found = re.search(r"^List-Unsubscribe:\s*(.+(?:\n[ \t].+)*)", text, re.IGNORECASE | re.MULTILINE)
        unsubscribe = found.group(1) if found else ""
    original.unsubscribe_tokens = _UNSUBSCRIBE_URL.findall(unsubscribe)
    return original


class Classifier:
    def __init__(
        self,
        return_paths: ReturnPaths,
        tokens: Tokens,
        secret_key: str = "",
        recorded_delivery: Callable[[str], int | None] | None = None,
    ):
        self.paths = return_paths
        self.tokens = tokens
        self.secret_key = secret_key
        # Message-ID (or provider id) -> delivery id, as the deliveries table recorded it.
        self.recorded_delivery = recorded_delivery or (lambda message_id: None)

    # -- handles: what ties a report to something we sent --------------------------------
    def _tagged(self, addresses: Iterable[str]) -> tuple[int | None, str | None]:
        """(delivery id, unsubscribe token) found among addresses we handed out."""
        delivery_id, token = None, None
        for address in addresses:
            tagged = self.paths.read(address)
            if tagged is None:
                continue
            if tagged.kind == "bounce" and delivery_id is None:
                delivery_id = int(tagged.value)
            elif tagged.kind == "unsubscribe" and token is None:
                token = str(tagged.value)
        return delivery_id, token

    def _read_token(self, token: str | None) -> tuple[TokenData | None, int | None]:
        if not token:
            return None, None
        try:
            data = self.tokens.read("unsubscribe", token)
        except InvalidToken:
            return None, None
        return data, data.campaign_id

    def _handles(self, envelope_delivery: int | None, original: Original, extra: Iterable[str] = ()) -> Handles:
        delivery_id = envelope_delivery
        if delivery_id is None:
            delivery_id, _ = self._tagged([original.return_path or "", *extra])
        campaign_id = None
        if delivery_id is None and original.message_id:
            ours = message_id_delivery(original.message_id, self.secret_key)
            if ours is not None:
                campaign_id, delivery_id = ours
            else:  # a message sent before Message-IDs were keyed, or a provider's id
                delivery_id = self.recorded_delivery(original.message_id)
        subscriber_link = None
        if delivery_id is None:
            for token in original.unsubscribe_tokens:
                subscriber_link, campaign_id = self._read_token(token)
                if subscriber_link is not None:
                    break
        return Handles(delivery_id, subscriber_link, campaign_id, original.message_id)

    # -- the verdict -----------------------------------------------------------------------
    def classify(self, message: Message, envelope_recipients: Iterable[str] = ()) -> Verdict:
        recipients = list(envelope_recipients)
        for name in RECIPIENT_HEADERS:
            recipients += [address for _, address in getaddresses(message.get_all(name, []))]
        envelope_delivery, unsubscribe_token = self._tagged(recipients)

        reports = list(_parts(message, "message", "feedback-report"))
        if reports:
            return self._complaint(message, reports[0], envelope_delivery)
        statuses = list(_parts(message, "message", "delivery-status"))
        try:
            temporary, permanent = all_failures(message)
        except Exception:  # a heuristic detector tripping over a malformed message: not a bounce
            temporary, permanent = frozenset(), frozenset()
        if statuses or temporary or permanent:
            return self._bounce(message, statuses, temporary, permanent, envelope_delivery)
        # A mail client's own unsubscribe request may be marked auto-generated; only a reply
        # (a vacation message) is never an unsubscribe. Replies go to From or Return-Path,
        # so a tokened unsubscribe address is reached only by acting on List-Unsubscribe.
        auto_replied = (message.get("Auto-Submitted") or "").strip().lower().startswith("auto-replied")
        if unsubscribe_token is not None and self._read_token(unsubscribe_token)[0] is not None and not auto_replied:
            return self._mailto(message, unsubscribe_token)
        if is_auto_reply(message):
            return Verdict(AUTO_REPLY)
        if unsubscribe_token is not None or any(self.paths.is_unsubscribe_mailbox(a) for a in recipients):
            return self._mailto(message, unsubscribe_token)
        return Verdict(UNRECOGNISED)

    def _complaint(self, message: Message, report: Message, envelope_delivery: int | None) -> Verdict:
        fields = Message()
        for block in _header_blocks(report):
            for name, value in block.items():
                fields[name] = value
        feedback_type = (fields.get("Feedback-Type") or "abuse").strip().lower()
        if feedback_type == "not-spam":
            return Verdict(UNRECOGNISED, note="not-spam report")
        original = _quoted_original(message)
        handles = self._handles(envelope_delivery, original, [fields.get("Original-Mail-From") or ""])
        if not handles.tied:
            return Verdict(UNMATCHED, note="complaint about a message we cannot identify")
        reporter = parseaddr(message.get("From", ""))[1].rpartition("@")[2] or "unknown"
        # Original-Rcpt-To is not used: the reader is the one of the delivery or token.
        event = Feedback(
            "complaint",
            SOURCE,
            f"{feedback_type} report (ARF) from {reporter}",
            subscriber_link=handles.subscriber_link,
            campaign_id=handles.campaign_id,
            delivery_id=handles.delivery_id,
        )
        return Verdict(COMPLAINT, [event])

    def _bounce(
        self,
        message: Message,
        statuses: list[Message],
        temporary: frozenset[bytes],
        permanent: frozenset[bytes],
        envelope_delivery: int | None,
    ) -> Verdict:
        failures = _dsn_failures(statuses)  # (address, kind, reason) from the RFC 3464 fields
        if not failures:
            reason = _first_smtp_line(_text(message)) or "non-standard bounce"
            failures = [(a.decode(), "bounce", reason) for a in sorted(permanent)]
            failures += [(a.decode(), "soft_bounce", reason) for a in sorted(temporary - permanent)]
        acted = [failure for failure in failures if failure[1] != POLICY]
        if not acted:
            if failures:
                return Verdict(POLICY, note=failures[0][2])
            return Verdict(UNRECOGNISED, note="delivery report without failures")
        handles = self._handles(envelope_delivery, _quoted_original(message))
        if not handles.tied:
            return Verdict(UNMATCHED, note="bounce of a message we cannot identify")
        # One delivery per message: the report is about that reader, whatever address it
        # names (Final-Recipient is never used to pick a subscriber).
        _, kind, reason = min(acted, key=lambda failure: failure[1] != "bounce")
        event = Feedback(
            kind,
            SOURCE,
            reason,
            subscriber_link=handles.subscriber_link,
            campaign_id=handles.campaign_id,
            delivery_id=handles.delivery_id,
        )
        return Verdict(BOUNCE, [event])

    def _mailto(self, message: Message, token: str | None) -> Verdict:
        subscriber_link, campaign_id = self._read_token(token)
        if subscriber_link is None:  # the token in the subject, as older List-Unsubscribe headers put it
            for word in str(message.get("Subject", "")).split():
                subscriber_link, campaign_id = self._read_token(word)
                if subscriber_link is not None:
                    break
        # No fallback to the From address: anyone can write any From. The mailto address we
        # advertise in List-Unsubscribe always carries the reader's token.
        if subscriber_link is None:
            return Verdict(UNMATCHED, note="unsubscribe request with an invalid or missing token")
        event = Feedback(
            "unsubscribe",
            MAILTO_SOURCE,
            "mail to the unsubscribe address",
            subscriber_link=subscriber_link,
            campaign_id=campaign_id,
        )
        return Verdict(UNSUBSCRIBE, [event])


def is_auto_reply(message: Message) -> bool:
    """RFC 3834 Auto-Submitted, the vendors' older markers, and vacation subjects."""
    if (message.get("Auto-Submitted") or "no").strip().lower() != "no":
        return True
    if message.get("X-Autoreply") or message.get("X-Autorespond") or message.get("X-Vacation"):
        return True
    if (message.get("Precedence") or "").strip().lower() in ("auto_reply", "auto-reply"):
        return True
    return bool(_AUTO_SUBJECT.match(str(message.get("Subject", ""))))


def _dsn_failures(statuses: list[Message]) -> list[tuple[str, str, str]]:
    failures = []
    for part in statuses:
        for block in _header_blocks(part):  # the per-message block has no Action: skipped
            action = (block.get("Action") or "").strip().lower()
            recipient = (block.get("Final-Recipient") or block.get("Original-Recipient") or "").strip()
            address = recipient.partition(";")[2].strip().strip("<>") if ";" in recipient else recipient.strip("<>")
            status = (block.get("Status") or "").strip()
            diagnostic = " ".join((block.get("Diagnostic-Code") or "").split())
            diagnostic = diagnostic.partition(";")[2].strip() if ";" in diagnostic else diagnostic
            code = _STATUS.search(status) or _STATUS.search(diagnostic)
            reason = f"{status} {diagnostic}".strip() or action
            if action.startswith("delayed") or (code and code.group(1) == "4"):
                failures.append((address, "soft_bounce", reason))
            elif action.startswith(("fail", "error")):
                failures.append((address, _permanent_kind(code), reason))
    return failures


def _permanent_kind(code: re.Match | None) -> str:
    """5.7.x is a policy block (spam filter, DMARC): the sender's problem, not a dead address.
    5.2.2 (mailbox full) usually clears up: counted like a temporary failure."""
    if code is None:
        return "bounce"
    subject, detail = code.group(2), code.group(3)
    if subject == "7":
        return POLICY
    if subject == "2" and detail == "2":
        return "soft_bounce"
    return "bounce"


def _first_smtp_line(text: str) -> str:
    found = _SMTP_LINE.search(text)
    return " ".join(found.group(0).split())[:300] if found else ""
