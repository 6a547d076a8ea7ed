"""Overhead of a client-image run (issue 5), beside a bare `docker run` in the same run.

- image run: `ImageRunner.run` of an approved image whose script makes one HTTP request
  to the gateway through the run's only way out (proxy container, unix socket, the
  agent's forwarder) and exits: policy check, input, network and volume, proxy and
  analysis containers, the request, output read, and removal of everything;
- bare: `docker run --rm --network none IMAGE true` of the same image (the CLI, as a
  user would time it).

Both are interleaved, `repeats` times each; medians are reported. At the gateway's
address listens a stand-in HTTP server answering `200 {}` at once: what is measured is
the sandbox's cost, not the gateway's own request time (measured in bench/run.py).

The Docker daemon is the one at DOCKER_HOST (`scripts/ensure-docker.sh` starts one,
unix:///run/docker-test.sock, and makes the local base image when missing).

    python bench/images.py --repeats 9
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

DOCKER_HOST = "unix:///run/docker-test.sock"
BASE = "dsgateway-test/base-python:bookworm"
PROBE_TAG = "dsgateway-bench/probe:dev"
TARGET_S = 1.5
SCRIPT = """\
import os, urllib.request
with urllib.request.urlopen(os.environ["DSGATEWAY_URL"] + "/", timeout=10) as r:
    assert r.status == 200
"""

__all__ = ["bench", "report_lines"]


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


def _docker():
    import docker

    os.environ.setdefault("DOCKER_HOST", DOCKER_HOST)
    client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], timeout=120)
    try:
        client.ping()
        client.images.get(BASE)
        return client
    except Exception:
        client.close()
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-docker.sh")], check=True)
    client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], timeout=120)
    client.ping()
    return client


def _probe(client, work: Path) -> str:
    context = work / "probe"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f'FROM {BASE}\nENV PYTHONDONTWRITEBYTECODE=1\nCMD ["python3", "/input/script.py"]\n'
    )
    image, _ = client.images.build(path=str(context), tag=PROBE_TAG, rm=True)
    return image.id


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench(repeats: int = 9) -> dict:
    from gateway.agent.images.contract import RunLimits, RunRequest, RunStatus
    from gateway.agent.images.policy import ImagePolicy
    from gateway.agent.images.runner import ImageRunner, RunnerConfig

    logging.getLogger("gateway").setLevel(logging.WARNING)
    client = _docker()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ}
    try:
        with tempfile.TemporaryDirectory(prefix="dsgateway-bench-images-") as tmp:
            work = Path(tmp)
            digest = _probe(client, work)
            policy = ImagePolicy.in_state_dir(work / "state")
            policy.approve(digest, by="bench", reason="benchmark probe")
            runner = ImageRunner(
                client,
                policy,
                RunnerConfig(
                    gateway=("127.0.0.1", server.server_address[1]),
                    work_dir=work / "runs",
                    proxy_image=BASE,
                    limits=RunLimits(wall_time=60),
                    node="bench-images",
                    pull=False,
                ),
            )
            runner.remove_leftovers()
            bare, image, phases = [], [], {}
            # One of each first, not counted: the page cache and the daemon warm up.
            for i in range(repeats + 1):
                t = time.perf_counter()
                subprocess.run(
                    ["docker", "run", "--rm", "--network", "none", digest, "true"],
                    check=True,
                    env=env,
                    capture_output=True,
                )
                bare_s = time.perf_counter() - t
                t = time.perf_counter()
                result = runner.run(
                    RunRequest(
                        run_id=f"bench{i}",
                        image=f"{PROBE_TAG}@{digest}",
                        user="bench",
                        token="not-checked-by-the-stand-in",  # noqa: S106
                        files={"script.py": SCRIPT},
                    )
                )
                image_s = time.perf_counter() - t
                if result.status is not RunStatus.COMPLETED:
                    raise RuntimeError(f"image run failed: {result.reason}\n{result.log}")
                if i == 0:
                    continue
                bare.append(bare_s)
                image.append(image_s)
                for key, value in result.timings.items():
                    phases.setdefault(key, []).append(value)
            policy.close()
    finally:
        server.shutdown()
        client.close()
    return {
        "repeats": repeats,
        "image_median_s": _median(image),
        "bare_median_s": _median(bare),
        "ratio": _median(image) / _median(bare),
        "image_max_s": max(image),
        "phases_median_s": {k: round(_median(v), 3) for k, v in phases.items()},
        "target_s": TARGET_S,
    }


def report_lines(results: dict) -> list[str]:
    verdict = {True: "met", False: "NOT met"}
    ph = results["phases_median_s"]
    return [
        f"| client-image run of a trivial script that makes one request to the gateway "
        f"(policy check, per-run network and proxy, container start, the request, output "
        f"read, everything removed), {results['repeats']} runs interleaved | median < "
        f"{results['target_s']:g} s | {results['image_median_s']:.2f} s median (slowest "
        f"{results['image_max_s']:.2f} s) | bare `docker run --rm --network none IMAGE "
        f"true` in the same run: {results['bare_median_s']:.2f} s (ratio "
        f"{results['ratio']:.1f}); phases (median s): start {ph.get('start', 0):.2f}, run "
        f"{ph.get('run', 0):.2f}, output {ph.get('output', 0):.2f}, clean-up "
        f"{ph.get('cleanup', 0):.2f} | {verdict[results['image_median_s'] < results['target_s']]} |"
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    results = bench(args.repeats)
    print(json.dumps(results, indent=2))
    print("\n".join(report_lines(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
