"""`make bench`: the gateway's figures, each measured against a reference in the same run.

The machines are shared and noisy, so every figure is a median over repeats and is
reported next to a reference measured side by side (a ratio or a difference), never as
a lone absolute time. Results go to docs/performance.md (with --write).

Figures of the gateway (issue 2):
- login with the warm pool (select-profile to a ready session), against starting an R
  from scratch;
- an aggregate round trip over HTTP (async POST /execute, GET /lastcommand,
  GET /lastresult) against evaluating the same call in an R process directly;
- loading 1,000,000 rows x 10 columns from Parquet into a session, against pyarrow
  reading the same file;
- the memory of an idle session's R process.

Figures of the federated analyses (issue 3, `bench/algorithms.py`):
- federated logistic regression, 3 gateways x 100,000 rows, 6 covariates, against R's
  own `glm()` on the pooled rows;
- `summary` of 10 variables over 3 gateways x 1,000,000 rows, against pandas
  `describe()` on the pooled frame.

Figures of the coordinator (issue 4, `bench/coordinator.py`, `--skip-coordinator`):
the relayed aggregate round trip against the direct one, a no-op task to 50 simulated
nodes, the coordinator's CPU with 200 idle agents.

Client images (issue 5, `bench/images.py` when present, `--skip-images`).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password"  # noqa: S105 - a throw-away local gateway


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def make_data(data_dir: Path, big_rows: int) -> None:
    from gateway.node.exampledata import write_benchmark_table

    rng = np.random.default_rng(7)
    small = data_dir / "bench" / "agg"
    small.mkdir(parents=True)
    x = rng.normal(50, 10, 10_000)
    pq.write_table(pa.table({"x": x}), small / "t10k.parquet")
    # The same numbers for the R reference, outside the gateway's data directory.
    with open(data_dir.parent / "t10k.csv", "w") as out:
        out.write("x\n")
        out.writelines(f"{v!r}\n" for v in x)
    big = data_dir / "bench" / "big"
    big.mkdir(parents=True)
    write_benchmark_table(big / "t1m.parquet", rows=big_rows, seed=1)


class Client:
    """A keep-alive HTTP client with a cookie, as libcurl is for R's httr.

    The `requests` package costs about a millisecond per call on its own on these
    machines, which would be counted as gateway overhead; R users' libcurl does not.
    """

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self.cookie = None

    def request(
        self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None
    ) -> tuple[int, bytes, dict]:
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = self.cookie
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return response.status, data, dict(response.getheaders())

    def post(self, path, body=b"", headers=None):
        return self.request("POST", path, body, headers)

    def get(self, path, headers=None):
        return self.request("GET", path, None, headers)


class Gateway:
    def __init__(self, data_dir: Path, state_dir: Path):
        from gateway.node.app import create_app
        from gateway.node.config import NodeConfig
        from gateway.node.limits import Limits
        from gateway.node.server import BackgroundServer

        r_lib = os.environ.get("DSGATEWAY_R_LIB", str(ROOT / ".rlib"))
        config = NodeConfig.quick(
            data_dir,
            state_dir,
            password=PASSWORD,
            r_lib=r_lib,
            limits=Limits(warm_workers=2, max_sessions=20, memory_per_session=4096),
        )
        self.app = create_app(config)
        self.services = self.app.extensions["dsgateway"]
        self.server = BackgroundServer(self.app, threads=16).start()
        self.url = self.server.url
        time.sleep(1.0)  # let the pool fork its warm workers

    def login(self) -> Client:
        client = Client(self.url)
        basic = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
        status, body, _ = client.post("/select-profile", b"", {"Authorization": f"Basic {basic}"})
        assert status == 204, body
        return client

    def worker_pids(self) -> list[int]:
        return [
            s.worker.pid for s in self.services.sessions._sessions.values() if hasattr(s, "worker")
        ]

    def close(self) -> None:
        from gateway.node.app import close_services

        self.server.stop()
        close_services(self.services)


def bench_login(gw: Gateway, repeats: int) -> dict:
    logins = []
    for _ in tqdm(range(repeats), desc="login (warm pool)", leave=False):
        started = time.perf_counter()
        client = gw.login()
        logins.append(time.perf_counter() - started)
        client.post("/logout")
        time.sleep(0.1)  # the pool refills in the background, as between real logins
    cold = []
    code = "import rpy2.rinterface as ri; ri.initr()"
    for _ in tqdm(range(max(3, repeats // 6)), desc="reference: cold R start", leave=False):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        cold.append(time.perf_counter() - started)
    return {
        "login_ms": median_ms(logins),
        "cold_r_ms": median_ms(cold),
        "ratio": statistics.median(logins) / statistics.median(cold),
    }


R_DIRECT = r"""
D <- read.csv("{csv}")
f <- function() dsGatewayBase::meanDS(D$x)
invisible(f())
times <- numeric({n})
for (i in seq_len({n})) {{
  t0 <- proc.time()[["elapsed"]]
  invisible(f())
  times[i] <- proc.time()[["elapsed"]] - t0
}}
# proc.time() ticks in milliseconds; time blocks of calls as well, for resolution.
t0 <- proc.time()[["elapsed"]]
for (i in seq_len({n})) invisible(f())
cat((proc.time()[["elapsed"]] - t0) / {n})
"""


def bench_aggregate(gw: Gateway, data_dir: Path, repeats: int) -> dict:
    client = gw.login()
    status, body, _ = client.post("/load-table?table=bench%2Fagg%2Ft10k&symbol=D&async=FALSE")
    assert status == 200, body
    trips = []
    for _ in tqdm(range(repeats), desc="aggregate round trip", leave=False):
        started = time.perf_counter()
        status, body, _ = client.post(
            "/execute?async=TRUE", "meanDS(D$x)", {"Content-Type": "text/plain"}
        )
        assert status == 201, body
        client.get("/lastcommand")
        status, body, _ = client.get("/lastresult", {"Accept": "application/octet-stream"})
        assert status == 200 and body[:2] == b"X\n", body
        trips.append(time.perf_counter() - started)
    client.post("/logout")
    env = dict(os.environ, R_LIBS_USER=os.environ.get("DSGATEWAY_R_LIB", str(ROOT / ".rlib")))
    script = R_DIRECT.format(csv=data_dir.parent / "t10k.csv", n=repeats)
    out = subprocess.run(
        ["Rscript", "-e", script], check=True, capture_output=True, text=True, env=env
    ).stdout
    direct = float(out.strip().split()[-1])
    trip_ms = median_ms(trips)
    return {
        "roundtrip_ms": trip_ms,
        "direct_ms": direct * 1000,
        "overhead_ms": trip_ms - direct * 1000,
    }


def wait_load_done(client: Client) -> dict:
    """Wait for a load-table as `gateway.client.ArmadilloDriver` does, and as
    DSMolgenisArmadillo's ``dsGetInfo`` does for an async result: ``GET /lastresult``
    blocks until the command is done (404: a load-table has no value), then
    ``GET /lastcommand`` says how it ended.

    Polling ``/lastcommand`` in a loop instead (DSI does, sleeping 50 ms or more between
    polls) would measure the client's sleep period, not the gateway; a short sleep makes
    every poll a request that takes CPU from the load it waits for on two cores.
    """
    status, body, _ = client.get("/lastresult", {"Accept": "application/octet-stream"})
    assert status == 404, (status, body)  # a load-table has no value
    return json.loads(client.get("/lastcommand")[1])


def bench_load(gw: Gateway, data_dir: Path, repeats: int) -> dict:
    path = data_dir / "bench" / "big" / "t1m.parquet"
    loads, reads = [], []
    for _ in tqdm(range(repeats), desc="load 1M x 10", leave=False):
        started = time.perf_counter()
        pq.read_table(path)
        reads.append(time.perf_counter() - started)
        client = gw.login()  # a fresh session each time, as a user's first load is
        started = time.perf_counter()
        status, body, _ = client.post("/load-table?table=bench%2Fbig%2Ft1m&symbol=B&async=TRUE")
        assert status == 201, body
        state = wait_load_done(client)
        loads.append(time.perf_counter() - started)
        assert state["status"] == "COMPLETED", state
        client.post("/logout")
        time.sleep(1.0)  # let the pool fork and warm the next worker, as between logins
    return {
        "load_ms": median_ms(loads),
        "pyarrow_ms": median_ms(reads),
        "ratio": statistics.median(loads) / statistics.median(reads),
    }


def bench_memory(gw: Gateway, sessions: int) -> dict:
    before = set(gw.worker_pids())
    clients = [gw.login() for _ in range(sessions)]
    time.sleep(1.0)
    rss, pss, uss = [], [], []
    for pid in set(gw.worker_pids()) - before:
        info = psutil.Process(pid).memory_full_info()
        rss.append(info.rss)
        pss.append(info.pss)
        uss.append(info.uss)
    for client in clients:
        client.post("/logout")
    mb = 1024 * 1024
    return {
        "rss_mb": statistics.median(rss) / mb,
        "pss_mb": statistics.median(pss) / mb,
        "uss_mb": statistics.median(uss) / mb,
        "sessions": len(rss),
    }


def algorithm_rows(results: dict) -> list[str]:
    rows = []
    verdict = {True: "met", False: "NOT met"}
    glm = results.get("glm")
    if glm:
        rows.append(
            f"| federated logistic regression, {glm['nodes']} gateways x {glm['rows']:,} rows, "
            f"{glm['covariates']} covariates, over loopback HTTP (`algorithms.glm`, Armadillo "
            f"driver) | within 2x of R's `glm()` on the pooled rows | {glm['federated_s']:.2f} s"
            f"; {glm['iterations']} iterations, {glm['per_iteration_s'] * 1000:.0f} ms per "
            f"iteration (datashield-opal driver: {glm['federated_opal_s']:.2f} s) | R `glm()` "
            f"on {glm['nodes'] * glm['rows']:,} rows: {glm['reference_s']:.2f} s "
            f"({glm['reference_iterations']} iterations); ratio {glm['ratio']:.2f}; "
            f"coefficients agree to {glm['max_rel_diff']:.1e} | {verdict[glm['ratio'] <= 2]} |"
        )
    summary = results.get("summary")
    if summary:
        rows.append(
            f"| `algorithms.summary` of 10 variables, 3 gateways x 1,000,000 rows (Armadillo "
            f"driver) | within 3x of pandas | {summary['federated_s']:.2f} s "
            f"(datashield-opal driver: {summary['federated_opal_s']:.2f} s) | pandas "
            f"`describe()` of the pooled frame: {summary['reference_s']:.2f} s; ratio "
            f"{summary['ratio']:.2f} | {verdict[summary['ratio'] <= 3]} |"
        )
    return rows


def report(results: dict, args) -> str:
    login, agg, load, mem = (results[k] for k in ("login", "aggregate", "load", "memory"))
    cpu = platform.processor() or platform.machine()
    verdict = {True: "met", False: "NOT met"}
    lines = [
        "# Performance",
        "",
        "Measured by `make bench` (`bench/run.py`); this page is written by it. Every figure",
        "is a median over repeats, next to a reference measured in the same run on the same",
        "machine (shared machines are noisy: compare the ratios, not the absolute times).",
        "",
        f"Last run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores "
        f"({cpu}), Python {platform.python_version()}, repeats: login {args.logins}, "
        f"aggregate {args.trips}, load {args.loads}.",
        "",
        "| figure | target | measured | reference (same run) | result |",
        "|---|---|---|---|---|",
        f"| login: select-profile to a ready session (warm pool) | median < 100 ms | "
        f"{login['login_ms']:.1f} ms | cold start of an embedded R: {login['cold_r_ms']:.0f} ms "
        f"(login is {login['ratio']:.3f}x of it) | {verdict[login['login_ms'] < 100]} |",
        f"| aggregate round trip `meanDS(D$x)`, 10,000 rows: async POST /execute + GET "
        f"/lastcommand + GET /lastresult | overhead < 5 ms over direct R | "
        f"{agg['roundtrip_ms']:.2f} ms | the same call evaluated in R directly: "
        f"{agg['direct_ms']:.2f} ms; overhead {agg['overhead_ms']:.2f} ms | "
        f"{verdict[agg['overhead_ms'] < 5]} |",
        f"| load 1,000,000 rows x 10 columns (numeric and categorical) from Parquet into a "
        f"session (load-table, then a blocking GET /lastresult) | within 3x of pyarrow | "
        f"{load['load_ms']:.0f} ms | "
        f"pyarrow `read_table` of the same file: {load['pyarrow_ms']:.0f} ms; ratio "
        f"{load['ratio']:.2f} | {verdict[load['ratio'] <= 3]} |",
        f"| memory of an idle session's R process | < 80 MB | PSS {mem['pss_mb']:.1f} MB "
        f"(unique {mem['uss_mb']:.1f} MB) | RSS {mem['rss_mb']:.1f} MB, most of it shared "
        f"with the zygote and the other sessions | {verdict[mem['pss_mb'] < 80]} |",
        *algorithm_rows(results),
        "",
        "How to read them:",
        "- Login takes a worker forked in advance from the zygote (an R with the DataSHIELD",
        "  packages loaded), applies the profile's options and the memory limit; the",
        "  reference is what a login would cost if each session started its own R.",
        "- The round trip includes three HTTP requests on loopback, the expression check and",
        "  rewrite, the hand-over to the session's R process and R's serialization of the",
        "  result; the reference is only the evaluation.",
        "- Load: each repeat is a fresh session, right after its login, as a user's first",
        "  load is; the client learns of completion as gateway.client's driver does (a",
        "  blocking GET /lastresult). Parquet is decoded a column ahead while the previous",
        "  column is written straight into R's vectors. A fresh R process page-faults every",
        "  page it allocates, which on these VMs costs about as much as the decoding and",
        "  varies from run to run; pyarrow reads into a long-running process's memory.",
        "- Memory: RSS counts pages shared copy-on-write with the zygote in every process;",
        "  PSS divides shared pages among the processes sharing them (what the sessions",
        "  really cost together), USS is what ending the session frees.",
        "",
        *coordinator_section(results),
        *images_section(results),
    ]
    return "\n".join(lines)


TABLE_HEAD = [
    "| figure | target | measured | reference (same run) | result |",
    "|---|---|---|---|---|",
]


def coordinator_section(results: dict) -> list[str]:
    rows = results.get("coordinator_rows")
    if not rows:
        return []
    return [
        "## The coordinator (issue 4)",
        "",
        "Measured by `bench/coordinator.py` (also runnable alone), every part its own",
        "process: `dsgateway coordinator relay` (API and relay listener), `dsgateway node",
        "run` stations, `dsgateway coordinator worker` with Redis.",
        "",
        *TABLE_HEAD,
        *rows,
        "",
        "How to read them:",
        "- Relay: each relayed call crosses the relay listener, the hub, the node link (one",
        "  `POST /api/node/relay/exchange` carries the answer and waits for the next call)",
        "  and goes straight into the gateway's WSGI app inside `node run`; the reference is",
        '  the same calls sent to that gateway\'s own port. See docs/relay.md, "Speed".',
        "- Dispatch: simulated nodes are threads of the benchmark process that answer every",
        "  run at once; the time runs from `POST /tasks` to the central result being",
        "  readable (`GET /tasks/<id>/result`). The phases come from the coordinator's own",
        "  timestamps: most of the time is the 50 work polls claiming their runs and the 50",
        "  results being stored, one transaction each, on a 2-core machine shared with the",
        "  benchmark's own 50 agents.",
        "- Idle: the coordinator's CPU (user + system) over the window, scaled to a minute.",
        "  A request on the node link costs the coordinator a few milliseconds of CPU here",
        "  (Flask, marshmallow, SQLAlchemy); 200 agents each renewing a work poll and a",
        "  relay poll every 55 s and heartbeating every 20 s make about 16 requests a",
        "  second. The window without heartbeats shows what the long polls alone cost.",
        *results.get("coordinator_notes", []),
        "",
    ]


def images_section(results: dict) -> list[str]:
    rows = results.get("images_rows")
    if not rows:
        return []
    return ["## Client images (issue 5)", "", *TABLE_HEAD, *rows, ""]


def load_module(name: str, path: Path):
    """bench/algorithms.py by path: its name would clash with the `algorithms` package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the report to this Markdown file")
    parser.add_argument("--logins", type=int, default=30)
    parser.add_argument("--trips", type=int, default=300)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--skip-algorithms",
        action="store_true",
        help="only the gateway figures (the federated ones take minutes)",
    )
    parser.add_argument(
        "--skip-coordinator",
        action="store_true",
        help="without the coordinator's figures (bench/coordinator.py, a few minutes)",
    )
    parser.add_argument(
        "--skip-images", action="store_true", help="without bench/images.py (needs Docker)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsgateway-bench-") as tmp:
        data_dir, state_dir = Path(tmp) / "data", Path(tmp) / "state"
        print("generating data ...", flush=True)
        make_data(data_dir, args.rows)
        gw = Gateway(data_dir, state_dir)
        try:
            results = {
                "login": bench_login(gw, args.logins),
                "aggregate": bench_aggregate(gw, data_dir, args.trips),
                "load": bench_load(gw, data_dir, args.loads),
                "memory": bench_memory(gw, 5),
            }
        finally:
            gw.close()
    if not args.skip_algorithms:
        federated = load_module("bench_algorithms", Path(__file__).with_name("algorithms.py"))
        results["glm"] = federated.run_glm()
        results["summary"] = federated.run_summary()
    if not args.skip_coordinator:
        coordinator = load_module("bench_coordinator", Path(__file__).with_name("coordinator.py"))
        results["coordinator"] = coordinator.bench()
        results["coordinator_rows"] = coordinator.report_lines(results["coordinator"])
        results["coordinator_notes"] = coordinator.report_notes(results["coordinator"])
    images_path = Path(__file__).with_name("images.py")
    if not args.skip_images and images_path.exists():
        images = load_module("bench_images", images_path)
        try:
            results["images"] = images.bench()
            results["images_rows"] = images.report_lines(results["images"])
        except Exception as err:  # e.g. no Docker daemon: say so in the report
            print(f"bench/images.py failed: {err!r}", file=sys.stderr)
            results["images_rows"] = [
                f"| client-image run | - | not measured: {type(err).__name__}: "
                f"{str(err)[:200]} | - | - |"
            ]
    text = report(results, args)
    print(text)
    if args.write:
        args.write.write_text(text)
        print(f"written to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
