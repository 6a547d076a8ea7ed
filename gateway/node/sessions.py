"""DataSHIELD sessions: the one core under both HTTP faces (Armadillo and Opal).

A `Session` owns one R process (`WorkerHandle`) and runs its commands one at a time on a
thread of its own, so HTTP requests never wait for R unless they ask to (`wait=True`, or
Armadillo's blocking /lastresult). Every expression is checked and rewritten before a
`Command` exists: nothing refused ever reaches R. Every command's outcome is audited.
"""

import contextlib
import hashlib
import itertools
import logging
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from gateway.node import expression
from gateway.node.audit_outcomes import AggregateAnswer, failure_outcome
from gateway.node.errors import (
    BadRequest,
    CapacityExceeded,
    ExpressionRefused,
    GatewayError,
    NotFound,
    RSessionFailed,
)
from gateway.node.limits import Limits
from gateway.node.rpool import RError

log = logging.getLogger(__name__)

# Armadillo's symbol pattern `\p{Alnum}[\w.]*` (Java's \p{Alnum} is ASCII by default).
SYMBOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]*")
# Armadillo's workspace id pattern.
WORKSPACE_RE = re.compile(r"[\w\-:]+", re.ASCII)
MAX_SYMBOL_LENGTH = 255
MAX_WORKSPACE_NAME = 255
# Opal keeps a session's commands until it ends; bound them so a long session cannot
# grow without limit.
MAX_KEPT_COMMANDS = 200


def _now() -> datetime:
    return datetime.now(timezone.utc)


def check_symbol(symbol: str) -> str:
    if not symbol or len(symbol) > MAX_SYMBOL_LENGTH or not SYMBOL_RE.fullmatch(symbol):
        raise BadRequest(
            f"Invalid symbol name '{symbol[:80]}': a symbol starts with a letter or digit "
            "and continues with letters, digits, '_' or '.'"
        )
    return symbol


def check_workspace_name(name: str) -> str:
    if not name or len(name) > MAX_WORKSPACE_NAME or not WORKSPACE_RE.fullmatch(name):
        raise BadRequest(
            f"Invalid workspace name '{name[:80]}': use letters, digits, '_', '-' or ':'"
        )
    return name


@dataclass
class Command:
    """One assign or aggregate of a session, with the fields Armadillo and Opal report."""

    id: str
    expression: str
    with_result: bool
    kind: str  # "aggregate", "assign" or "load"
    status: str = "PENDING"  # PENDING, IN_PROGRESS, COMPLETED, FAILED
    create_date: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    message: str | None = None
    result: bytes | str | None = None
    # The audit outcome once finished: returned, ok, failed, or blocked (a disclosure
    # filter refused it: an R error, or a returned value that is the refusal).
    outcome: str | None = None

    def __post_init__(self):
        self.create_date = _now()
        self._done = threading.Event()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _finish(self, status: str, result=None, message: str | None = None) -> None:
        self.status = status
        self.result = result
        self.message = message
        self.end_date = _now()
        self._done.set()


class Session:
    """One user's DataSHIELD session with its own R process."""

    def __init__(self, manager: "SessionManager", user, profile: str, worker):
        self.id = uuid.uuid4().hex
        self.manager = manager
        self.user = user
        self.profile = profile
        self.worker = worker
        self.state = "RUNNING"
        self.created = _now()
        self.last_access = time.monotonic()
        self.commands: OrderedDict[str, Command] = OrderedDict()
        self.last_command: Command | None = None
        self._ids = itertools.count(1)
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"session-{self.id[:8]}", daemon=True
        )
        self._thread.start()

    # -- commands ------------------------------------------------------------------------

    def assign_table(
        self, symbol: str, table: str, variables: list[str] | None = None, wait: bool = False
    ) -> Command:
        self.touch()
        check_symbol(symbol)
        source = self.manager.resolve_readable_table(self.user, table)
        if variables is not None:
            variables = [v for v in (v.strip() for v in variables) if v]
            known = {name for name, _type in self.manager.catalogue.columns(source.ref)}
            unknown = [v for v in variables if v not in known]
            if unknown:
                raise BadRequest(f"Unknown variable(s) in table '{table}': {', '.join(unknown)}")
        text = f"{symbol} <- {table}" + (f" [{', '.join(variables)}]" if variables else "")
        return self._submit(
            "load",
            text,
            False,
            wait,
            lambda timeout: self.worker.call(
                "assign_table", timeout=timeout, symbol=symbol, source=source, variables=variables
            ),
        )

    def assign_expr(self, symbol: str, expr: str, wait: bool = False) -> Command:
        self.touch()
        check_symbol(symbol)
        code = self._check(expr, "assign")
        return self._submit(
            "assign",
            expr,
            False,
            wait,
            lambda timeout: self.worker.call(
                "assign_expr", timeout=timeout, symbol=symbol, code=code
            ),
        )

    def aggregate(self, expr: str, fmt: str = "rds", wait: bool = False) -> Command:
        self.touch()
        code = self._check(expr, "aggregate")
        return self._submit(
            "aggregate",
            expr,
            True,
            wait,
            lambda timeout: self.worker.call("aggregate", timeout=timeout, code=code, fmt=fmt),
        )

    def remove_command(self, command_id: str) -> None:
        """Forget a finished command (Opal's `rm=true` once its result was fetched)."""
        with self._lock:
            command = self.commands.get(command_id)
            if command is None:
                raise NotFound(f"Command '{command_id[:64]}' not found")
            if command.done:
                del self.commands[command_id]

    def _check(self, expr: str, kind: str) -> str:
        methods = self.manager.registry.table(self.profile, kind)
        try:
            if kind == "aggregate":
                return expression.check_aggregate(expr, methods)
            return expression.check_assign(expr, methods)
        except ExpressionRefused as err:
            self.manager.audit_command(self, kind, expr, "refused", 400, 0, err.message)
            raise

    def _submit(
        self, kind: str, text: str, with_result: bool, wait: bool, run: Callable[[float], object]
    ) -> Command:
        if self.state != "RUNNING":
            raise RSessionFailed(self._ended_message())
        with self._lock:
            command = Command(
                id=str(next(self._ids)), expression=text, with_result=with_result, kind=kind
            )
            self.commands[command.id] = command
            while len(self.commands) > MAX_KEPT_COMMANDS:
                self.commands.popitem(last=False)
            self.last_command = command
        self._queue.put((command, run))
        if wait:
            command.wait()
        return command

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            command, run = item
            self._execute(command, run)

    def _execute(self, command: Command, run) -> None:
        command.status = "IN_PROGRESS"
        command.start_date = _now()
        timeout = self.manager.limits.command_timeout
        try:
            value = run(timeout)
        except RError as err:
            outcome = command.outcome = failure_outcome(str(err))
            command._finish("FAILED", message=str(err))
            self.manager.audit_command(
                self, command.kind, command.expression, outcome, 500, 0, str(err)
            )
            return
        except RSessionFailed as err:
            self.state = "FAILED"
            command.outcome = "failed"
            command._finish("FAILED", message=err.message)
            self.manager.audit_command(
                self, command.kind, command.expression, "failed", 500, 0, err.message
            )
            return
        except GatewayError as err:
            command.outcome = "failed"
            command._finish("FAILED", message=err.message)
            self.manager.audit_command(
                self, command.kind, command.expression, "failed", err.status, 0, err.message
            )
            return
        except Exception as err:  # never let a bug kill the session thread silently
            log.exception("command %s of session %s failed", command.id, self.id)
            command.outcome = "failed"
            command._finish("FAILED", message=f"Internal error: {err}")
            self.manager.audit_command(
                self, command.kind, command.expression, "failed", 500, 0, str(err)
            )
            return
        refusal = None
        if isinstance(value, AggregateAnswer):
            value, refusal = value.data, value.refusal
        result = value if command.with_result else None
        size = len(result) if isinstance(result, bytes | str) else 0
        # A refusal dsBase returns as a value still goes to the client as it is.
        command.outcome = "blocked" if refusal else ("returned" if command.with_result else "ok")
        command._finish("COMPLETED", result=result, message=refusal)
        self.manager.audit_command(
            self, command.kind, command.expression, command.outcome, 200, size, refusal
        )

    def _direct(self, op: str, **args):
        """Run a quick bookkeeping operation in R, after any queued command."""
        self.touch()
        if self.state != "RUNNING":
            raise RSessionFailed(self._ended_message())
        box: dict = {}

        def run(timeout):
            box["value"] = self.worker.call(op, timeout=timeout, **args)

        done = threading.Event()
        holder = Command(id="-", expression=op, with_result=False, kind="internal")

        def wrapped(timeout):
            try:
                run(timeout)
            finally:
                done.set()

        self._queue.put((holder, wrapped))
        done.wait()
        if holder.status == "FAILED":
            if self.state != "RUNNING":
                raise RSessionFailed(holder.message or self._ended_message())
            raise BadRequest(holder.message or f"{op} failed")
        return box.get("value")

    def symbols(self) -> list[str]:
        return self._direct("ls")

    def remove_symbol(self, name: str) -> None:
        check_symbol(name)
        if name not in self.symbols():
            raise NotFound(f"Symbol '{name}' not found")
        self._direct("rm", symbol=name)

    def save_workspace(self, name: str) -> None:
        path = self.manager.workspace_path(self.user, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        self._direct("save_workspace", path=str(partial))
        partial.replace(path)  # never leave a half-written workspace under its name

    def restore_workspace(self, name: str) -> None:
        path = self.manager.workspace_path(self.user, name)
        if not path.is_file():
            raise NotFound(f"Workspace '{name}' not found")
        self._direct("load_workspace", path=str(path))

    # -- life cycle ------------------------------------------------------------------------

    def touch(self) -> None:
        self.last_access = time.monotonic()

    def _ended_message(self) -> str:
        if self.state == "TERMINATED":
            return "This DataSHIELD session has ended; log in again."
        return self.worker.dead_reason or "The R session of this DataSHIELD session failed."

    def close(self) -> None:
        if self.state in ("RUNNING", "FAILED"):
            self.state = "TERMINATED"
        self._queue.put(None)
        self.worker.close()


class SessionManager:
    """All live sessions of the gateway, with their owners, limits and reaping."""

    def __init__(
        self,
        pool,
        registry,
        catalogue,
        audit,
        limits: Limits | None = None,
        state_dir: Path | str | None = None,
    ):
        self.pool = pool
        self.registry = registry
        self.catalogue = catalogue
        self.audit = audit
        self.limits = limits or Limits()
        self.state_dir = Path(state_dir) if state_dir else None
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="session-reaper", daemon=True)
        self._reaper.start()

    def create(self, user, profile: str = "default") -> Session:
        profile = profile or "default"
        if profile not in self.registry.profiles:
            raise NotFound(f"Profile '{profile}' not found")
        with self._lock:
            live = sum(1 for s in self._sessions.values() if s.state == "RUNNING")
            if live >= self.limits.max_sessions:
                raise CapacityExceeded(
                    f"The gateway already serves its maximum of {self.limits.max_sessions} "
                    "sessions; try again later or ask the data steward to raise the limit."
                )
            # Reserve the slot while R is being prepared.
            placeholder = object()
            key = f"pending-{id(placeholder)}"
            self._sessions[key] = _Reserved()
        try:
            worker = self.pool.acquire(self.registry.options(profile))
            session = Session(self, user, profile, worker)
        finally:
            with self._lock:
                self._sessions.pop(key, None)
        with self._lock:
            self._sessions[session.id] = session
        self._audit(user, session.id, "session.start", "ok", 201, None, None)
        return session

    def get(self, session_id: str, user) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if not isinstance(session, Session) or session.user.name != user.name:
            # Someone else's session is reported exactly as a missing one.
            raise NotFound(f"Session '{str(session_id)[:64]}' not found")
        session.touch()
        return session

    def find(self, session_id: str) -> Session | None:
        with self._lock:
            session = self._sessions.get(session_id)
        return session if isinstance(session, Session) else None

    def sessions_of(self, user) -> list[Session]:
        with self._lock:
            return [
                s
                for s in self._sessions.values()
                if isinstance(s, Session) and s.user.name == user.name
            ]

    def close(self, session_id: str, user=None, reason: str = "logout") -> None:
        with self._lock:
            session = self._sessions.get(session_id)
            if not isinstance(session, Session) or (
                user is not None and session.user.name != user.name
            ):
                raise NotFound(f"Session '{str(session_id)[:64]}' not found")
            del self._sessions[session_id]
        session.close()
        self._audit(session.user, session_id, "session.end", "ok", 200, None, reason)

    def close_all(self) -> None:
        self._stop.set()
        with self._lock:
            sessions = [s for s in self._sessions.values() if isinstance(s, Session)]
            self._sessions.clear()
        for session in sessions:
            session.close()

    def _reap_loop(self) -> None:
        interval = max(1.0, min(30.0, self.limits.idle_timeout / 4))
        while not self._stop.wait(interval):
            cutoff = time.monotonic() - self.limits.idle_timeout
            with self._lock:
                idle = [
                    s.id
                    for s in self._sessions.values()
                    if isinstance(s, Session)
                    and s.last_access < cutoff
                    and (s.last_command is None or s.last_command.done)
                ]
            for session_id in idle:
                with contextlib.suppress(NotFound):
                    self.close(session_id, reason="idle timeout")

    # -- shared services -----------------------------------------------------------------

    def resolve_readable_table(self, user, name: str):
        source = self.catalogue.resolve(name)
        if not user.can_read(source.ref.project):
            # Not readable looks exactly like not there: no probing of other projects.
            raise NotFound(f"Table '{name}' not found")
        return source

    def workspace_path(self, user, name: str) -> Path:
        check_workspace_name(name)
        if self.state_dir is None:
            raise BadRequest("Workspaces are not enabled on this gateway (no state_dir).")
        # User names can hold any character: a digest keeps them out of the path.
        owner = hashlib.sha256(user.name.encode()).hexdigest()[:32]
        return self.state_dir / "workspaces" / owner / f"{name}.RData"

    def workspaces(self, user) -> list[dict]:
        if self.state_dir is None:
            return []
        folder = self.workspace_path(user, "x").parent
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.glob("*.RData")):
            stat = path.stat()
            out.append(
                {
                    "name": path.stem,
                    "size": stat.st_size,
                    "lastModified": datetime.fromtimestamp(stat.st_mtime, timezone.utc),
                }
            )
        return out

    def delete_workspace(self, user, name: str) -> None:
        path = self.workspace_path(user, name)
        if not path.is_file():
            raise NotFound(f"Workspace '{name}' not found")
        path.unlink()

    def audit_command(
        self,
        session: Session,
        kind: str,
        expr: str,
        outcome: str,
        status: int,
        size: int,
        message: str | None,
    ) -> None:
        self._audit(session.user, session.id, kind, outcome, status, expr, message, size)

    def _audit(self, user, session_id, action, outcome, status, expr, message, size=0):
        if self.audit is None:
            return
        try:
            self.audit.record(
                user=getattr(user, "name", None),
                session=session_id,
                action=action,
                expression=expr,
                outcome=outcome,
                status=status,
                bytes=size,
                message=message,
            )
        except Exception:  # the audit must not take a session down, but must be seen
            log.exception("could not write the audit log")


class _Reserved:
    """A session slot held while its R process is being prepared."""

    state = "RUNNING"
