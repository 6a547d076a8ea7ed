"""The relay's side of the node link: the node's agent, authenticated by the node's API
key like the rest of `/api/node/*`, long-polls for relay calls and posts their answers.
A node receives only calls bound for it and can answer only those."""

from __future__ import annotations

from flask import Blueprint, current_app

from gateway.coordinator import db
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.authz import current_node
from gateway.coordinator.relay.schemas import (
    RelayPollOut,
    RelayPollQuery,
    RelayResponsesIn,
    RelayResponsesOut,
)

__all__ = ["bp"]

bp = Blueprint("relay_link", __name__)


def hub():
    from gateway.coordinator.relay import hub_of

    return hub_of(current_app)


@bp.get("/node/relay")
@endpoint(
    auth="node",
    query=RelayPollQuery,
    response=RelayPollOut,
    summary="Long poll: relay calls (DataSHIELD HTTP requests) for this node's gateway",
)
def poll(query):
    node = current_node()
    db.commit()  # hold no transaction while waiting
    wait = min(float(query["wait"]), float(current_app.config["LONG_POLL_MAX"]))
    calls = hub().take(node.id, wait, query["limit"])
    return {"requests": [{**c.request, "id": c.id} for c in calls]}


@bp.post("/node/relay/responses")
@endpoint(
    auth="node",
    body=RelayResponsesIn,
    response=RelayResponsesOut,
    summary="Answers of this node's gateway to relay calls",
)
def responses(body):
    node = current_node()
    db.commit()
    accepted, unknown = [], []
    for item in body["responses"]:
        answer = {"status": item["status"], "headers": item["headers"], "body": item["body"]}
        (accepted if hub().respond(node.id, item["id"], answer) else unknown).append(item["id"])
    return {"accepted": accepted, "unknown": unknown}
