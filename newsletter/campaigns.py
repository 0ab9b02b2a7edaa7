"""Campaigns: create from an issue, send exactly once, resume, cancel, retry, report.

The sending loop talks to two things only: the CampaignStore (SQL) and an Adapter.
Exactly-once rests on these rules:
- a delivery is marked sent in its own transaction the moment the adapter reports it
  accepted, and only by the worker that still holds its claim (fencing);
- right before each message goes out, the reader's status, the campaign's status and the
  claim are checked; a claim found gone stops the batch;
- an answer lost after the whole message was handed over is `unknown`, never retried
  blindly; an unreachable server pauses the campaign instead of failing its deliveries.
A crash can therefore repeat only messages that were accepted but not yet recorded: at
most one message per SMTP connection, or one API batch for the HTTP providers.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from .addresses import redact_addresses
from .compose_process import ComposeProcess, compose_row, fork_available
from .config import Settings
from .delivery import PERMANENT, TRANSIENT, UNKNOWN, Adapter, Result, make_adapter
from .delivery.base import permanent
from .errors import DataError, DeliveryError, NewsletterError
from .message import Message, MessageBuilder
from .models import Campaign, utcnow
from .render import Recipient, RenderedIssue, Renderer
from .store import LEFT, LOST, SEND, CampaignStore, Claimed, Recorder, Summary, worker_id
from .tokens import Tokens

if TYPE_CHECKING:
    from .content import Issue

log = logging.getLogger("newsletter.campaigns")


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


def _next_pending(order: list[int], position: dict[int, int], pending: set[int], current: int) -> int | None:
    """The delivery after `current` in claim order that is still to be sent, if any."""
    index = position.get(current, len(order)) + 1
    while index < len(order) and order[index] not in pending:
        index += 1
    return order[index] if index < len(order) else None


RECORD_PATIENCE = 600.0  # seconds a known answer waits for a busy database before the send stops


def _patiently(action: Callable[[], None], what: str, patience: float = RECORD_PATIENCE) -> None:
    """Run a recording until the database takes it (a lock held by another program, a
    failover): an answer the server gave cannot be asked for again."""
    deadline = time.monotonic() + patience
    delay = 0.1
    while True:
        try:
            action()
            return
        except (OperationalError, sqlite3.OperationalError) as exc:
            if not _database_busy(exc) or time.monotonic() + delay > deadline:
                log.error("%s: the server's answer could not be recorded (%s); a resume may send it again", what, exc)
                raise
            log.warning("database busy; holding the server's answer for %s until it can be recorded", what)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _database_busy(exc: Exception) -> bool:
    text = str(getattr(exc, "orig", None) or exc).lower()
    return "locked" in text or "busy" in text


def batch_for_rate(batch_size: int, rate: float) -> int:
    """Small batches under a rate cap, so a batch's messages are spread, not bursted."""
    return batch_size if not rate else max(1, min(batch_size, math.ceil(rate / 10)))


class OutageWatch:
    """A run of transient (or unknown) outcomes for different readers, with nothing
    delivered in between, is the server's problem, not the readers': pause, do not fail."""

    def __init__(self, limit: int):
        self.limit = limit
        self.readers: set[int | None] = set()

    def observe(self, result: Result) -> None:
        if result.status not in (TRANSIENT, UNKNOWN):
            self.readers.clear()
            return
        self.readers.add(result.message.delivery_id)
        if len(self.readers) >= self.limit:
            raise DeliveryError(
                f"{len(self.readers)} messages in a row to different readers could not be delivered "
                f"(last: {redact_addresses(result.reason)}); the server looks unavailable"
            )


class ClaimKeeper:
    """Renews a batch's claims on a helper thread while the batch is in flight (one answer
    may take up to smtp_data_timeout, longer than a lease), so no other worker takes a
    message this one may still be handing over. A renewal that finds any claim gone marks
    the batch lost: it stops before its next message."""

    def __init__(self, store: CampaignStore, worker: str, pending: set[int], every: float):
        self.store = store
        self.worker = worker
        self.pending = pending
        self.every = every
        self.lock = threading.RLock()  # held while `pending` and the rows it names change
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="claim-renewal", daemon=True)

    def __enter__(self) -> ClaimKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._done.wait(self.every):
            with self.lock:
                if self.pending and self.store.renew(sorted(self.pending), self.worker) < len(self.pending):
                    self.lost.set()
                    return


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
        self.late = 0  # answers this sender learned after losing the claim
        self._recorder: Recorder | None = None
        self._prechecked: dict[int, str] = {}  # delivery -> its check, run in an earlier record's commit
        self._last_taken: int | None = None  # the latest delivery handed to the adapter
        self.claims_lost = 0  # batches stopped because their claim had passed to another worker
        self._compose_process: ComposeProcess | None = None
        self.share_tail = False  # a worker among others: split the queue's last batches (CampaignStore.claim)
        self.use_compose_process = True  # where the adapter sends bytes and the platform forks

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, campaign_id: int, pause_on_stop: bool = True) -> Summary:
        """Send until the queue is empty or a stop is requested; a worker stopping passes
        pause_on_stop=False, since other workers carry on with the campaign. An outage
        (DeliveryError) pauses the campaign with its deliveries still queued, and is raised."""
        campaign = self.store.get(campaign_id)
        if campaign.status in ("done", "cancelled"):
            return self.store.summary(campaign_id)
        rendered = RenderedIssue.from_snapshot(campaign.snapshot)
        self.store.release_dead_claims(campaign_id)
        self.store.skip_already_received(campaign)
        self.store.set_status(campaign_id, "running")
        rate = campaign.rate or self.settings.rate
        started, reported = time.monotonic(), 0.0
        summary = self.store.summary(campaign_id)
        total, sent_before = summary.total, summary.counts["sent"]
        counts = {"sent": sent_before, "failed": summary.counts["failed"]}
        watch = OutageWatch(self.settings.pause_after_failures)
        self._recorder = self.store.recorder(self.worker, self.settings.synchronous_commit)
        self._start_compose_process(rendered, campaign_id)
        try:
            with self.adapter:
                idle = 0  # waits in a row with nothing to claim
                while not self.stop_requested:
                    if self.store.status(campaign_id) != "running":  # cancelled or paused elsewhere
                        break
                    size = batch_for_rate(self.settings.batch_size, rate)
                    claimed = self.store.claim(campaign_id, self.worker, size, share_tail=self.share_tail)
                    if not claimed:
                        queued, next_try = self.store.remaining(campaign_id)
                        if queued == 0:
                            self.store.set_status(campaign_id, "done")
                            break
                        self.store.release_dead_claims(campaign_id)
                        self._wait_until(next_try, idle)
                        idle += 1
                        continue
                    idle = 0
                    if rate:
                        self._pace(campaign_id, len(claimed), rate)
                        if self.stop_requested:
                            self.store.release([row.delivery_id for row in claimed], self.worker)
                            break
                    for result in self._send(rendered, campaign_id, claimed):
                        watch.observe(result)
                        if result.accepted:
                            counts["sent"] += 1
                        elif result.status == PERMANENT:
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
        except DeliveryError:
            self.store.set_status(campaign_id, "paused")
            raise
        finally:
            self._stop_compose_process()
            self._recorder.close()
        if pause_on_stop and self.stop_requested and self.store.status(campaign_id) == "running":
            self.store.set_status(campaign_id, "paused")
        return self.store.summary(campaign_id)

    def _send(self, rendered: RenderedIssue, campaign_id: int, claimed: list[Claimed]) -> Iterator[Result]:
        """Send one claimed batch, recording each result as it arrives. `pending` holds the
        deliveries this sender still holds and has no answer for; whatever is left in it
        at the end (a stop, a lost claim, an error) goes back to the queue."""
        pending = {row.delivery_id for row in claimed}
        order = [row.delivery_id for row in claimed]
        position = {delivery_id: index for index, delivery_id in enumerate(order)}
        self._prechecked.clear()
        self._last_taken = None
        with ClaimKeeper(self.store, self.worker, pending, self.settings.claim_lease / 3) as keeper:

            def record(result: Result) -> None:
                """Runs in the thread that sent the message, before its connection takes the
                next one. One connection: the next message's check rides in the same commit.
                The server has answered: a busy database is waited out, not given up on, or
                a resume would send this message again."""
                _patiently(lambda: record_now(result), f"delivery {result.message.delivery_id}")

            def record_now(result: Result) -> None:
                delivery_id = result.message.delivery_id
                with keeper.lock:
                    marked = False
                    if result.accepted and delivery_id is not None:
                        following = self._to_check_next(order, position, pending, delivery_id)
                        marked, verdict = self._recorder.mark_sent(delivery_id, result.provider_id, following)
                        if marked and verdict is not None and following is not None:
                            self._prechecked[following] = verdict
                    if not marked and not self.store.record(
                        result, campaign_id, self.worker, self.settings.max_attempts, self.settings.retry_base_delay
                    ):
                        self.late += 1
                    pending.discard(delivery_id)

            composed = self._compose_ahead(rendered, campaign_id, claimed, keeper)
            results = self.adapter.send(self._checked(composed, keeper), record=record)
            try:
                yield from results
            finally:
                results.close()
                with keeper.lock:
                    self.store.release(sorted(pending), self.worker)

    def _checked(self, messages: Iterator[Message], keeper: ClaimKeeper) -> Iterator[Message]:
        """Hand each message to the adapter only after checking, right then, that the
        reader is still subscribed, the campaign still running and the claim still ours.
        A claim found gone (here, or by the renewal thread) stops the batch at once."""
        for message in messages:
            if self.stop_requested:
                return
            self._last_taken = message.delivery_id
            verdict = LOST if keeper.lost.is_set() else self._verdict(message.delivery_id)
            if verdict == SEND:
                yield message
            elif verdict == LEFT:
                with keeper.lock:
                    self.store.skip_left(message.delivery_id, self.worker)
                    keeper.pending.discard(message.delivery_id)
            elif verdict == LOST:
                self._lost_claim(message)
                return
            else:  # HALTED: cancelled or paused
                return

    def _to_check_next(
        self, order: list[int], position: dict[int, int], pending: set[int], recorded: int
    ) -> int | None:
        """The delivery whose check rides in the commit that records `recorded`: on one
        connection the one after it, which that connection sends next; on several, the next
        one still to be taken (the first connection to come free takes it), unless another
        connection's commit already checked it."""
        if not self.adapter.parallel:
            return _next_pending(order, position, pending, recorded)
        following = (
            _next_pending(order, position, pending, self._last_taken) if self._last_taken is not None else order[0]
        )
        return None if following is None or following in self._prechecked else following

    def _verdict(self, delivery_id: int) -> str:
        """check_before_send, taken from an earlier commit of this batch when it came along
        (the previous message's on this connection, or on a pool any connection's last)."""
        verdict = self._prechecked.pop(delivery_id, None)
        if not self.adapter.parallel:
            self._prechecked.clear()  # one connection: only the message right after may use one
        return verdict if verdict is not None else self._recorder.check(delivery_id)

    def _lost_claim(self, message: Message) -> None:
        self.claims_lost += 1
        log.warning(
            "campaign %s: this worker's claim on delivery %s passed to another worker; batch stopped",
            message.headers.get("X-Newsletter-Campaign", "?"),
            message.delivery_id,
        )

    def _compose_ahead(
        self, rendered: RenderedIssue, campaign_id: int, claimed: list[Claimed], keeper: ClaimKeeper
    ) -> Iterator[Message]:
        """Messages in order, built (MIME bytes included) ahead of the sending: in the
        compose process where there is one, else on a helper thread while the adapter waits
        for the server's replies. Whatever goes wrong building one reader's message
        (personalisation, an address, signing) fails that delivery alone."""
        if self._compose_process is not None:
            yield from self._record_failures(claimed, self._compose_process.compose(claimed), campaign_id, keeper)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="compose") as helper:
            answers = helper.map(lambda row: compose_row(self.composer, rendered, campaign_id, row), claimed)
            yield from self._record_failures(claimed, answers, campaign_id, keeper)

    def _record_failures(
        self, claimed: list[Claimed], answers: Iterator[Message | str], campaign_id: int, keeper: ClaimKeeper
    ) -> Iterator[Message]:
        """The messages built; a reader whose message could not be built fails alone, now."""
        for row, built in zip(claimed, answers, strict=True):
            if isinstance(built, str):
                failed = Message(row.email, row.name, "", "", "", "", "", "", {}, delivery_id=row.delivery_id)
                with keeper.lock:
                    self.store.record(
                        permanent(failed, redact_addresses(built), bounce=False), campaign_id, self.worker, 1, 0
                    )
                    keeper.pending.discard(row.delivery_id)
                continue
            yield built

    def _start_compose_process(self, rendered: RenderedIssue, campaign_id: int) -> None:
        """Fork the compose process for an adapter that sends bytes (SMTP), once the issue
        is rendered; elsewhere (no fork, an HTTP API that wants the documents) the helper
        thread composes."""
        if self.use_compose_process and getattr(self.adapter, "sends_wire", False) and fork_available():
            self._compose_process = ComposeProcess(self.composer, rendered, campaign_id)

    def _stop_compose_process(self) -> None:
        if self._compose_process is not None:
            self._compose_process.close()
            self._compose_process = None

    def _pace(self, campaign_id: int, count: int, rate: float) -> None:
        """Wait for this batch's slot on the campaign's shared clock (all workers share it)."""
        start = self.store.reserve_send_slots(campaign_id, count, rate, time.time())
        self._stop.wait(max(0.0, start - time.time()))

    def _wait_until(self, moment: datetime | None, idle: int = 0) -> None:
        """Wait for the next try, looking again sooner at first: the queue's last deliveries
        are usually claimed by other workers about to finish them, so a worker told to exit
        when idle notices the end within 50-100 ms instead of a whole second."""
        delay = (moment - utcnow()).total_seconds() if moment else 1.0
        self._stop.wait(min(max(delay, 0.05), 0.05 * 2 ** min(idle, 5), 1.0))


@dataclass
class SendPlan:
    """What `send ISSUE` will do, decided before anything is sent or asked."""

    issue: Issue
    rendered: RenderedIssue
    resume: Campaign | None  # an unfinished campaign of this issue: continue it
    segment: list[str]
    total: int  # active subscribers in the segment
    already: int  # of them, how many were already sent this issue (in any campaign)
    previous: list[Campaign]
    repeat: bool  # --again: send to those who already got it too

    @property
    def count(self) -> int:
        """Deliveries a new campaign would queue."""
        return self.total if self.repeat else self.total - self.already

    @property
    def label(self) -> str:
        return ", ".join(self.segment) or "all active subscribers"


class Campaigns:
    """What `newsletter send` and `newsletter campaigns ...` call: every decision lives here."""

    def __init__(self, settings: Settings, store: CampaignStore):
        self.settings = settings
        self.store = store

    def prepare(self, issue_path: Path, force: bool = False) -> tuple[Issue, RenderedIssue]:
        """Lint (refusing on errors unless forced) and render the issue once."""
        # Loaded here: a worker sends rendered snapshots and needs none of lint, contrast or Chromium.
        from .chromium import chromium_available
        from .content import load_issue
        from .contrast import check_issue_contrast, contrast_findings
        from .lint import Linter

        linter = Linter(self.settings)
        findings = linter.lint(issue_path, errors_only=True)  # only errors refuse a send
        if not force and chromium_available():  # `lint --contrast`, wherever a browser can measure it
            if linter.rendered is not None:  # measure the lint's render: CSS is inlined once per issue
                findings += contrast_findings(self.settings, linter.rendered, linter.issue)
            else:
                findings += check_issue_contrast(self.settings, issue_path)
        errors = [finding for finding in findings if finding.severity == "error"]
        if errors and not force:
            contrast = " --contrast" if any(finding.rule == "contrast" for finding in errors) else ""
            raise DataError(
                f"the issue has {len(errors)} lint error(s); first: {errors[0]}",
                hint=f"run: newsletter lint {issue_path}{contrast}  (or send with --force)",
            )
        if linter.issue is not None and linter.rendered is not None:  # the lint's render: CSS inlined once
            return linter.issue, linter.rendered
        issue = load_issue(issue_path)
        return issue, Renderer(self.settings).render(issue)

    def segment_for(self, issue: Issue, segment: tuple[str, ...]) -> list[str]:
        if segment:
            self.check_tags(segment)
            return sorted(segment)
        return sorted(issue.segment)

    def check_tags(self, tags: tuple[str, ...] | list[str]) -> None:
        """A tag nobody carries is a typo far more often than an empty segment."""
        existing = self.store.tags_in_use()
        for tag in tags:
            if tag in existing:
                continue
            close = difflib.get_close_matches(tag, existing, n=len(existing), cutoff=0.0)
            shown = ", ".join(close[:12]) + (", ..." if len(close) > 12 else "")
            raise DataError(
                f"no subscriber has the tag '{tag}'",
                hint=f"tags in use (closest first): {shown}" if existing else "no subscriber has any tag yet",
            )

    def plan_send(
        self, issue_path: Path, segments: tuple[str, ...] = (), again: bool = False, force: bool = False
    ) -> SendPlan:
        """Resume the unfinished campaign of this issue, or plan a new one that leaves out
        everyone who already received the issue (all of them with --again)."""
        issue, rendered = self.prepare(issue_path, force=force)
        open_ = self.store.open_campaigns(rendered.slug)
        previous = self.store.campaigns_of(rendered.slug)
        if open_:
            latest = open_[-1]
            if latest.status == "scheduled":
                when = latest.scheduled_at.isoformat(timespec="minutes") if latest.scheduled_at else "later"
                raise DataError(
                    f"issue '{rendered.slug}' is scheduled as campaign {latest.id} for {when}",
                    hint=f"to send it now instead: newsletter campaigns resume {latest.id}",
                )
            return SendPlan(issue, rendered, latest, list(latest.segment or []), 0, 0, previous, latest.repeat)
        segment = self.segment_for(issue, segments)
        total = self.store.count_recipients(segment)
        already = self.store.already_received(rendered.slug, segment) if previous else 0
        plan = SendPlan(issue, rendered, None, segment, total, already, previous, again)
        if total == 0:
            raise DataError(f"no active subscribers in segment {plan.label}")
        if plan.count == 0:
            ids = ", ".join(str(campaign.id) for campaign in previous)
            raise DataError(
                f"everyone in {plan.label} already received '{rendered.slug}' (campaign {ids})",
                hint="to send it to them a second time: add --again",
            )
        return plan

    def create(
        self,
        plan: SendPlan | RenderedIssue,
        segment: list[str] | None = None,
        adapter: str | None = None,
        rate: float | None = None,
        scheduled_at: datetime | None = None,
        check_adapter: bool = True,
    ) -> tuple[Campaign, int]:
        if isinstance(plan, RenderedIssue):  # create(rendered, segment, ...): a new campaign, no repeats
            rendered, repeat = plan, False
        else:
            rendered, segment, repeat = plan.rendered, plan.segment, plan.repeat
        adapter = adapter or self.settings.adapter
        # Every setting the adapter needs is checked before a campaign exists: a campaign
        # created and then refused would take over every later `send` of the issue. A campaign
        # queued for workers is sent with the workers' settings, checked when they take it.
        if check_adapter:
            self.describe_adapter(adapter)  # ConfigError; the postal address too
        else:
            self._require_postal_address(adapter)
        from .review import require_sign_off

        require_sign_off(rendered, adapter)  # nor without a clinician's sign-off of this version
        campaign, count = self.store.create(
            rendered, segment or [], adapter, self.settings.rate if rate is None else rate, scheduled_at, repeat
        )
        if count == 0:
            self.store.set_status(campaign.id, "done")
            raise DataError(f"no active subscribers in segment {', '.join(segment or []) or '(all)'}")
        return campaign, count

    def _require_postal_address(self, adapter: str) -> None:
        if adapter != "outbox":  # CAN-SPAM: no real send without a physical address, --force or not
            self.settings.require("postal_address", why="before mail goes to real inboxes (CAN-SPAM)")

    def describe_adapter(self, name: str | None = None) -> str:
        """Which adapter a send would use and where the mail goes, checking its settings."""
        name = name or self.settings.adapter
        adapter = make_adapter(self.settings, name, folder="campaign-N")  # ConfigError if a setting is missing
        self._require_postal_address(name)
        if name == "outbox":
            return f"outbox: .eml files under {Path(self.settings.outbox_dir) / 'campaign-N'}/ (nothing is mailed)"
        if name == "smtp":
            return f"smtp: the mail server {adapter.where}"
        return f"{name}: the provider API at {adapter.base_url}"

    def send_proofs(self, rendered: RenderedIssue, addresses: tuple[str, ...], adapter: Adapter) -> list[Result]:
        """Proof copies for staff: real messages, no deliveries, subject marked [TEST]."""
        from .addresses import normalize_email

        composer = Composer(self.settings)
        proof = dataclasses.replace(rendered, subject=f"[TEST] {rendered.subject}")
        messages = [
            composer.compose(proof, Recipient(0, normalize_email(address)[0], "", {}), None) for address in addresses
        ]
        with adapter:
            return list(adapter.send(messages))

    def pause_if_running(self, campaign_id: int) -> None:
        """After an interrupt: show the campaign as paused (best effort; the database may be the
        reason the send stopped)."""
        try:
            if self.store.status(campaign_id) == "running":
                self.store.set_status(campaign_id, "paused")
        except Exception:  # noqa: BLE001 - the interrupt is what the user must hear about
            log.warning("campaign %s: could not be marked paused", campaign_id)

    def cancel(self, campaign_id: int) -> None:
        campaign = self.store.get(campaign_id)
        if campaign.status in ("done", "cancelled"):
            raise NewsletterError(f"campaign {campaign_id} is already {campaign.status}")
        self.store.set_status(campaign_id, "cancelled")

    def reopen(self, campaign_id: int) -> Campaign:
        """Make a stopped campaign sendable again (a cancelled one too, to finish it)."""
        campaign = self.store.get(campaign_id)
        if campaign.status == "cancelled":
            others = [c for c in self.store.open_campaigns(campaign.slug) if c.id != campaign_id]
            if others:
                raise DataError(
                    f"campaign {others[-1].id} of the same issue is {others[-1].status}",
                    hint=f"finish that one: newsletter campaigns resume {others[-1].id}",
                )
            self.store.set_status(campaign_id, "paused")
        return self.store.get(campaign_id)

    def retry(self, campaign_id: int, include_unknown: bool) -> tuple[Campaign, int, int]:
        """Queue again what failed for transient reasons (and the unknown ones on request)."""
        campaign = self.store.get(campaign_id)
        transient_count, unknown_count = self.store.requeue(campaign_id, include_unknown)
        if transient_count + unknown_count and campaign.status in ("done", "cancelled"):
            self.store.set_status(campaign_id, "paused")
        return self.store.get(campaign_id), transient_count, unknown_count

    def sender(
        self,
        campaign: Campaign,
        progress: Callable[[Progress], None] | None = None,
        adapter_name: str | None = None,
    ) -> Sender:
        adapter = make_adapter(self.settings, adapter_name or campaign.adapter, folder=f"campaign-{campaign.id}")
        return Sender(self.settings, self.store, adapter, progress)
