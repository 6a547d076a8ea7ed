"""The images' health check: GET one URL and expect 200 with a small JSON body.

    dsgateway-healthcheck [URL]

URL defaults to $DSGATEWAY_HEALTH_URL (each image sets it: the coordinator's
/api/health, which also reaches the database; the gateway's /actuator/health).
`dsgateway-healthcheck celery` instead pings this container's Celery worker through
the broker (for the worker service, which serves no HTTP).
Exit 0 healthy, 1 not (Docker's convention); the reason goes to stdout, which
`docker inspect` shows under State.Health.
"""

import json
import os
import socket
import sys
import urllib.request


def http(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (a local URL)
            body = resp.read(4096)
    except Exception as err:  # any failure is "unhealthy", with its reason
        print(f"{url}: {err}")
        return 1
    print(f"{url}: {resp.status} {body[:200]!r}")
    return 0 if resp.status == 200 else 1


def _secrets_from_files() -> None:
    """As dsgateway-entrypoint does: Docker runs health checks without the entry point,
    and the app would otherwise make a SECRET_KEY of its own in the instance folder."""
    for name, path in list(os.environ.items()):
        base = name[: -len("_FILE")]
        if name.startswith("DSGATEWAY_") and name.endswith("_FILE"):
            if base != "DSGATEWAY_COORD_RELAY_PRIVATE_KEY":
                with open(path) as fh:
                    os.environ[base] = fh.read().rstrip("\n")
                del os.environ[name]


def celery() -> int:
    from gateway.coordinator import create_app

    _secrets_from_files()

    app = create_app()
    name = f"celery@{socket.gethostname()}"
    replies = app.extensions["celery"].control.ping(destination=[name], timeout=5)
    print(json.dumps(replies))
    return 0 if any(name in r for r in replies) else 1


def main(argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else os.environ.get("DSGATEWAY_HEALTH_URL", "")
    if target == "celery":
        return celery()
    if not target:
        print("no URL: set DSGATEWAY_HEALTH_URL or pass one")
        return 1
    return http(target)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
