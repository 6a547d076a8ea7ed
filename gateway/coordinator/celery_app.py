"""Celery for the coordinator, the Flask way: `celery_init_app(app)` makes a Celery app
whose tasks run inside the Flask app context (so they use the same settings and
database), and the tasks themselves are `@shared_task`s in tasks.py.

Two deployments, one interface:
- Redis (`CELERY_BROKER_URL=redis://...`): tasks go through Redis to `dsgateway
  coordinator worker` processes, on as many machines as needed. `acks_late` with
  `reject_on_worker_lost`: a task is acknowledged only when it has finished, so a worker
  killed mid-task leaves it to be delivered again (the tasks are idempotent).
- Embedded (`memory://`, the default): kombu's in-memory transport, consumed by a Celery
  worker running in a thread of the coordinator process (`EmbeddedWorker`); its
  subclass in memory_transport.py wakes the worker when a message is put instead of
  polling the queues every 50 ms, so an idle coordinator stays asleep. The same
  task code, the same `delay()` calls, asynchronous like production, no Redis. Chosen
  over `task_always_eager` because eager tasks would run inside the HTTP request that
  queued them: an agent posting the last result would wait for the aggregation, and a
  failure in the task would turn into a failure of that request.

Task state never lives in Celery: every task reads and writes the database, and the
periodic `sweep` re-dispatches what a lost message left behind.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from flask import Flask

__all__ = ["EmbeddedWorker", "celery_init_app", "is_embedded"]

log = logging.getLogger(__name__)


def is_embedded(app: Flask) -> bool:
    return str(app.config["CELERY_BROKER_URL"]).startswith("memory://")


_APPS: weakref.WeakSet[Flask] = weakref.WeakSet()


@worker_process_init.connect
def _fresh_connections(**_kw: Any) -> None:
    # A forked (prefork) worker must not share its parent's database connections.
    from gateway.coordinator import db

    for app in list(_APPS):
        db.engine(app).dispose(close=False)


# The embedded broker's transport: kombu's memory transport that waits for a put
# instead of polling (memory_transport.py). Set as `broker_transport`, it wins over the
# URL's `memory` scheme for every connection of the app, its publishers included (their
# puts are what wake the worker), and the URL stays `memory://`.
EMBEDDED_TRANSPORT = "gateway.coordinator.memory_transport:Transport"


def _transport_options(app: Flask) -> dict[str, Any]:
    if is_embedded(app):
        # Only if waiting for messages ever fails: the transport then polls the
        # in-memory channel, and 50 ms keeps dispatch prompt.
        return {"polling_interval": 0.05}
    # Redis: a task not acknowledged within an hour (its worker died) is delivered again.
    return {"visibility_timeout": 3600}


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(
        {
            "broker_url": app.config["CELERY_BROKER_URL"],
            "broker_transport": EMBEDDED_TRANSPORT if is_embedded(app) else None,
            "result_backend": app.config["CELERY_RESULT_BACKEND"],
            "task_default_queue": app.config["CELERY_QUEUE"],
            "task_ignore_result": True,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "task_always_eager": bool(app.config.get("CELERY_TASK_ALWAYS_EAGER", False)),
            "task_eager_propagates": True,
            "broker_connection_retry_on_startup": True,
            # A publish while Redis is away: retry briefly, then give up (the task row
            # stays pending and `sweep` dispatches it later).
            "task_publish_retry_policy": {
                "max_retries": 3,
                "interval_start": 0.2,
                "interval_step": 0.5,
                "interval_max": 1.0,
            },
            "broker_transport_options": _transport_options(app),
            "beat_schedule": {
                "sweep": {
                    "task": "gateway.coordinator.tasks.sweep",
                    "schedule": float(app.config["SWEEP_INTERVAL"]),
                }
            },
            "imports": ["gateway.coordinator.tasks"],
        }
    )
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    _APPS.add(app)

    # Register the shared tasks with this app now (the worker imports them too).
    import gateway.coordinator.tasks  # noqa: F401

    return celery_app


class EmbeddedWorker:
    """A Celery worker on the in-memory transport, in a thread of this process, plus a
    timer that queues `sweep` every SWEEP_INTERVAL seconds (the embedded beat)."""

    def __init__(self, app: Flask):
        if not is_embedded(app):
            raise ValueError("EmbeddedWorker is for the memory:// broker only")
        self.app = app
        self.celery: Celery = app.extensions["celery"]
        self._stop = threading.Event()
        self._worker = None
        self._threads: list[threading.Thread] = []

    def start(self) -> EmbeddedWorker:
        self._worker = self.celery.WorkController(
            pool_cls="solo",
            concurrency=1,
            loglevel="WARNING",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            hostname="embedded@dsgateway",
        )
        worker_thread = threading.Thread(
            target=self._worker.start, name="dsgateway-celery", daemon=True
        )
        beat_thread = threading.Thread(target=self._beat, name="dsgateway-beat", daemon=True)
        self._threads = [worker_thread, beat_thread]
        for t in self._threads:
            t.start()
        return self

    def _beat(self) -> None:
        sweep = self.celery.tasks["gateway.coordinator.tasks.sweep"]
        interval = float(self.app.config["SWEEP_INTERVAL"])
        while not self._stop.wait(interval):
            try:
                sweep.delay()
            except Exception:  # keep beating
                log.exception("could not queue the sweep")

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.stop(in_sighandler=False)
        for t in self._threads:
            t.join(timeout=10)
