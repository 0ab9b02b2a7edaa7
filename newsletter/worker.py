"""`newsletter worker`: long-running senders that share campaigns through PostgreSQL.

Any number of worker processes, on any number of machines, point at the same database.
Each claims batches of queued deliveries with SELECT ... FOR UPDATE SKIP LOCKED, so no two
workers hold the same delivery; the campaign's rate limit is a clock row in the database
that every worker draws from. No queue server is involved.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .campaigns import Sender
from .config import Settings
from .delivery import make_adapter
from .errors import ConfigError, NewsletterError
from .store import CampaignStore

POLL_SECONDS = 1.0


class Worker:
    def __init__(
        self,
        settings: Settings,
        store: CampaignStore,
        concurrency: int = 1,
        log: Callable[[str], None] = print,
        compose_process: bool = True,
    ):
        if store.db.dialect != "postgresql":
            raise ConfigError(
                "workers need PostgreSQL: scale-out relies on its row locks (FOR UPDATE SKIP LOCKED)",
                hint="on SQLite, send with `newsletter send` or `newsletter campaigns resume ID`",
            )
        self.settings = settings
        self.store = store
        self.concurrency = concurrency
        self.log = log
        # A compose process per sender pays off while a core is spare; with as many senders
        # as cores, it only adds the pipe's cost (docs/performance.md, "Workers on PostgreSQL").
        self.compose_process = compose_process
        self.stop = threading.Event()
        self.errors: list[str] = []

    def request_stop(self) -> None:
        self.stop.set()

    def run(self, idle_exit: bool = False) -> None:
        """Work until stopped (or, with idle_exit, until no campaign has work left)."""
        threads = [
            threading.Thread(target=self._loop, args=(idle_exit,), name=f"worker-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # short joins keep the main thread free for signals

    def _loop(self, idle_exit: bool) -> None:
        while not self.stop.is_set():
            campaign = self.store.next_runnable()
            if campaign is None:
                if idle_exit:
                    return
                self.stop.wait(POLL_SECONDS)
                continue
            adapter = make_adapter(self.settings, campaign.adapter, folder=f"campaign-{campaign.id}")
            sender = Sender(self.settings, self.store, adapter, stop=self.stop)
            sender.share_tail = True
            sender.use_compose_process = self.compose_process
            try:
                summary = sender.run(campaign.id, pause_on_stop=False)
            except NewsletterError as exc:
                self.errors.append(str(exc))
                self.log(f"campaign {campaign.id}: {exc}")
                self.stop.wait(POLL_SECONDS)
                continue
            if summary.campaign.status == "done":
                self.log(
                    f"campaign {campaign.id} done: sent {summary.counts['sent']}, failed {summary.counts['failed']}"
                )
