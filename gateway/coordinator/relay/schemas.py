"""Marshmallow schemas of the relay's node link (requests and answers carried as JSON,
bodies base64-encoded)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

__all__ = [
    "RelayExchangeIn",
    "RelayExchangeOut",
    "RelayPollOut",
    "RelayPollQuery",
    "RelayResponsesIn",
    "RelayResponsesOut",
]

_HEADERS = fields.List(
    fields.List(fields.Str(), validate=validate.Length(equal=2)),
    load_default=list,
    metadata={"description": "[name, value] pairs, in order (Set-Cookie may repeat)."},
)


class RelayPollQuery(Schema):
    wait = fields.Float(
        load_default=0,
        validate=validate.Range(min=0, max=600),
        metadata={"description": "Seconds to wait for a relay call (capped by LONG_POLL_MAX)."},
    )
    limit = fields.Int(load_default=10, validate=validate.Range(min=1, max=100))


class RelayRequestOut(Schema):
    id = fields.Str(required=True)
    face = fields.Str(required=True, metadata={"description": "`armadillo` or `opal`."})
    method = fields.Str(required=True)
    path = fields.Str(required=True, metadata={"description": "Path on the node's gateway."})
    query = fields.Str(required=True, metadata={"description": "The raw query string."})
    headers = _HEADERS
    body = fields.Str(required=True, metadata={"description": "base64"})
    user = fields.Str(required=True)
    collaboration_id = fields.Int(required=True)
    timeout = fields.Float(metadata={"description": "Seconds the caller waits at most."})


class RelayPollOut(Schema):
    requests = fields.List(fields.Nested(RelayRequestOut), required=True)


class RelayResponseIn(Schema):
    id = fields.Str(required=True, validate=validate.Length(min=1, max=64))
    status = fields.Int(required=True, validate=validate.Range(min=100, max=599))
    headers = _HEADERS
    body = fields.Str(load_default="", metadata={"description": "base64"})


class RelayResponsesIn(Schema):
    responses = fields.List(
        fields.Nested(RelayResponseIn), required=True, validate=validate.Length(max=100)
    )


class RelayResponsesOut(Schema):
    accepted = fields.List(fields.Str(), required=True)
    unknown = fields.List(
        fields.Str(),
        required=True,
        metadata={"description": "Calls nobody waits for any more (timed out)."},
    )


class RelayExchangeIn(Schema):
    """Answers of earlier calls and, in the same request, the long poll for the next
    ones: an agent thread that has just answered a call is at once the one waiting for
    the next, so a relayed call costs one request on the node link, not two."""

    responses = fields.List(
        fields.Nested(RelayResponseIn), load_default=list, validate=validate.Length(max=100)
    )
    wait = fields.Float(
        load_default=0,
        validate=validate.Range(min=0, max=600),
        metadata={"description": "Seconds to wait for a relay call (capped by LONG_POLL_MAX)."},
    )
    limit = fields.Int(load_default=1, validate=validate.Range(min=0, max=100))
    work = fields.Str(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=64),
        metadata={
            "description": "To hear of work here as well: the last answer's `work_seen` "
            '("" at first). The wait then also ends when the node has work to fetch '
            "(`GET /api/node/work?wait=0`); an idle agent needs no work long poll."
        },
    )


class RelayExchangeOut(Schema):
    accepted = fields.List(fields.Str(), required=True)
    unknown = fields.List(fields.Str(), required=True)
    requests = fields.List(fields.Nested(RelayRequestOut), required=True)
    work = fields.Bool(
        metadata={"description": "With `work` sent: the node has work waiting; fetch it."}
    )
    work_seen = fields.Str(
        metadata={"description": "With `work` sent: send this as `work` next time."}
    )
