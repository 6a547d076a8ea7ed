"""The node agent: connects out to the coordinator, long-polls for work, runs it,
posts the results, heartbeats, and keeps going through any network fault.

- On (re)start it tells the coordinator it holds no runs (heartbeat `reset`), so runs
  a previous process had claimed are handed out again at once.
- Each run executes in a thread of its own (at most `max_concurrent_runs`); its result
  is posted at once, and kept in an outbox and posted again after a network fault, so
  nothing done is lost (a result the coordinator refuses, because the run was cancelled
  or expired meanwhile, is dropped with a log line).
- A heartbeat thread renews the leases of the runs in progress; runs the coordinator
  lists under `cancel` are abandoned (their results are not sent).
- Any fault of the link: wait, doubling from `backoff_initial` to `backoff_max` with
  jitter, and try again; a coordinator restart looks the same.
- With `settings` (a station with a gateway), it reports the station's profiles and
  disclosure settings when it registers (start, reconnect) if they changed since the
  last report (gateway/agent/settings_report.py).
- With `news` (a station that relays: its relay exchange also tells it of work, see
  gateway.agent.link.WorkNews), the work loop holds no long poll while the
  coordinator watches for it: it waits to be told, then polls without waiting. An
  idle station then costs the coordinator one long poll (the relay's), not two.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from gateway.agent.config import AgentConfig
from gateway.agent.executors import Executor, RunOutcome
from gateway.agent.link import CoordinatorLink, LinkDown, Rejected, WorkNews
from gateway.agent.settings_report import SettingsReport

__all__ = ["Agent"]

log = logging.getLogger(__name__)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        link: CoordinatorLink,
        executor: Executor,
        news: WorkNews | None = None,
        settings: SettingsReport | None = None,
    ):
        self.config = config
        self.link = link
        self.executor = executor
        self.news = news
        self.settings = settings
        self._more = False  # the last poll was a full batch: look again without a signal
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running: set[int] = set()
        self._cancelled: set[int] = set()
        self._outbox: deque[tuple[int, RunOutcome]] = deque()
        self._slot_freed = threading.Event()
        self._flush_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(config.max_concurrent_runs, thread_name_prefix="run")
        self._threads: list[threading.Thread] = []
        self._registered = False
        self.connected = False
        self.completed = 0  # results the coordinator accepted (for tests and logs)

    # ------------------------------------------------------------ life cycle

    def start(self) -> Agent:
        for target, name in ((self.run_forever, "agent-poll"), (self._heartbeats, "agent-beat")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._slot_freed.set()
        if self.news is not None:
            self.news.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for t in self._threads:
            t.join(timeout)
        self.link.close()

    @property
    def running(self) -> list[int]:
        with self._lock:
            return sorted(self._running)

    # ------------------------------------------------------------ the poll loop

    def run_forever(self) -> None:
        backoff = self.config.backoff_initial
        while not self._stop.is_set():
            try:
                self._once()
                backoff = self.config.backoff_initial
            except LinkDown as err:
                self._lost(f"coordinator unreachable ({err})")
                backoff = self._pause(backoff)
            except Rejected as err:
                # A wrong key, a removed node: say so loudly, keep trying slowly (the
                # operator may fix it without restarting the station).
                self._lost(f"coordinator refused the agent ({err})")
                log.error("coordinator refused the agent: %s", err)
                backoff = self._pause(self.config.backoff_max)
            except Exception:  # a bug must not end the agent: log it, back off, go on
                log.exception("agent loop error")
                self._lost("agent loop error")
                backoff = self._pause(backoff)

    def _once(self) -> None:
        if not self._registered:
            self.link.heartbeat_reset(self.running)
            if self.settings is not None:  # a link fault: reported at the next attempt
                self.settings.report()
            self._registered = True
            self._connected()
        self._flush_outbox()
        free = self.config.max_concurrent_runs - len(self.running)
        if free <= 0:
            self._slot_freed.wait(1.0)
            self._slot_freed.clear()
            return
        # Results waiting to go out: poll without waiting so they are retried soon.
        wait = 0 if self._outbox else self.config.poll_wait
        if self._more:
            wait = 0
        elif not self._outbox and self.news is not None:
            heard = self.news.next(self.config.poll_wait)
            if heard == "idle":  # the relay exchange watches; nothing yet
                return
            if heard == "lost":  # as after a failed poll: tell the coordinator again
                self._registered = False
                return
            if heard == "work":
                wait = 0
        items = self.link.work(wait=wait, limit=free)
        self._more = len(items) >= free  # a full batch: more may be waiting
        self._connected()
        if self._stop.is_set():
            return  # stopping: the coordinator hands these out again after a restart
        for item in items:
            self._start_run(item)

    def _connected(self) -> None:
        if not self.connected:
            log.info("connected to the coordinator at %s", self.config.api_url)
        self.connected = True

    def _lost(self, why: str) -> None:
        if self.connected:
            log.warning("%s; reconnecting with backoff", why)
        self.connected = False
        self._registered = False  # a restarted coordinator may have re-queued our runs

    def _pause(self, backoff: float) -> float:
        delay = backoff * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not crypto)
        self._stop.wait(delay)
        return min(backoff * 2, self.config.backoff_max)

    # ------------------------------------------------------------ runs

    def _start_run(self, item: dict) -> None:
        run_id = item["run_id"]
        with self._lock:
            if run_id in self._running:
                return
            self._running.add(run_id)
            self._cancelled.discard(run_id)
        log.info("run %s: %s for %s", run_id, item["algorithm"], item.get("user"))
        self._pool.submit(self._execute, item)

    def _execute(self, item: dict) -> None:
        run_id = item["run_id"]
        try:
            outcome = self.executor.run(item)
        except Exception as err:  # the executor should not raise; never lose the run
            log.exception("run %s crashed", run_id)
            outcome = RunOutcome("failed", message=f"Agent error: {type(err).__name__}")
        with self._lock:
            cancelled = run_id in self._cancelled
        if cancelled:
            log.info("run %s was cancelled; its result is dropped", run_id)
        else:
            with self._lock:
                self._outbox.append((run_id, outcome))
            try:
                self._flush_outbox()
            except LinkDown:
                pass  # the poll loop posts it when the link is back
        with self._lock:
            self._running.discard(run_id)
        self._slot_freed.set()

    def _flush_outbox(self) -> None:
        with self._flush_lock:  # one poster at a time: each result goes out once
            self._flush()

    def _flush(self) -> None:
        while True:
            with self._lock:
                if not self._outbox:
                    return
                run_id, outcome = self._outbox[0]
            try:
                self.link.post_result(
                    run_id,
                    outcome.status,
                    outcome.result,
                    outcome.log,
                    outcome.message,
                    getattr(outcome, "outcome", None),
                )
                self.completed += 1
            except Rejected as err:
                log.warning("result of run %s refused (%s); dropped", run_id, err)
            with self._lock:
                if self._outbox and self._outbox[0][0] == run_id:
                    self._outbox.popleft()

    # ------------------------------------------------------------ heartbeats

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.config.heartbeat_interval):
            running = self.running
            if not running:
                continue
            try:
                cancel = self.link.heartbeat(running)
            except (LinkDown, Rejected):
                continue
            if cancel:
                log.info("coordinator cancelled runs %s", cancel)
                with self._lock:
                    self._cancelled.update(cancel)
                stop = getattr(self.executor, "cancel", None)  # image runs: kill the container
                for run_id in cancel if stop is not None else ():
                    stop(run_id)
