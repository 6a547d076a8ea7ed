"""What runs a task run at the node: its policy check, then an algorithm executed
through the local gateway.

`Executor` is the interface the agent calls (`run(item) -> RunOutcome`). The real one,
`GatewayExecutor`, opens a DataSHIELD session on the node's own gateway (its session
manager, in the same process: `dsgateway node run` runs both) as the researcher who
created the task, with the projects the node's policy allows: the gateway's method
whitelist, expression check, disclosure settings and audit log apply exactly as for a
researcher connecting directly. The coordinator is trusted with nothing.

Node algorithms are functions `fn(context, parameters) -> JSON value`; built in:
- `aggregate`: load a table, run assignments, then aggregate expressions
  (`{"table": "demo/cohort/patients", "symbol": "D", "variables": [...],
  "assign": [{"symbol": "x", "expr": "..."}], "expressions": ["meanDS(D$age)"]}`),
  answering `{"results": [<JSON of each aggregate>]}`;
- `glm`: one round of the federated GLM (`algorithms.glm_task.node_step`);
- `noop` (None) and `echo` (the parameters), which never start R.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.agent.config import Policy

__all__ = [
    "ALGORITHMS",
    "Executor",
    "GatewayExecutor",
    "RunContext",
    "RunFailed",
    "RunOutcome",
    "check_policy",
]

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """The run cannot or may not be done; the message goes to the coordinator."""


@dataclass
class RunOutcome:
    status: str  # "completed" | "failed"
    result: Any = None
    log: str = ""
    message: str = ""
    # "blocked": a disclosure filter at this node refused one of the run's commands
    # (for the coordinator's audit; the status says whether the run still completed).
    outcome: str | None = None


def check_policy(item: dict, policy: Policy) -> None:
    if policy.collaborations is not None and item["collaboration_id"] not in policy.collaborations:
        raise RunFailed("Refused by the node's policy: collaboration not served here.")
    if policy.algorithms is not None and item["algorithm"] not in policy.algorithms:
        raise RunFailed(f"Refused by the node's policy: algorithm {item['algorithm']!r}.")
    user = item.get("user")
    if policy.users is not None and user not in policy.users:
        raise RunFailed(f"Refused by the node's policy: user {user!r}.")


class Executor:
    def run(self, item: dict) -> RunOutcome:
        raise NotImplementedError


class RunContext:
    """What a node algorithm may use: a gateway session opened on first use, and a log."""

    def __init__(self, open_session: Callable[[], Any], audit: Callable[..., None]):
        self._open = open_session
        self._audit = audit
        self._session = None
        self.lines: list[str] = []
        self.blocked = False

    @property
    def session(self):
        if self._session is None:
            self._session = self._open()
        return self._session

    def log(self, line: str) -> None:
        self.lines.append(line)

    def command(self, kind: str, expr: str, submit: Callable[[], Any]) -> Any:
        """Run one gateway command to its end; audit it as the HTTP faces do."""
        from gateway.node.audit_outcomes import command_outcome

        cmd = submit()
        ok = cmd.status == "COMPLETED"
        size = len(cmd.result) if isinstance(cmd.result, str | bytes) else 0
        outcome = command_outcome(cmd)
        self.blocked = self.blocked or outcome == "blocked"
        self._audit(self.session, kind, expr, outcome, 200 if ok else 400, size, cmd.message)
        self.log(f"{kind} {expr}: {cmd.status}" + (f" ({cmd.message})" if cmd.message else ""))
        if not ok:
            raise RunFailed(f"{expr}: {cmd.message or 'failed'}")
        return cmd.result

    @property
    def outcome(self) -> str | None:
        return "blocked" if self.blocked else None

    def close(self) -> None:
        if self._session is not None:
            self._session.manager.close(self._session.id, reason="task run done")


def _aggregate(ctx: RunContext, params: dict) -> Any:
    table = params.get("table")
    symbol = params.get("symbol", "D")
    expressions = params.get("expressions") or []
    if not isinstance(expressions, list) or not all(isinstance(e, str) for e in expressions):
        raise RunFailed("aggregate: `expressions` must be a list of strings")
    s = ctx.session
    if table:
        ctx.command(
            "load",
            f"{symbol} <- {table}",
            lambda: s.assign_table(symbol, table, params.get("variables"), wait=True),
        )
    for step in params.get("assign") or []:
        if not isinstance(step, dict) or not {"symbol", "expr"} <= set(step):
            raise RunFailed("aggregate: each `assign` step needs `symbol` and `expr`")
        ctx.command(
            "assign",
            step["expr"],
            lambda st=step: s.assign_expr(st["symbol"], st["expr"], wait=True),
        )
    results = []
    for expr in expressions:
        text = ctx.command("aggregate", expr, lambda e=expr: s.aggregate(e, fmt="json", wait=True))
        results.append(json.loads(text) if text else None)
    return {"results": results}


def _glm(ctx: RunContext, params: dict) -> Any:
    """One round of the federated GLM (`algorithms.glm_task`): the disclosure checks
    are the gateway's own (glmDS1/glmDS2 and the session's settings)."""
    from algorithms.errors import DataSHIELDError
    from algorithms.glm_task import node_step

    s = ctx.session

    def load(symbol: str, table: str, variables: list[str] | None) -> None:
        ctx.command(
            "load",
            f"{symbol} <- {table}",
            lambda: s.assign_table(symbol, table, variables, wait=True),
        )

    def aggregate(expr: str) -> Any:
        text = ctx.command("aggregate", expr, lambda: s.aggregate(expr, fmt="json", wait=True))
        return json.loads(text) if text else None

    try:
        return node_step(load, aggregate, params)
    except (DataSHIELDError, ValueError) as err:
        raise RunFailed(f"glm: {err}") from err


ALGORITHMS: dict[str, Callable[[RunContext, dict], Any]] = {
    "aggregate": _aggregate,
    "glm": _glm,
    "noop": lambda _ctx, _params: None,
    "echo": lambda _ctx, params: params,
}


class GatewayExecutor(Executor):
    def __init__(self, sessions, policy: Policy, algorithms: dict | None = None):
        self.sessions = sessions  # the gateway's SessionManager (None: no R needed)
        self.policy = policy
        self.algorithms = dict(ALGORITHMS if algorithms is None else algorithms)

    def _open_session(self, user_name: str):
        from gateway.node.auth import User

        if self.sessions is None:
            raise RunFailed("This agent has no gateway to run DataSHIELD commands on.")
        user = User(user_name, frozenset(self.policy.projects), "agent")
        return self.sessions.create(user, self.policy.profile)

    def _audit(self, session, kind, expr, outcome, status, size, message) -> None:
        if self.sessions is not None:
            self.sessions.audit_command(session, kind, expr, outcome, status, size, message)

    def run(self, item: dict) -> RunOutcome:
        ctx = RunContext(lambda: self._open_session(item.get("user") or "coordinator"), self._audit)
        try:
            check_policy(item, self.policy)
            fn = self.algorithms.get(item["algorithm"])
            if fn is None:
                raise RunFailed(f"Unknown algorithm {item['algorithm']!r} at this node.")
            result = fn(ctx, item.get("parameters") or {})
            json.dumps(result)  # what cannot be sent fails here, not at the coordinator
            return RunOutcome("completed", result, "\n".join(ctx.lines), outcome=ctx.outcome)
        except RunFailed as err:
            return RunOutcome("failed", None, "\n".join(ctx.lines), str(err), ctx.outcome)
        except Exception as err:  # a bug or the gateway refusing: the run fails, not us
            log.exception("run %s failed", item.get("run_id"))
            message = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
            return RunOutcome("failed", None, "\n".join(ctx.lines), message, ctx.outcome)
        finally:
            try:
                ctx.close()
            except Exception:  # closing is best effort
                log.exception("closing the session of run %s failed", item.get("run_id"))
