"""The pool's record of running R calls, which its refills wait on (rpool._Activity)."""

from __future__ import annotations

import threading

from gateway.node.rpool import _Activity


def _waiter(activity: _Activity, timeout: float) -> threading.Event:
    returned = threading.Event()

    def wait():
        activity.wait_idle(timeout)
        returned.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return returned


def test_idle_at_once_when_nothing_runs():
    returned = _waiter(_Activity(), 30)
    assert returned.wait(10)


def test_waits_for_the_last_running_call():
    activity = _Activity()
    with activity:
        with activity:
            returned = _waiter(activity, 30)
            assert not returned.wait(0.2)
        assert not returned.wait(0.2)  # one call still runs
    assert returned.wait(10)


def test_an_error_in_a_call_still_ends_it():
    activity = _Activity()
    try:
        with activity:
            raise OSError("worker gone")
    except OSError:
        pass
    returned = _waiter(activity, 30)
    assert returned.wait(10)


def test_a_busy_pool_refills_after_the_longest_wait():
    activity = _Activity()
    with activity:
        returned = _waiter(activity, 0.05)
        assert returned.wait(10)  # gave up waiting: the call is still running
