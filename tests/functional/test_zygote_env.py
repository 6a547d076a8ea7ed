"""A pool started in a process that has embedded R itself still starts its zygote.

rpy2 and R write their own variables into the embedding process's environment (R_HOME,
LD_LIBRARY_PATH, R_LIBS_SITE, R_SESSION_TMPDIR and the rest of R's Renviron). In one
pytest process an rpy2 unit test runs before the session tests, so the pool's zygote
used to inherit them and fail to start. This module embeds R here first, as
tests/unit/node/test_r_convert.py does, and only then starts a pool.
"""

from __future__ import annotations

import json
import os

import pytest

ri = pytest.importorskip("rpy2.rinterface")

from rpy2.rinterface_lib import embedded  # noqa: E402

from gateway.node.limits import Limits  # noqa: E402
from gateway.node.rpool import RPool, _zygote_env  # noqa: E402

pytestmark = pytest.mark.r

# Set in this process on purpose after it started (as the `canary` fixture does): the
# zygote must still see it.
_OURS = "DSGATEWAY_TEST_ZYGOTE_ENV"


@pytest.fixture(scope="module")
def pool(r_lib):
    if not embedded.isready():
        ri.initr()
    # R is embedded here now, and its variables are in our environment.
    assert os.environ["R_HOME"]
    assert "R_SESSION_TMPDIR" in os.environ
    os.environ[_OURS] = "kept"
    pool = RPool(r_lib=r_lib, limits=Limits(warm_workers=1)).start()
    yield pool
    pool.stop()
    os.environ.pop(_OURS, None)


def r_json(worker, code: str):
    answer = worker.call("aggregate", timeout=60, code=code, fmt="json")
    return json.loads(answer.data)


def test_the_pool_evaluates_r_after_this_process_embedded_r(pool):
    assert "dsGatewayBase" in [p.name for p in pool.packages()]
    worker = pool.acquire({})
    try:
        assert r_json(worker, "sum(1:10)") == 55
        # A variable set in this process on purpose reaches the session's R.
        assert r_json(worker, f"Sys.getenv('{_OURS}')") == "kept"
    finally:
        worker.close()


def test_the_zygote_gets_r_variables_as_this_process_started(pool):
    with open("/proc/self/environ", "rb") as f:
        entries = [e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e]
    started = {os.fsdecode(name): os.fsdecode(value) for name, value in entries}
    env = _zygote_env()
    # Embedded R set these here; the zygote gets them as this process was started with
    # them (absent, unless pytest itself was started from R).
    for name in ("R_HOME", "R_SESSION_TMPDIR", "R_LIBS_SITE", "LD_LIBRARY_PATH"):
        assert name in os.environ
        assert env.get(name) == started.get(name)
    # Other variables are passed on as they are now, including those set at run time.
    assert env[_OURS] == "kept"
    assert env["PATH"] == os.environ["PATH"]
