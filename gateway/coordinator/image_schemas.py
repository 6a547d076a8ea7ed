"""Marshmallow schemas of the client-image API (api/images.py, docs/client-images.md).

An image task is a task with `algorithm: "image"`; its parameters are checked here
whichever endpoint made it (`image_task_parameters`), so a task the nodes receive always
names its image by digest.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from gateway.agent.images.contract import FILE_NAME_PATTERN, PARAMETERS_FILE
from gateway.agent.images.references import DIGEST_PATTERN, InvalidReference, parse_reference
from gateway.coordinator.image_runs import IMAGE_ALGORITHM, relay_station_ids
from gateway.coordinator.models import IMAGE_DECISIONS, IMAGE_PHASES, IMAGE_STATES
from gateway.coordinator.schemas import NODE_RESULT_STATUSES, RunFields

__all__ = [
    "IMAGE_ALGORITHM",
    "INPUT_LIMIT",
    "image_task_parameters",
]

INPUT_LIMIT = 4 * 1024 * 1024  # files and parameters together (the nodes' default limit)
# The final statuses a node may report for a run (POST /node/runs/<id>/result).
NODE_FINAL_STATUSES = NODE_RESULT_STATUSES

_id = validate.Range(min=1)
_digest = validate.Regexp(f"^{DIGEST_PATTERN}$", error="Expected sha256: and 64 lowercase hex.")
_reason = validate.Length(min=1, max=4000)
_file_name = validate.Regexp(FILE_NAME_PATTERN, error=f"File names match {FILE_NAME_PATTERN}.")


def pinned_reference(value: str) -> tuple[str, str]:
    """(reference, digest) of an image reference pinned by digest; ValidationError else."""
    try:
        ref = parse_reference(value)
    except InvalidReference as err:
        raise ValidationError(str(err)) from None
    if ref.digest is None:
        raise ValidationError(
            f"{value} is not pinned by digest: a tag can be moved to other content, so "
            f"nodes run images by digest only. Give {value}@sha256:<64 hex> "
            f"(docker inspect --format '{{{{index .RepoDigests 0}}}}' shows it)."
        )
    return value, ref.digest


class _ImageInput(Schema):
    image = fields.Str(required=True, validate=validate.Length(min=1, max=512))
    files = fields.Dict(
        keys=fields.Str(validate=_file_name),
        values=fields.Str(),
        load_default=dict,
        metadata={"description": "Files put in /input (text), e.g. the script."},
    )

    @validates_schema
    def _check(self, data, **_kw):
        if "image" in data:
            try:
                pinned_reference(data["image"])
            except ValidationError as err:
                raise ValidationError(err.messages, "image") from None
        if PARAMETERS_FILE in (data.get("files") or {}):
            raise ValidationError(f"{PARAMETERS_FILE} is made from `parameters`.", "files")


_STATIONS_WITHOUT_RELAY = (
    "Stations are reached through the relay: leave `relay` out or set it to true."
)


def _stations_field(description: str) -> fields.List:
    return fields.List(
        fields.Int(validate=_id),
        load_default=None,
        allow_none=True,
        validate=validate.Length(
            min=1, error="Name at least one station, or leave `stations` out."
        ),
        metadata={"description": description},
    )


class ImageTaskIn(_ImageInput):
    name = fields.Str(load_default="", validate=validate.Length(max=256))
    collaboration_id = fields.Int(required=True, validate=_id)
    parameters = fields.Raw(
        load_default=None,
        allow_none=True,
        metadata={"description": "Any JSON: /input/parameters.json."},
    )
    node_ids = fields.List(
        fields.Int(validate=_id),
        load_default=None,
        validate=validate.Length(min=1),
        metadata={"description": "Default: every node of the collaboration."},
    )
    timeout = fields.Int(
        load_default=None,
        validate=validate.Range(min=1, max=7 * 24 * 3600),
        metadata={"description": "Seconds until unfinished runs expire."},
    )
    run_timeout = fields.Int(
        load_default=None,
        validate=validate.Range(min=1, max=7 * 24 * 3600),
        metadata={"description": "Wall time asked of each node (at most its own limit)."},
    )
    relay = fields.Bool(
        load_default=False,
        metadata={
            "description": "The script opens stations through the coordinator's relay "
            "(multi-node scripts): each run gets a relay token per station (`stations`, "
            "default the target nodes), and the node's proxy a second, fixed port to the "
            "relay."
        },
    )
    stations = _stations_field(
        "Node ids of the collaboration the script reaches through the relay (implies "
        "`relay`; default with `relay`: the target nodes). E.g. `node_ids: [1]`, "
        "`stations: [1, 2]`: the script runs once, at node 1, over both stations."
    )

    @validates_schema(pass_original=True)
    def _check_stations(self, data, original, **_kw):
        if (
            data.get("stations") is not None
            and isinstance(original, dict)
            and original.get("relay") is False
        ):
            raise ValidationError(_STATIONS_WITHOUT_RELAY, "stations")

    @post_load
    def _stations_imply_relay(self, data, **_kw):
        if data.get("stations") is not None:
            data["relay"] = True
        return data


class _StoredParameters(_ImageInput):
    """The parameters of a task of algorithm "image", as the nodes receive them."""

    digest = fields.Str(load_default=None, allow_none=True, validate=_digest)
    input = fields.Raw(load_default=None, allow_none=True)
    timeout = fields.Int(load_default=None, allow_none=True, validate=validate.Range(min=1))
    relay = fields.Bool(load_default=False)
    stations = _stations_field("The stations reached through the relay (with `relay`).")

    @validates_schema
    def _check_stations(self, data, **_kw):
        if data.get("stations") is not None and data.get("relay") is not True:
            raise ValidationError(
                "Stations are reached through the relay: `relay: true`.", "stations"
            )


def _input_size(files: dict[str, str], parameters: Any) -> int:
    import json

    return sum(len(v.encode()) for v in files.values()) + len(json.dumps(parameters).encode())


def image_task_parameters(raw: dict[str, Any]) -> dict[str, Any]:
    """The checked parameters of an image task (raises ValidationError with field
    messages): the reference must carry a digest, and a separate `digest` must agree."""
    data = _StoredParameters().load(raw)
    _, digest = pinned_reference(data["image"])
    if data["digest"] not in (None, digest):
        raise ValidationError({"digest": [f"Differs from the digest in the image: {digest}."]})
    if _input_size(data["files"], data["input"]) > INPUT_LIMIT:
        raise ValidationError({"files": [f"Files and parameters exceed {INPUT_LIMIT} bytes."]})
    data["digest"] = digest
    if data["stations"] is not None:  # one token per station: each named once, in order
        data["stations"] = sorted(set(data["stations"]))
    return data


class ImageTaskOut(Schema):
    id = fields.Int(required=True)
    name = fields.Str()
    collaboration_id = fields.Int(required=True)
    creator_id = fields.Int(allow_none=True)
    kind = fields.Constant("image")
    image = fields.Function(lambda t: (t.parameters or {}).get("image"))
    digest = fields.Function(lambda t: (t.parameters or {}).get("digest"))
    node_ids = fields.List(fields.Int(), attribute="target_node_ids")
    # Function fields: `type` and `items` tell the OpenAPI document what they hold.
    relay = fields.Function(
        lambda t: (t.parameters or {}).get("relay") is True, metadata={"type": "boolean"}
    )
    stations = fields.Function(
        relay_station_ids,
        metadata={
            "type": "array",
            "items": {"type": "integer"},
            "nullable": True,
            "description": "Node ids each run reaches through the relay (null: no relay).",
        },
    )
    status = fields.Str(required=True)
    message = fields.Str()
    created_at = fields.DateTime()
    deadline = fields.DateTime()
    runs = fields.Method("_run_counts", metadata={"description": "Runs per status."})

    def _run_counts(self, task) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in task.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts


class ImageRunOut(RunFields):
    """A run as the researcher follows it: the run's fields (RunFields) and its phase."""

    run_id = fields.Int(required=True)
    node_name = fields.Str()
    status = fields.Str(
        required=True,
        metadata={
            "description": "pending, pulling, starting, running, completed, not approved, "
            "failed, killed, timed out, expired, cancelled."
        },
    )
    phase = fields.Str(allow_none=True)
    digest = fields.Str(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)


class NodeImageOut(Schema):
    digest = fields.Str(required=True)
    image = fields.Str(allow_none=True)
    state = fields.Str(required=True, metadata={"description": f"{list(IMAGE_STATES)}"})
    reason = fields.Str()
    decided_by = fields.Str()
    decided_at = fields.DateTime(allow_none=True)
    collaborations = fields.List(fields.Int(), allow_none=True)
    requested_by = fields.Str(allow_none=True)
    requested_collaboration_id = fields.Int(allow_none=True)
    labels = fields.Dict()
    updated_at = fields.DateTime()


class NodeImageAtOut(NodeImageOut):
    node_id = fields.Int(required=True)
    node_name = fields.Str()
    organization_id = fields.Int()
    state = fields.Str(required=True, metadata={"description": "... or `none`."})
    may_run = fields.Bool(required=True)
    updated_at = fields.DateTime(allow_none=True)


class CollaborationImageOut(Schema):
    digest = fields.Str(required=True)
    image = fields.Str(allow_none=True)
    nodes = fields.List(fields.Nested(NodeImageAtOut), required=True)


class ImageQuery(Schema):
    digest = fields.Str(validate=_digest)


class ImageDecisionIn(Schema):
    digest = fields.Str(required=True, validate=_digest)
    decision = fields.Str(required=True, validate=validate.OneOf(IMAGE_DECISIONS))
    reason = fields.Str(required=True, validate=_reason)
    image = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=512))
    collaborations = fields.List(
        fields.Int(validate=_id),
        load_default=None,
        allow_none=True,
        metadata={"description": "approve only: the collaborations it covers (null: any)."},
    )

    @validates_schema
    def _check(self, data, **_kw):
        if data.get("collaborations") is not None and data.get("decision") != "approve":
            raise ValidationError("Only an approval names collaborations.", "collaborations")
        if data.get("image"):
            try:
                parse_reference(data["image"])
            except InvalidReference as err:
                raise ValidationError(str(err), "image") from None


class ImageDecisionOut(Schema):
    id = fields.Int(required=True)
    node_id = fields.Int(required=True)
    digest = fields.Str(required=True)
    decision = fields.Str(required=True)
    reason = fields.Str()
    image = fields.Str(allow_none=True)
    collaborations = fields.List(fields.Int(), allow_none=True)
    requested_by = fields.Str()
    created_at = fields.DateTime()
    status = fields.Str(required=True, metadata={"description": "queued, applied, refused."})
    message = fields.Str()
    applied_at = fields.DateTime(allow_none=True)


# ---------------------------------------------------------------- the node link


class MirrorApprovalIn(Schema):
    digest = fields.Str(required=True, validate=_digest)
    state = fields.Str(required=True, validate=validate.OneOf(("approved", "rejected", "revoked")))
    reason = fields.Str(load_default="", validate=validate.Length(max=4000))
    decided_by = fields.Str(load_default="", validate=validate.Length(max=128))
    decided_at = fields.AwareDateTime(load_default=None, allow_none=True)
    image = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=512))
    collaborations = fields.List(fields.Int(), load_default=None, allow_none=True)


class MirrorRequestIn(Schema):
    digest = fields.Str(required=True, validate=_digest)
    image = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=512))
    requested_by = fields.Str(load_default="", validate=validate.Length(max=128))
    requested_at = fields.AwareDateTime(load_default=None, allow_none=True)
    collaboration = fields.Int(load_default=None, allow_none=True)
    labels = fields.Dict(keys=fields.Str(), values=fields.Str(), load_default=dict)


class MirrorIn(Schema):
    approvals = fields.List(
        fields.Nested(MirrorApprovalIn), required=True, validate=validate.Length(max=10_000)
    )
    requests = fields.List(
        fields.Nested(MirrorRequestIn), load_default=list, validate=validate.Length(max=10_000)
    )


class MirrorOut(Schema):
    approvals = fields.Int(required=True)
    requests = fields.Int(required=True)
    changed = fields.Int(required=True)


class PhaseIn(Schema):
    phase = fields.Str(required=True, validate=validate.OneOf(IMAGE_PHASES))
    detail = fields.Str(load_default="", validate=validate.Length(max=2000))


class PhaseOut(Schema):
    run_id = fields.Int(required=True)
    phase = fields.Str(required=True)


class NodeDecisionsOut(Schema):
    decisions = fields.List(fields.Nested(ImageDecisionOut), required=True)


class DecisionAckIn(Schema):
    status = fields.Str(required=True, validate=validate.OneOf(("applied", "refused")))
    message = fields.Str(load_default="", validate=validate.Length(max=4000))
