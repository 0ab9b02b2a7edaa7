"""Campaigns: create from an issue, send exactly once, resume, cancel, report.

The sending loop talks to two things only: the CampaignStore (SQL) and an Adapter.
Exactly-once rests on one rule: a delivery is marked sent in its own transaction the
moment the adapter reports it accepted. A crash can therefore repeat only messages that
were accepted but not yet recorded: at most one message per SMTP connection, or one API
batch for the HTTP providers.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .config import Settings
from .content import Issue, load_issue
from .delivery import Adapter, make_adapter
from .delivery.base import permanent
from .errors import ContentError, DataError, DeliveryError, NewsletterError
from .lint import Linter
from .message import Message, MessageBuilder
from .models import Campaign, utcnow
from .render import Recipient, RenderedIssue, Renderer
from .store import CampaignStore, Claimed, Summary, worker_id
from .tokens import Tokens


@dataclass
class Progress:
    total: int
    done: int
    sent: int
    failed: int
    rate: float


class Composer:
    """Turns a claimed delivery into the Message for that reader."""

    def __init__(self, settings: Settings):
        self.renderer = Renderer(settings)
        self.tokens = Tokens(settings.secret_key)
        self.builder = MessageBuilder(settings)

    def compose(
        self,
        rendered: RenderedIssue,
        recipient: Recipient,
        campaign_id: int | None,
        delivery_id: int | None = None,
    ) -> Message:
        fields = self.renderer.personal_fields(recipient, campaign_id, self.tokens)
        values = rendered.values_for(recipient, fields)
        # The issue's body template: what every reader shares is encoded once per issue.
        html, text, body = self.builder.template(rendered).fill(values)
        return self.builder.build(
            rendered, recipient, html, text, fields, campaign_id, delivery_id, slot_values=values, body=body
        )


PROGRESS_EVERY = 1.0  # seconds between progress reports


def batch_for_rate(batch_size: int, rate: float) -> int:
    """Small batches under a rate cap, so a batch's messages are spread, not bursted."""
    return batch_size if not rate else max(1, min(batch_size, math.ceil(rate / 10)))


class Sender:
    """Sends one campaign's queued deliveries until none is left, or it is told to stop."""

    def __init__(
        self,
        settings: Settings,
        store: CampaignStore,
        adapter: Adapter,
        progress: Callable[[Progress], None] | None = None,
        stop: threading.Event | None = None,
    ):
        self.settings = settings
        self.store = store
        self.adapter = adapter
        self.composer = Composer(settings)
        self.progress = progress
        self.worker = worker_id()
        self._stop = stop or threading.Event()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, campaign_id: int, pause_on_stop: bool = True) -> Summary:
        """Send until the queue is empty or a stop is requested; a worker stopping passes
        pause_on_stop=False, since other workers carry on with the campaign."""
        campaign = self.store.get(campaign_id)
        if campaign.status in ("done", "cancelled"):
            return self.store.summary(campaign_id)
        rendered = RenderedIssue.from_snapshot(campaign.snapshot)
        self.store.release_dead_claims(campaign_id)
        self.store.set_status(campaign_id, "running")
        rate = campaign.rate or self.settings.rate
        started, reported = time.monotonic(), 0.0
        summary = self.store.summary(campaign_id)
        total, sent_before = summary.total, summary.counts["sent"]
        counts = {"sent": sent_before, "failed": summary.counts["failed"]}
        with self.adapter:
            while not self.stop_requested:
                if self.store.status(campaign_id) != "running":  # cancelled or paused elsewhere
                    break
                claimed = self.store.claim(campaign_id, self.worker, batch_for_rate(self.settings.batch_size, rate))
                if not claimed:
                    queued, next_try = self.store.remaining(campaign_id)
                    if queued == 0:
                        self.store.set_status(campaign_id, "done")
                        break
                    self.store.release_dead_claims(campaign_id)
                    self._wait_until(next_try)
                    continue
                if rate:
                    self._pace(campaign_id, len(claimed), rate)
                    if self.stop_requested:
                        self.store.release([row.delivery_id for row in claimed])
                        break
                for result in self._send(rendered, campaign_id, claimed):
                    if result.accepted:
                        counts["sent"] += 1
                    elif result.status == "permanent":
                        counts["failed"] += 1
                if self.progress and time.monotonic() - reported >= PROGRESS_EVERY:
                    reported = time.monotonic()
                    queued, _ = self.store.remaining(campaign_id)  # a count over the campaign: not per batch
                    elapsed = time.monotonic() - started
                    self.progress(
                        Progress(
                            total,
                            total - queued,
                            counts["sent"],
                            counts["failed"],
                            (counts["sent"] - sent_before) / elapsed if elapsed else 0.0,
                        )
                    )
        if pause_on_stop and self.stop_requested and self.store.status(campaign_id) == "running":
            self.store.set_status(campaign_id, "paused")
        return self.store.summary(campaign_id)

    def _send(self, rendered: RenderedIssue, campaign_id: int, claimed: list[Claimed]):
        """Send one claimed batch, recording each result as it arrives."""
        pending = {row.delivery_id for row in claimed}
        results = self.adapter.send(self._compose_ahead(rendered, campaign_id, claimed))
        renew_after = self.settings.claim_lease / 2
        claimed_at = time.monotonic()
        try:
            for result in results:
                self.store.record(result, campaign_id, self.settings.max_attempts, self.settings.retry_base_delay)
                pending.discard(result.message.delivery_id)
                if time.monotonic() - claimed_at > renew_after:
                    self.store.renew(sorted(pending), self.worker)
                    claimed_at = time.monotonic()
                yield result
                if self.stop_requested:
                    break
        except DeliveryError:
            self.store.set_status(campaign_id, "paused")
            raise
        finally:
            results.close()
            self.store.release(sorted(pending))

    def _compose_ahead(self, rendered: RenderedIssue, campaign_id: int, claimed: list[Claimed]) -> Iterator[Message]:
        """Messages in order, built (MIME bytes included) on a helper thread while the
        adapter waits for the server's replies; a reader whose personalisation fails gets a
        permanent failure, and the batch goes on."""

        def build(row: Claimed) -> Message | ContentError:
            recipient = Recipient(row.subscriber_id, row.email, row.name, row.attributes)
            try:
                message = self.composer.compose(rendered, recipient, campaign_id, row.delivery_id)
            except ContentError as exc:
                return exc
            message.as_bytes()  # cached on the message
            return message

        with ThreadPoolExecutor(1, thread_name_prefix="compose") as helper:
            for row, built in zip(claimed, helper.map(build, claimed), strict=True):
                if isinstance(built, ContentError):
                    failed = Message(row.email, row.name, "", "", "", "", "", "", {}, delivery_id=row.delivery_id)
                    self.store.record(permanent(failed, str(built), bounce=False), campaign_id, 1, 0)
                    continue
                yield built

    def _pace(self, campaign_id: int, count: int, rate: float) -> None:
        """Wait for this batch's slot on the campaign's shared clock (all workers share it)."""
        start = self.store.reserve_send_slots(campaign_id, count, rate, time.time())
        self._stop.wait(max(0.0, start - time.time()))

    def _wait_until(self, moment: datetime | None) -> None:
        delay = (moment - utcnow()).total_seconds() if moment else 1.0
        self._stop.wait(min(max(delay, 0.05), 1.0))


class Campaigns:
    """What `newsletter send` and `newsletter campaigns ...` call."""

    def __init__(self, settings: Settings, store: CampaignStore):
        self.settings = settings
        self.store = store

    def prepare(self, issue_path: Path, force: bool = False) -> tuple[Issue, RenderedIssue]:
        """Lint (refusing on errors unless forced) and render the issue once."""
        findings = Linter(self.settings).lint(issue_path)
        errors = [finding for finding in findings if finding.severity == "error"]
        if errors and not force:
            raise DataError(
                f"the issue has {len(errors)} lint error(s); first: {errors[0]}",
                hint=f"run: newsletter lint {issue_path}  (or send with --force)",
            )
        issue = load_issue(issue_path)
        return issue, Renderer(self.settings).render(issue)

    def segment_for(self, issue: Issue, segment: tuple[str, ...]) -> list[str]:
        return sorted(segment) if segment else sorted(issue.segment)

    def open_campaign(self, slug: str, again: bool) -> Campaign | None:
        """An unfinished campaign of this issue, to resume; refuse to silently send twice."""
        latest = self.store.latest_for(slug)
        if latest is None:
            return None
        if latest.status == "scheduled":
            raise DataError(
                f"issue '{slug}' is scheduled as campaign {latest.id} for "
                f"{latest.scheduled_at.isoformat(timespec='minutes') if latest.scheduled_at else 'later'}",
                hint=f"to send it now instead: newsletter campaigns resume {latest.id}",
            )
        if latest.status in ("running", "paused"):
            return latest
        if latest.status == "done" and not again:
            raise DataError(
                f"issue '{slug}' was already sent as campaign {latest.id}",
                hint="pass --again to send it as a new campaign",
            )
        return None

    def create(
        self,
        rendered: RenderedIssue,
        segment: list[str],
        adapter: str,
        rate: float,
        scheduled_at: datetime | None = None,
    ) -> tuple[Campaign, int]:
        if adapter != "outbox":  # CAN-SPAM: no real send without a physical address, --force or not
            self.settings.require("postal_address", why="before mail goes to real inboxes (CAN-SPAM)")
        campaign, count = self.store.create(rendered, segment, adapter, rate, scheduled_at)
        if count == 0:
            self.store.set_status(campaign.id, "done")
            raise DataError(f"no active subscribers in segment {', '.join(segment) or '(all)'}")
        return campaign, count

    def send_proofs(self, rendered: RenderedIssue, addresses: tuple[str, ...], adapter: Adapter) -> list[str]:
        """Proof copies for staff: real messages, no deliveries, subject marked [TEST]."""
        from .addresses import normalize_email

        composer = Composer(self.settings)
        proof = dataclasses.replace(rendered, subject=f"[TEST] {rendered.subject}")
        messages = [
            composer.compose(proof, Recipient(0, normalize_email(address)[0], "", {}), None) for address in addresses
        ]
        problems = []
        with adapter:
            for result in adapter.send(messages):
                if not result.accepted:
                    problems.append(f"{result.message.to_email}: {result.reason}")
        return problems

    def cancel(self, campaign_id: int) -> None:
        campaign = self.store.get(campaign_id)
        if campaign.status in ("done", "cancelled"):
            raise NewsletterError(f"campaign {campaign_id} is already {campaign.status}")
        self.store.set_status(campaign_id, "cancelled")

    def sender(
        self,
        campaign: Campaign,
        progress: Callable[[Progress], None] | None = None,
        adapter_name: str | None = None,
    ) -> Sender:
        adapter = make_adapter(self.settings, adapter_name or campaign.adapter, folder=f"campaign-{campaign.id}")
        return Sender(self.settings, self.store, adapter, progress)
