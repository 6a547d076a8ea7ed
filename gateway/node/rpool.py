"""The web process's handle on R: a zygote process and the session workers it forks.

`RPool.acquire()` hands out a fresh R process (one per DataSHIELD session), taken from a
small set of workers forked in advance so that a login does not wait. `WorkerHandle.call`
sends one operation and waits for its answer, enforcing the command time limit: first
an interrupt (R stops the evaluation, the session survives), then a kill.
"""

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque

from gateway.node.errors import BadRequest, RSessionFailed
from gateway.node.limits import Limits
from gateway.node.methods import PackageInfo
from gateway.node.rchannel import ChannelClosed, recv_msg, send_msg
from gateway.node.rworker import RError

log = logging.getLogger(__name__)

__all__ = ["RError", "RPool", "WorkerHandle"]

# Warming a spare worker (a fork, then R's first garbage collection copying the zygote's
# heap) takes CPU, and a login is followed at once by the session's first command (DSI
# loads its tables right after login). So while another spare is ready, a login's
# replacement is made a little later, and only while no command is running (waiting at
# most _REFILL_MAX_WAIT for busy sessions).
_REFILL_DELAY = 0.05  # seconds after a login: time for its first command to arrive
_REFILL_MAX_WAIT = 5.0  # seconds a refill waits for the sessions' commands to finish

# What embedding R writes into the embedding process's environment: R's start-up files
# (etc/Renviron, etc/ldpaths) set R_* and _R_* variables, LD_LIBRARY_PATH and a few
# tools' names, and rpy2 adds PYTHON_SESSION_INITIALIZED.
_R_PREFIXES = ("R_", "_R_")
_R_NAMES = frozenset(
    {
        "LD_LIBRARY_PATH",
        "EDITOR",
        "PAGER",
        "MAKE",
        "SED",
        "TAR",
        "LN_S",
        "PYTHON_SESSION_INITIALIZED",
    }
)


def _set_by_r(name: str) -> bool:
    return name.startswith(_R_PREFIXES) or name in _R_NAMES


def _zygote_env() -> dict[str, str] | None:
    """The zygote's environment: ours, without what an R embedded in this process added.

    The web process never embeds R, but a process hosting a pool may have (a pytest run
    in which an rpy2 test came first). Inherited, R's variables break the zygote:
    LD_LIBRARY_PATH then lists the system's library directory first, so the zygote's
    Python loads the system's libpython instead of its own and `import ssl` fails. So
    once rpy2 is loaded here, R's variables are reset to the values this process was
    started with, read from /proc/self/environ (setenv never changes it, so this holds
    however late rpool is imported). Other variables, including those set at run time
    on purpose (a test's DSGATEWAY_CANARY), are passed on unchanged. None: inherit.
    """
    if "rpy2.rinterface" not in sys.modules:
        return None
    with open("/proc/self/environ", "rb") as f:
        entries = [e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e]
    started = {os.fsdecode(name): os.fsdecode(value) for name, value in entries}
    env = {name: value for name, value in os.environ.items() if not _set_by_r(name)}
    env.update({name: value for name, value in started.items() if _set_by_r(name)})
    return env


class _Activity:
    """How many calls into R workers are running (see _REFILL_DELAY)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0

    def __enter__(self) -> None:
        with self._cond:
            self._running += 1

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._running -= 1
            if not self._running:
                self._cond.notify_all()

    def wait_idle(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._running, timeout)


class WorkerHandle:
    """One session's R process. Calls are serialised: one command at a time."""

    def __init__(
        self, sock: socket.socket, pid: int, limits: Limits, activity: _Activity | None = None
    ):
        self.sock = sock
        self.pid = pid
        self.limits = limits
        self.dead_reason: str | None = None
        self._lock = threading.Lock()
        self._activity = activity or contextlib.nullcontext()

    @property
    def alive(self) -> bool:
        return self.dead_reason is None

    def call(self, op: str, timeout: float | None = None, **args):
        with self._lock:
            if self.dead_reason:
                raise RSessionFailed(self.dead_reason)
            try:
                with self._activity:
                    send_msg(self.sock, {"op": op, **args})
                    reply = self._wait_reply(timeout)
            except (ChannelClosed, OSError):
                self._mark_dead(
                    "The R process of this session stopped unexpectedly (it crashed, ran out "
                    "of memory or was killed); start a new session to continue."
                )
                raise RSessionFailed(self.dead_reason) from None
        if reply["ok"]:
            return reply["value"]
        if reply["kind"] == "r":
            raise RError(reply["message"])
        if reply["kind"] == "bad_request":
            raise BadRequest(reply["message"])
        raise RSessionFailed(f"Internal error in the R session: {reply['message']}")

    def _wait_reply(self, timeout: float | None):
        if timeout is None:
            self.sock.settimeout(None)
            return recv_msg(self.sock)
        self.sock.settimeout(timeout)
        try:
            return recv_msg(self.sock)
        except TimeoutError:
            pass
        # Over the time limit: ask R to stop; a well-behaved evaluation ends at once.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)
        self.sock.settimeout(self.limits.interrupt_grace)
        try:
            reply = recv_msg(self.sock)
        except TimeoutError:
            self.kill()
            self._mark_dead(
                f"The command exceeded the time limit of {timeout:g} s and did not stop when "
                "interrupted, so its R session was ended; start a new session to continue."
            )
            raise RSessionFailed(self.dead_reason) from None
        finally:
            self.sock.settimeout(None)
        if not reply["ok"] and reply.get("message") == "interrupted":
            return {
                "ok": False,
                "kind": "r",
                "message": f"Error : the command exceeded the time limit of {timeout:g} s "
                "and was stopped",
            }
        return reply  # it finished in the grace period

    def _mark_dead(self, reason: str) -> None:
        if self.dead_reason is None:
            self.dead_reason = reason
        self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.sock.close()

    def close(self) -> None:
        """End the session's R process (logout, idle timeout, gateway stop)."""
        if self.dead_reason is None:
            self.dead_reason = "The R session was closed."
        self.kill()


class RPool:
    """Starts the zygote and keeps `limits.warm_workers` R processes ready."""

    def __init__(self, r_lib: str | None = None, limits: Limits | None = None):
        self.r_lib = r_lib
        self.limits = limits or Limits()
        self._control: socket.socket | None = None
        self._zygote: subprocess.Popen | None = None
        self._packages: list[PackageInfo] = []
        self._warm: deque[WorkerHandle] = deque()
        self._lock = threading.Lock()  # guards the control socket and the zygote
        self._refill = threading.Event()
        self._stopping = False
        self._refiller: threading.Thread | None = None
        self._activity = _Activity()

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> "RPool":
        with self._lock:
            self._start_zygote()
        self._refiller = threading.Thread(
            target=self._refill_loop, name="rpool-refill", daemon=True
        )
        self._refiller.start()
        self._refill.set()
        return self

    def _start_zygote(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [sys.executable, "-m", "gateway.node.rzygote", str(child.fileno()), self.r_lib or ""]
        self._zygote = subprocess.Popen(
            cmd, pass_fds=[child.fileno()], close_fds=True, env=_zygote_env()
        )
        child.close()
        parent.settimeout(120)
        try:
            hello = recv_msg(parent)
        except (ChannelClosed, OSError, TimeoutError) as err:
            self._zygote.kill()
            raise RuntimeError(f"R could not be started: {err}") from err
        parent.settimeout(None)
        if not hello.get("ready"):
            raise RuntimeError(f"R could not be started: {hello.get('error')}")
        self._control = parent
        self._packages = [PackageInfo(**p) for p in hello["packages"]]
        log.info(
            "R zygote %s ready with DataSHIELD packages %s",
            hello["pid"],
            [p.name for p in self._packages],
        )

    def stop(self) -> None:
        self._stopping = True
        self._refill.set()
        with self._lock:
            while self._warm:
                self._warm.popleft().close()
            if self._control is not None:
                self._control.close()
                self._control = None
            if self._zygote is not None:
                self._zygote.kill()
                self._zygote.wait(timeout=10)
                self._zygote = None

    def packages(self) -> list[PackageInfo]:
        return list(self._packages)

    # -- workers -------------------------------------------------------------------------

    def _fork(self) -> WorkerHandle:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            if self._stopping:
                raise RSessionFailed("The gateway is stopping.")
            for attempt in range(2):
                try:
                    send_msg(self._control, {"op": "fork"}, fds=[theirs.fileno()])
                    reply = recv_msg(self._control)
                    break
                except (ChannelClosed, OSError, AttributeError):
                    if attempt:
                        raise
                    log.warning("R zygote is gone; starting a new one")
                    self._start_zygote()
        theirs.close()
        return WorkerHandle(mine, reply["pid"], self.limits, self._activity)

    def _refill_loop(self) -> None:
        while not self._stopping:
            self._refill.wait()
            self._refill.clear()
            while not self._stopping and len(self._warm) < self.limits.warm_workers:
                self._activity.wait_idle(_REFILL_MAX_WAIT)
                try:
                    worker = self._fork()
                    worker.call("warm", timeout=60)
                    self._warm.append(worker)
                except Exception:
                    if self._stopping:
                        return
                    log.exception("could not fork a warm R worker")
                    time.sleep(1)
                    break

    def acquire(self, options: dict[str, str]) -> WorkerHandle:
        """A fresh R process with the profile's options set and the memory limit applied."""
        worker = None
        while self._warm:
            candidate = self._warm.popleft()
            if candidate.alive:
                worker = candidate
                break
        if self._warm:
            timer = threading.Timer(_REFILL_DELAY, self._refill.set)
            timer.daemon = True
            timer.start()
        else:
            self._refill.set()
        if worker is None:
            worker = self._fork()
        try:
            worker.call(
                "init", timeout=60, options=options, memory_mb=self.limits.memory_per_session
            )
        except RError as err:
            worker.close()
            raise RSessionFailed(f"The R session could not apply the profile: {err}") from None
        return worker
