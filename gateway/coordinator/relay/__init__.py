"""The relay: real DataSHIELD clients (R's DSI + DSMolgenisArmadillo, Python's
`datashield`) reach a node's gateway through the coordinator, with a relay token.

- `app.py`: `create_relay_app(coordinator_app)`, the listener researchers' clients talk
  to: the Armadillo API at its root (the bearer token selects the node), the Opal API
  under `/nodes/<node_id>/ws/...`.
- `link.py`: `/api/node/relay` (long poll) and `/api/node/relay/responses`, for agents.
- `hub.py`: the calls in flight between the two: in this process's memory, or in
  Redis (`RELAY_HUB`) so that the listener and the agents' API may be other processes.
- `serve.py`: `python -m gateway.coordinator.relay` (API + listener, or `--relay-only`).

`init_app(app)` (called by the coordinator's app factory) adds the node link and the hub.
See docs/relay.md.
"""

from __future__ import annotations

from flask import Flask

from gateway.coordinator.relay.hub import RedisRelayHub, RelayHub, make_hub

__all__ = ["EXTENSION", "hub_of", "init_app"]

EXTENSION = "dsgateway_relay"


def init_app(app: Flask) -> None:
    from gateway.coordinator.relay.link import bp

    app.extensions[EXTENSION] = make_hub(app.config)
    app.register_blueprint(bp, url_prefix="/api")


def hub_of(app: Flask) -> RelayHub | RedisRelayHub:
    return app.extensions[EXTENSION]
