"""The agent's side of the node link: HTTP calls to the coordinator's `/api/node/*`,
always outgoing, authenticated with the node's API key.

Errors come in two kinds: `LinkDown` (network faults, timeouts, 5xx, 429: try again
later) and `Rejected` (any other 4xx: trying again will not help).

`WorkNews` carries what the relay loop hears about work to the agent's work loop: a
station's relay exchange, always waiting anyway, also ends when the node has work
(docs/relay.md, "One long poll"), so an idle station holds no work long poll.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import requests

__all__ = ["CoordinatorLink", "LinkDown", "LinkError", "Rejected", "WorkNews"]


class LinkError(Exception):
    pass


class LinkDown(LinkError):
    """The coordinator could not be reached or could not answer; retry later."""


class Rejected(LinkError):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class CoordinatorLink:
    def __init__(self, api_url: str, api_key: str, timeout: float = 30):
        # Who this agent process is, for the coordinator: a restart is a new session,
        # and the previous one's polls get no more work.
        self.session_id = secrets.token_hex(16)
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self._http = requests.Session()
        self._http.headers.update({"X-Api-Key": api_key, "User-Agent": "dsgateway-agent"})

    def _call(self, method: str, path: str, timeout: float | None = None, **kw: Any) -> Any:
        try:
            r = self._http.request(
                method, self.api_url + path, timeout=timeout or self.timeout, **kw
            )
        except requests.RequestException as err:
            raise LinkDown(f"{type(err).__name__}: {err}") from None
        if r.status_code >= 500 or r.status_code == 429:
            raise LinkDown(f"coordinator answered {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            raise LinkDown(f"coordinator answered {r.status_code} without JSON") from None
        if r.status_code >= 400:
            message = body.get("message", "") if isinstance(body, dict) else str(body)
            raise Rejected(r.status_code, message)
        return body

    def me(self) -> dict:
        return self._call("GET", "/node/me")

    def work(self, wait: float, limit: int | None = None) -> list[dict]:
        params: dict[str, Any] = {"wait": wait, "session": self.session_id}
        if limit:
            params["limit"] = limit
        body = self._call("GET", "/node/work", params=params, timeout=self.timeout + wait)
        return body["work"]

    def post_result(
        self,
        run_id: int,
        status: str,
        result: Any = None,
        log: str = "",
        message: str = "",
        outcome: str | None = None,
    ) -> dict:
        payload = {"status": status, "result": result, "log": log, "message": message}
        if outcome is not None:  # "blocked": a disclosure filter refused (for the audit)
            payload["outcome"] = outcome
        return self._call("POST", f"/node/runs/{run_id}/result", json=payload)

    def heartbeat(self, running: list[int]) -> list[int]:
        return self._call("POST", "/node/heartbeat", json={"running": running})["cancel"]

    def heartbeat_reset(self, running: list[int]) -> list[int]:
        """First contact after a (re)start: claimed runs not in `running` are given back."""
        body = {"running": running, "reset": True, "session": self.session_id}
        return self._call("POST", "/node/heartbeat", json=body)["cancel"]

    def close(self) -> None:
        self._http.close()


class WorkNews:
    """Between the relay loop (gateway.agent.relay), whose exchanges watch for work,
    and the agent's work loop (gateway.agent.agent), which fetches it.

    While the coordinator watches (the last exchange was answered with `work_seen`;
    optimistically so at start, as the first exchange looks in the database), the
    work loop waits here instead of holding a work long poll, and polls without
    waiting when told. When the relay link is down, or the coordinator does not know
    the field, the work loop long-polls as agents without a relay do.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.seen = ""  # the coordinator's last `work_seen`, sent back as `work`
        self.supported = True  # False once a coordinator refused the field
        self._watched = True
        self._lost = False  # watched, then not: the work loop re-registers
        self._waiting = False  # work to fetch
        self._closed = False

    def heard(self, answer: dict) -> None:
        """An exchange's answer (the relay loop)."""
        with self._cond:
            if "work_seen" not in answer:
                return
            if answer.get("work"):
                self._waiting = True  # before the version moves on: never lost
            self.seen = answer["work_seen"]
            self._watched = True
            self._cond.notify_all()

    def lost(self) -> None:
        """The relay link is down (the relay loop): the work loop polls itself."""
        with self._cond:
            if self._watched:
                self._lost = True
            self._watched = False
            self._cond.notify_all()

    def unsupported(self) -> None:
        """The coordinator refused `work` (an older one): long polls from now on."""
        with self._cond:
            self.supported = False
        self.lost()

    def again(self) -> None:
        """Look again without being told (the last poll was a full batch)."""
        with self._cond:
            self._waiting = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def next(self, timeout: float) -> str:
        """For the work loop: "work" (fetch it now, without waiting), "lost" (the relay
        link was lost: register again), "poll" (long-poll as usual: nobody watches) or
        "idle" (still watched, nothing in `timeout` s)."""
        with self._cond:
            self._cond.wait_for(lambda: self._waiting or not self._watched or self._closed, timeout)
            if self._waiting:
                self._waiting = False
                return "work"
            if self._lost:
                self._lost = False
                return "lost"
            return "idle" if self._watched or self._closed else "poll"
