"""The zygote: one process that starts R once and forks a ready R for every session.

Forking a warm R (started, packages loaded) takes milliseconds, as Rserve does. The zygote
stays single-threaded (a forked child of a threaded process inherits only one thread
and possibly held locks), which is why it is a process of its own and never the web
server. Run as `python -m gateway.node.rzygote FD [R_LIB]`, where FD is the control
socket inherited from the web process.
"""

import os
import signal
import socket
import sys

from gateway.node.rchannel import ChannelClosed, recv_msg, send_msg


def main(argv: list[str]) -> int:
    control = socket.socket(fileno=int(argv[0]))
    r_lib = argv[1] if len(argv) > 1 and argv[1] else None
    from gateway.node import rworker

    rworker.die_with_parent()
    try:
        runtime = rworker.RRuntime(r_lib)
    except Exception as err:  # report why R could not start instead of just dying
        send_msg(control, {"ready": False, "error": f"{type(err).__name__}: {err}"})
        return 1
    send_msg(control, {"ready": True, "pid": os.getpid(), "packages": runtime.packages})
    # Workers are reaped automatically; the web process learns of a death from its socket.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            request, fds = recv_msg(control, with_fds=True)
        except (ChannelClosed, OSError):
            return 0
        if request.get("op") != "fork" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            send_msg(control, {"error": "bad request"})
            continue
        pid = os.fork()
        if pid == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            rworker.die_with_parent()
            try:
                rworker.serve(socket.socket(fileno=fds[0]), runtime)
            finally:
                os._exit(0)
        os.close(fds[0])
        send_msg(control, {"pid": pid})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
