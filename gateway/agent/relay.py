"""The agent's relay loop: DataSHIELD HTTP calls that researchers' clients sent to the
coordinator's relay listener, carried to this node's own gateway and answered.

- Worker threads long-poll `POST /api/node/relay/exchange` (the node's API key),
  connecting out only. A worker that has handled a call sends its answer in the same
  request that waits for the next call, so a relayed call costs one request on the
  node link (leader/followers: `pollers` threads wait for calls, 2 by default; a
  worker that takes a call wakes or starts another so that calls arriving meanwhile
  are taken at once; at most `workers`, 32, handle calls at the same time, because a
  `/lastresult` blocks until its command is done and other sessions must not wait for
  it; idle workers beyond the pollers park). After a whole poll without a call only
  one worker keeps waiting (an idle station costs the coordinator one relay poll);
  the first call brings the second back.
- With `news` (gateway.agent.link.WorkNews) the exchanges also watch for work: each
  sends the last `work_seen` as `work`, and an answer saying `work: true` wakes the
  agent's work loop, which then fetches it. That one exchange is then all an idle
  station holds open at the coordinator. A link fault, or a coordinator that does not
  know the field, hands the watching back to the work loop's own long poll.
- Each call is checked against the node's policy (`policy.collaborations`,
  `policy.users` of the agent's configuration), read from the relay token itself, not
  from what the coordinator says; a refused call is answered 403 in the face's format.
- Allowed calls go to the local gateway: when it runs in this very process (`dsgateway
  node run`), straight into its WSGI app, as its HTTP server would hand them over
  (no loopback hop: the relay's added time is mostly such hops); otherwise over a
  kept-alive HTTP connection per worker (gateway.agent.keepalive). The gateway
  verifies the token (signature, issuer, audience, expiry) itself and audits the call
  under the researcher's name, exactly as for a direct login.
- Any network fault: back off (doubling, jittered) and poll again; an answer not yet
  delivered is kept and sent again until its caller's deadline.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import random
import sys
import threading
import time
from datetime import UTC, datetime

import jwt
from werkzeug.test import run_wsgi_app

from gateway.agent.config import Policy
from gateway.agent.keepalive import KeepAlive
from gateway.agent.link import WorkNews

__all__ = ["RelayAgent", "policy_refusal"]

log = logging.getLogger(__name__)

FORWARDED_HEADERS = frozenset({"authorization", "x-opal-auth", "cookie", "content-type", "accept"})
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


def _token(headers: list[list[str]]) -> str | None:
    for name, value in headers:
        lname = name.lower()
        if lname == "authorization":
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                return rest.strip()
        elif lname == "x-opal-auth" and value.strip():
            return value.strip()
    return None


def policy_refusal(item: dict, policy: Policy) -> str | None:
    """Why the node's policy refuses this relay call, or None. The user and the
    collaboration are read from the token the gateway will verify (a coordinator that
    lied about them would be found out there)."""
    token = _token(item.get("headers") or [])
    if token is None:
        return "Refused by the node's policy: relayed calls need a relay token."
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return "Refused by the node's policy: unreadable relay token."
    user, collab = claims.get("sub"), claims.get("collaboration")
    if policy.collaborations is not None and collab not in policy.collaborations:
        return "Refused by the node's policy: collaboration not served here."
    if policy.users is not None and user not in policy.users:
        return f"Refused by the node's policy: user {user!r}."
    return None


def _error_answer(item: dict, status: int, message: str) -> dict:
    if item.get("face") == "opal":
        key = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(
            status, "InternalServerError"
        )
        body = {"code": status, "status": key, "arguments": [message], "message": message}
    else:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = {
            "timestamp": stamp,
            "status": status,
            "error": _REASONS.get(status, "Internal Server Error"),
            "message": message,
            "path": item.get("path", ""),
        }
    data = json.dumps(body).encode()
    return {
        "id": item["id"],
        "status": status,
        "headers": [["Content-Type", "application/json"]],
        "body": base64.b64encode(data).decode("ascii"),
    }


class RelayAgent:
    def __init__(
        self,
        api_url: str,
        api_key: str,
        gateway_url: str,
        policy: Policy,
        *,
        poll_wait: float = 30,
        workers: int = 32,
        pollers: int = 2,
        backoff_initial: float = 0.5,
        backoff_max: float = 30,
        request_timeout: float = 30,
        gateway_app=None,
        news: WorkNews | None = None,
    ):
        self.gateway_app = gateway_app  # the gateway's WSGI app, when in this process
        self.news = news  # work news for the agent's work loop
        self.api_url = api_url.rstrip("/")
        self.gateway_url = gateway_url.rstrip("/")
        self.policy = policy
        self.poll_wait = poll_wait
        self.workers = max(1, workers)
        self.pollers = max(1, min(pollers, self.workers))
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.request_timeout = request_timeout
        self._link_headers = {
            "X-Api-Key": api_key,
            "User-Agent": "dsgateway-agent-relay",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._cond = threading.Condition()
        self._polling = 0  # workers waiting in an exchange for new calls
        self._want = self.pollers  # how many should wait: `pollers`, 1 once idle
        self._parked = 0  # workers with nothing to do
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._backoff = backoff_initial
        self.connected = False
        self.forwarded = 0
        self.refused = 0

    @classmethod
    def from_config(
        cls, cfg, api_key: str, gateway_url: str, gateway_app=None, news: WorkNews | None = None
    ) -> RelayAgent:
        """From the agent's configuration (gateway.agent.config.AgentConfig); with
        `gateway_app`, calls go into the gateway's WSGI app in this process; with
        `news`, the exchanges watch for work for the agent."""
        return cls(
            cfg.api_url,
            api_key,
            gateway_url,
            cfg.policy,
            poll_wait=cfg.poll_wait,
            backoff_initial=cfg.backoff_initial,
            backoff_max=cfg.backoff_max,
            request_timeout=cfg.request_timeout,
            gateway_app=gateway_app,
            news=news,
        )

    # ------------------------------------------------------------ life cycle

    def start(self) -> RelayAgent:
        with self._cond:
            for _ in range(self.pollers):
                self._spawn()
        return self

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        if self.news is not None:
            self.news.lost()  # nobody watches for work any more: the work loop polls
        with self._cond:
            self._cond.notify_all()
            threads = list(self._threads)
        end = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))

    def _spawn(self) -> None:
        """A new worker (the caller holds the lock)."""
        thread = threading.Thread(
            target=self._worker, name=f"agent-relay-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    # ------------------------------------------------------------ the workers

    def _worker(self) -> None:
        link = KeepAlive(self.api_url, timeout=self.request_timeout)
        gateway = KeepAlive(self.gateway_url, timeout=self.request_timeout, proxies=False)
        answers: list[tuple[dict, dict]] = []  # (call, its answer) not yet delivered
        deadline = 0.0  # the latest moment the callers of `answers` still wait
        try:
            while not self._stop.is_set():
                with self._cond:
                    polls = self._polling < self._want
                    if polls:
                        self._polling += 1
                    elif not answers:
                        self._parked += 1
                        self._cond.wait_for(
                            lambda: self._stop.is_set() or self._polling < self._want
                        )
                        self._parked -= 1
                        continue
                sent = bool(answers)
                try:
                    calls = self._exchange(link, answers, self.poll_wait if polls else 0)
                    answers = []
                except Exception as err:  # any fault: back off and try again
                    self._link_lost(err)
                    if answers and time.monotonic() > deadline:
                        log.warning("relay answers dropped: the coordinator is unreachable")
                        answers = []
                    continue
                finally:
                    if polls:
                        with self._cond:
                            self._polling -= 1
                self._link_up()
                if not calls:
                    if polls and not sent:  # a whole poll without a call: idle
                        with self._cond:
                            if self._polling >= 1:  # another waits: one is enough
                                self._want = 1
                    continue
                self._more_pollers()
                for item in calls:
                    answers.append((item, self._handle(gateway, item)))
                    deadline = time.monotonic() + float(item.get("timeout") or 60)
        finally:
            link.close()
            gateway.close()

    def _more_pollers(self) -> None:
        """This worker is busy with a call: if no other waits for the next calls, have
        one do so. (While another waits, this one answers with its next poll.)"""
        with self._cond:
            self._want = self.pollers  # calls are coming: wait for them with more
            if self._polling > 0 or self._stop.is_set():
                return
            if self._parked:
                self._cond.notify()
            elif len(self._threads) < self.workers:
                self._spawn()

    def _link_up(self) -> None:
        if not self.connected:
            log.info("relay connected to %s", self.api_url)
        self.connected = True
        self._backoff = self.backoff_initial

    def _link_lost(self, err: Exception) -> None:
        if self.news is not None:
            self.news.lost()  # the work loop long-polls until the link is back
        if self.connected:
            log.warning("relay link lost (%s); reconnecting with backoff", err)
        self.connected = False
        delay = self._backoff * (0.5 + random.random() / 2)  # noqa: S311 (jitter)
        self._backoff = min(self._backoff * 2, self.backoff_max)
        self._stop.wait(delay)

    def _exchange(
        self, link: KeepAlive, answers: list[tuple[dict, dict]], wait: float
    ) -> list[dict]:
        """Deliver `answers`, then wait up to `wait` s for one call; the calls taken."""
        payload = {"responses": [a for _, a in answers], "wait": wait, "limit": 1}
        news = self.news if self.news is not None and self.news.supported else None
        if news is not None:
            payload["work"] = news.seen
        status, _, data = self._post(link, payload, wait)
        if status in (400, 422) and news is not None and b'"work"' in data:
            # A coordinator from before work news: the work loop long-polls instead.
            log.info("the coordinator does not tell work on the relay exchange")
            news.unsupported()
            del payload["work"]
            status, _, data = self._post(link, payload, wait)
        if status == 413 and answers:  # an answer too large for the relay: say so instead
            message = "The node's answer is too large for the relay (MAX_CONTENT_LENGTH)."
            payload["responses"] = [_error_answer(item, 500, message) for item, _ in answers]
            status, _, data = self._post(link, payload, wait)
        if status != 200:
            raise RuntimeError(f"coordinator answered {status}: {data[:200]!r}")
        body = json.loads(data)
        if body.get("unknown"):
            log.info("relay answers nobody waits for any more: %s", body["unknown"])
        if news is not None:
            news.heard(body)
        return body["requests"]

    def _post(self, link: KeepAlive, payload: dict, wait: float):
        return link.request(
            "POST",
            "/node/relay/exchange",
            json.dumps(payload).encode(),
            self._link_headers,
            timeout=self.request_timeout + wait,
        )

    # ------------------------------------------------------------ one call

    def _handle(self, gateway: KeepAlive, item: dict) -> dict:
        try:
            refusal = policy_refusal(item, self.policy)
            if refusal is not None:
                self.refused += 1
                log.info("relay call %s %s refused: %s", item["method"], item["path"], refusal)
                return _error_answer(item, 403, refusal)
            answer = self._forward(gateway, item)
            self.forwarded += 1
            return answer
        except Exception as err:  # never leave the caller without an answer
            log.exception("relay call failed")
            return _error_answer(item, 500, f"Relay error at the node ({type(err).__name__}).")

    def _forward(self, gateway: KeepAlive, item: dict) -> dict:
        path = item["path"]
        if item.get("query"):
            path += "?" + item["query"]
        # Only what the client sent that DataSHIELD needs: never a cookie of this
        # connection's earlier calls (it keeps none), never anything else.
        headers = {
            name: value
            for name, value in item.get("headers") or []
            if name.lower() in FORWARDED_HEADERS
        }
        if self.gateway_app is not None:
            return self._call_app(item, headers)
        try:
            status, pairs, data = gateway.request(
                item["method"],
                path,
                base64.b64decode(item.get("body") or ""),
                headers,
                timeout=float(item.get("timeout") or 600),
            )
        except (OSError, http.client.HTTPException) as err:
            return _error_answer(
                item, 500, f"The node's gateway could not be reached ({type(err).__name__})."
            )
        return {
            "id": item["id"],
            "status": status,
            "headers": [[k, v] for k, v in pairs],
            "body": base64.b64encode(data).decode("ascii"),
        }

    def _call_app(self, item: dict, headers: dict[str, str]) -> dict:
        """The call through the gateway's WSGI app in this process: the environ its
        HTTP server would build (from the loopback address), the same app, checks and
        audit."""
        body = base64.b64decode(item.get("body") or "")
        environ = {
            "REQUEST_METHOD": item["method"],
            "SCRIPT_NAME": "",
            # WSGI: the path's bytes as latin-1 (the listener had decoded them)
            "PATH_INFO": item["path"].encode("utf-8").decode("latin-1"),
            "QUERY_STRING": item.get("query") or "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "0",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            else:
                environ[f"HTTP_{key}"] = value
        app_iter, status, out_headers = run_wsgi_app(self.gateway_app, environ, buffered=True)
        try:
            data = b"".join(app_iter)
        finally:
            if hasattr(app_iter, "close"):
                app_iter.close()
        return {
            "id": item["id"],
            "status": int(status.split(" ", 1)[0]),
            "headers": [[k, v] for k, v in out_headers.items()],
            "body": base64.b64encode(data).decode("ascii"),
        }
