"""The relay: real DataSHIELD clients (R's DSI + DSMolgenisArmadillo, Python's
`datashield`) reach a node's gateway through the coordinator, with a relay token.

- `app.py`: `create_relay_app(coordinator_app)`, the listener researchers' clients talk
  to: the Armadillo API at its root (the bearer token selects the node), the Opal API
  under `/nodes/<node_id>/ws/...`.
- `link.py`: `/api/node/relay` (long poll) and `/api/node/relay/responses`, for agents.
- `hub.py`: the calls in flight between the two: in this process's memory, or in
  Redis (`RELAY_HUB`) so that the listener and the agents' API may be other processes.
- `serve.py`: `python -m gateway.coordinator.relay` (API + listener, or `--relay-only`).
- `watch.py`: work news on the relay exchange (an idle station holds one long poll).

`init_app(app)` (called by the coordinator's app factory) adds the node link and the hub.
See docs/relay.md.
"""

from __future__ import annotations

from flask import Flask

from gateway.coordinator.relay.hub import RedisRelayHub, RelayHub, make_hub
from gateway.coordinator.relay.watch import WorkWatch

__all__ = ["EXTENSION", "hub_of", "init_app", "watch_of"]

EXTENSION = "dsgateway_relay"
WATCH = "dsgateway_relay_work_watch"


def init_app(app: Flask) -> None:
    """After the app's services (the work notifier) exist."""
    from gateway.coordinator.app import services
    from gateway.coordinator.relay.link import bp
    from gateway.coordinator.relay.watch import WorkWatch

    hub = app.extensions[EXTENSION] = make_hub(app.config)
    notifier = services(app).notifier
    # A notification for a node ends its exchanges that watch for work.
    notifier.add_listener(hub.poke)
    app.extensions[WATCH] = WorkWatch(notifier)
    app.register_blueprint(bp, url_prefix="/api")


def hub_of(app: Flask) -> RelayHub | RedisRelayHub:
    return app.extensions[EXTENSION]


def watch_of(app: Flask) -> WorkWatch:
    return app.extensions[WATCH]
