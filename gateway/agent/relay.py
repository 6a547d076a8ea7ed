"""The agent's relay loop: DataSHIELD HTTP calls that researchers' clients sent to the
coordinator's relay listener, carried to this node's own gateway and answered.

- A thread long-polls `GET /api/node/relay` (the node's API key), connecting out only.
- Each call is checked against the node's policy (`policy.collaborations`,
  `policy.users` of the agent's configuration), read from the relay token itself, not
  from what the coordinator says; a refused call is answered 403 in the face's format.
- Allowed calls go to the local gateway over HTTP, in a thread pool (32 threads: a
  `/lastresult` blocks until its command is done, and other sessions must not wait
  for it; more sessions blocked at once than threads would queue the rest). The
  gateway verifies the token (signature, issuer, audience, expiry) itself and audits
  the call under the researcher's name, exactly as for a direct login.
- The gateway's answer (status, headers, body) goes back by
  `POST /api/node/relay/responses`; any network fault: back off (doubling, jittered)
  and poll again.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import jwt
import requests

from gateway.agent.config import Policy

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


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """The forwarding session must never keep one researcher's cookie for another."""

    def set_ok(self, cookie, request):
        return False

    def return_ok(self, cookie, request):
        return False


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
        backoff_initial: float = 0.5,
        backoff_max: float = 30,
        request_timeout: float = 30,
    ):
        self.api_url = api_url.rstrip("/")
        self.gateway_url = gateway_url.rstrip("/")
        self.policy = policy
        self.poll_wait = poll_wait
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.request_timeout = request_timeout
        self._link = requests.Session()
        self._link.headers.update({"X-Api-Key": api_key, "User-Agent": "dsgateway-agent-relay"})
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="relay")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False
        self.forwarded = 0
        self.refused = 0

    @classmethod
    def from_config(cls, cfg, api_key: str, gateway_url: str) -> RelayAgent:
        """From the agent's configuration (gateway.agent.config.AgentConfig)."""
        return cls(
            cfg.api_url,
            api_key,
            gateway_url,
            cfg.policy,
            poll_wait=cfg.poll_wait,
            backoff_initial=cfg.backoff_initial,
            backoff_max=cfg.backoff_max,
            request_timeout=cfg.request_timeout,
        )

    # ------------------------------------------------------------ life cycle

    def start(self) -> RelayAgent:
        self._thread = threading.Thread(target=self.run_forever, name="agent-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._thread is not None:
            self._thread.join(timeout)
        self._link.close()

    # ------------------------------------------------------------ the poll loop

    def run_forever(self) -> None:
        backoff = self.backoff_initial
        while not self._stop.is_set():
            try:
                items = self._poll()
                backoff = self.backoff_initial
            except Exception as err:  # any fault: back off and poll again
                if self.connected:
                    log.warning("relay link lost (%s); reconnecting with backoff", err)
                self.connected = False
                delay = backoff * (0.5 + random.random() / 2)  # noqa: S311 (jitter)
                self._stop.wait(delay)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            if not self.connected:
                log.info("relay connected to %s", self.api_url)
            self.connected = True
            for item in items:
                self._pool.submit(self._handle, item)

    def _poll(self) -> list[dict]:
        r = self._link.get(
            f"{self.api_url}/node/relay",
            params={"wait": self.poll_wait, "limit": 20},
            timeout=self.request_timeout + self.poll_wait,
        )
        if r.status_code != 200:
            raise RuntimeError(f"coordinator answered {r.status_code}: {r.text[:200]}")
        return r.json()["requests"]

    # ------------------------------------------------------------ one call

    def _handle(self, item: dict) -> None:
        try:
            refusal = policy_refusal(item, self.policy)
            if refusal is not None:
                self.refused += 1
                log.info("relay call %s %s refused: %s", item["method"], item["path"], refusal)
                answer = _error_answer(item, 403, refusal)
            else:
                answer = self._forward(item)
                self.forwarded += 1
        except Exception as err:  # never leave the caller without an answer
            log.exception("relay call failed")
            answer = _error_answer(item, 500, f"Relay error at the node ({type(err).__name__}).")
        deadline = time.monotonic() + float(item.get("timeout") or 60)
        if self._answer(answer, deadline) == 413:
            message = "The node's answer is too large for the relay (MAX_CONTENT_LENGTH)."
            self._answer(_error_answer(item, 500, message), deadline)

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.cookies.set_policy(_NoCookies())
            s.trust_env = False  # the gateway is local: no proxies
            self._local.session = s
        return s

    def _forward(self, item: dict) -> dict:
        url = self.gateway_url + item["path"]
        if item.get("query"):
            url += "?" + item["query"]
        headers = {
            name: value
            for name, value in item.get("headers") or []
            if name.lower() in FORWARDED_HEADERS
        }
        headers.setdefault("Accept-Encoding", "identity")
        try:
            r = self._session().request(
                item["method"],
                url,
                data=base64.b64decode(item.get("body") or ""),
                headers=headers,
                timeout=(10, float(item.get("timeout") or 600)),
                allow_redirects=False,
            )
        except requests.RequestException as err:
            return _error_answer(
                item, 500, f"The node's gateway could not be reached ({type(err).__name__})."
            )
        pairs = [[k, v] for k, v in r.raw.headers.items()]
        return {
            "id": item["id"],
            "status": r.status_code,
            "headers": pairs,
            "body": base64.b64encode(r.content).decode("ascii"),
        }

    def _answer(self, answer: dict, deadline: float) -> int | None:
        """Post the answer; the coordinator's status (None: never got through)."""
        backoff = self.backoff_initial
        while not self._stop.is_set():
            try:
                r = self._link.post(
                    f"{self.api_url}/node/relay/responses",
                    json={"responses": [answer]},
                    timeout=self.request_timeout,
                )
                if r.status_code < 500:
                    if r.status_code != 200:
                        log.warning("relay answer refused: %s %s", r.status_code, r.text[:200])
                    return r.status_code
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                log.warning("relay answer %s dropped: the coordinator is unreachable", answer["id"])
                return None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.backoff_max)
        return None
