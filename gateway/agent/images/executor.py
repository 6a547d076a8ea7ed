"""The agent's entry point for image runs: an `Executor` for work items of kind "image".

    executor = ImageExecutor(runner, agent_config.policy, JwtTokenMinter.for_gateway(...),
                             fallback=GatewayExecutor(sessions, agent_config.policy))
    Agent(config, link, executor)

A work item is an image run when `item["kind"]` is "image" or `item["algorithm"]` is
"image"; anything else goes to `fallback`. Its `parameters`:

    {"image": "registry.org/team/analysis:1.2@sha256:...",   # required
     "digest": "sha256:...",           # optional when `image` carries it; must agree
     "files": {"analysis.R": "..."},   # put in /input (text)
     "input": {...},                   # /input/parameters.json
     "timeout": 600,                   # seconds, at most the node's limit
     "relay": false,                   # true: the script opens the task's stations
     "stations": [1, 2]}               # (node ids; default its targets) through the
                                       # coordinator's relay

and, beside them, what the coordinator adds to an image run's item:
`gateway_token` (a relay token for this node: `tokens_from: coordinator`),
`relay_stations` ([{"name", "node_id", "token"}], when `relay` is true) or
`relay_error` (why the coordinator could not give them), and `disclosure` (the
coordinator's disclosure rules, applied with the node's own).

The agent's policy (collaborations, users, algorithms: "image" must be allowed) is
checked first, then the steward's image policy inside the runner. The outcome is
"completed" or "failed" (the coordinator's run states); `result` carries the detailed
status (`not approved`, `timed out`, `killed` ...), the reason, the checked output files
and timings, and `log` the truncated stdout/stderr.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from gateway.agent.config import Policy
from gateway.agent.executors import Executor, RunFailed, RunOutcome, check_policy
from gateway.agent.images.contract import RunRequest, RunResult, RunStatus, Station
from gateway.agent.images.disclosure import DisclosureRules
from gateway.agent.images.runner import ImageRunner
from gateway.agent.images.tokens import TokenSource, TokenUnavailable

__all__ = ["ImageExecutor", "is_image_item", "request_from_item"]

log = logging.getLogger(__name__)


def is_image_item(item: dict) -> bool:
    return item.get("kind") == "image" or item.get("algorithm") == "image"


def request_from_item(item: dict, token: str, profile: str) -> RunRequest:
    """The runner's request for a work item; RunFailed when its parameters are unusable."""
    params = item.get("parameters") or {}
    if not isinstance(params, dict) or not isinstance(params.get("image"), str):
        raise RunFailed("image run: `parameters.image` (an image reference) is required.")
    files = params.get("files") or {}
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise RunFailed("image run: `parameters.files` maps file names to text.")
    timeout = params.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise RunFailed("image run: `parameters.timeout` is a number of seconds.")
    digest = params.get("digest")
    if digest is not None and not isinstance(digest, str):
        raise RunFailed("image run: `parameters.digest` is a string (sha256:...).")
    try:
        rules = DisclosureRules.from_dict(item["disclosure"]) if item.get("disclosure") else None
    except (ValueError, TypeError) as err:  # fail closed: no run without readable rules
        raise RunFailed(
            f"image run: the coordinator's disclosure rules are unusable: {err}"
        ) from None
    return RunRequest(
        run_id=str(item["run_id"]),
        image=params["image"],
        digest=digest,
        collaboration=item.get("collaboration_id"),
        user=item.get("user") or "",
        token=token,
        profile=profile,
        files=files,
        parameters=params.get("input"),
        timeout=timeout,
        stations=stations_from_item(item) if params.get("relay") is True else (),
        disclosure=rules,
    )


def stations_from_item(item: dict) -> tuple[Station, ...]:
    """The relay stations the coordinator sent for a run that asked for the relay;
    RunFailed with the coordinator's reason when there are none."""
    raw = item.get("relay_stations")
    if not raw:
        why = item.get("relay_error") or "the work item carries no relay tokens"
        raise RunFailed(f"This run asked for the relay, but {why}.")
    try:
        return tuple(Station(str(s["name"]), int(s["node_id"]), str(s["token"])) for s in raw)
    except (KeyError, TypeError, ValueError):
        raise RunFailed("image run: `relay_stations` is malformed.") from None


class ImageExecutor(Executor):
    def __init__(
        self,
        runner: ImageRunner,
        policy: Policy,
        tokens: TokenSource,
        fallback: Executor | None = None,
        on_status: Callable[[str, RunStatus, str], None] | None = None,
    ):
        """`on_status(run_id, status, detail)`: each step of a run, e.g. to tell the
        coordinator (called in the run's thread; it should not block for long)."""
        self.on_status = on_status
        self.runner = runner
        self.policy = policy
        self.tokens = tokens
        self.fallback = fallback
        self._status: dict[str, tuple[RunStatus, str]] = {}
        self._lock = threading.Lock()

    def status_of(self, run_id) -> tuple[RunStatus, str] | None:
        """The last status of a run in progress (e.g. for the heartbeat)."""
        with self._lock:
            return self._status.get(str(run_id))

    def cancel(self, run_id) -> bool:
        """Stop an image run in progress (the coordinator cancelled it)."""
        return self.runner.cancel(str(run_id), "cancelled by the coordinator")

    def run(self, item: dict) -> RunOutcome:
        if not is_image_item(item):
            if self.fallback is None:
                return RunOutcome("failed", message="This node runs image tasks only.")
            return self.fallback.run(item)
        run_id = str(item.get("run_id"))
        try:
            check_policy({**item, "algorithm": "image"}, self.policy)
            user = item.get("user") or ""
            if not user:
                raise RunFailed("image run: the work item names no researcher.")
            wall = self.runner.config.limits.wall_time
            token = self.tokens.token_for(
                user=user, projects=self.policy.projects, ttl=wall, run_id=run_id, item=item
            )
            request = request_from_item(item, token, self.policy.profile)
        except (RunFailed, TokenUnavailable) as err:
            return RunOutcome("failed", {"status": RunStatus.FAILED.value}, "", str(err))

        def on_status(status: RunStatus, detail: str) -> None:
            with self._lock:
                self._status[run_id] = (status, detail)
            if self.on_status is not None:
                self.on_status(run_id, status, detail)

        try:
            result: RunResult = self.runner.run(request, on_status)
        finally:
            with self._lock:
                self._status.pop(run_id, None)
        summary = result.to_dict()
        summary.pop("log")  # sent once, as the run's log
        outcome = RunOutcome(
            "completed" if result.ok else "failed", summary, result.log, result.reason
        )
        if result.blocked:  # the coordinator's audit says "blocked", not just "failed"
            outcome.outcome = "blocked"
        return outcome
