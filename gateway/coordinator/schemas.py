"""Marshmallow schemas of every request and response of the coordinator's API.

`*In` schemas load requests (unknown fields are errors), `*Patch` schemas load partial
updates (at least one field), `*Out` schemas dump responses, `*Query` schemas load query
strings. The OpenAPI document (/api/openapi.json) is generated from these classes.
"""

from __future__ import annotations

from datetime import UTC

from flask import current_app
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from gateway.agent.settings_report import DISCLOSURE_SETTING
from gateway.coordinator.audit import OUTCOMES as AUDIT_OUTCOMES
from gateway.coordinator.models import ROLE_NAMES, RUN_STATUSES, TASK_STATUSES, utcnow

# Usernames become the `sub` of relay tokens, which the node checks with this pattern.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"
_name = validate.Regexp(NAME_PATTERN, error="Letters, digits, '_', '.', '@', '-'; 1-128.")
_title = validate.Length(min=1, max=128)
_id = validate.Range(min=1)
_algorithm_name = validate.Regexp(r"^[A-Za-z][A-Za-z0-9_.:-]{0,127}$")
_profile_name = validate.Regexp(r"^[A-Za-z0-9_.-]{1,64}$")  # a gateway profile


class _Patch(Schema):
    @validates_schema
    def _not_empty(self, data, **_kw):
        if not data:
            raise ValidationError("Give at least one field to change.", "_schema")


class ErrorOut(Schema):
    message = fields.Str(required=True)
    errors = fields.Dict(metadata={"description": "Field messages for invalid input."})


class PageQuery(Schema):
    limit = fields.Int(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Int(load_default=0, validate=validate.Range(min=0))


# ---------------------------------------------------------------- auth


class LoginIn(Schema):
    username = fields.Str(required=True, validate=validate.Length(min=1, max=128))
    password = fields.Str(required=True, validate=validate.Length(min=1, max=1024))


class RefreshIn(Schema):
    refresh_token = fields.Str(required=True, validate=validate.Length(min=1, max=4096))


class TokenOut(Schema):
    access_token = fields.Str(required=True)
    refresh_token = fields.Str(required=True)
    token_type = fields.Str(required=True)
    expires_in = fields.Int(required=True, metadata={"description": "Seconds."})


class RelayTokenIn(Schema):
    node_id = fields.Int(required=True, validate=_id)


class RelayTokenOut(Schema):
    token = fields.Str(required=True)
    token_type = fields.Str(required=True)
    expires_in = fields.Int(required=True)
    issuer = fields.Str(required=True)
    audience = fields.Str(required=True)
    node_id = fields.Int(required=True)
    collaboration_id = fields.Int(required=True)
    projects = fields.List(fields.Str(), required=True)


class RelayKeyOut(Schema):
    issuer = fields.Str(required=True)
    algorithm = fields.Str(required=True)
    public_key = fields.Str(
        allow_none=True, metadata={"description": "PEM; null when nodes share an HS secret."}
    )


# ---------------------------------------------------------------- organisations


class OrganizationIn(Schema):
    name = fields.Str(required=True, validate=_title)
    description = fields.Str(load_default="", validate=validate.Length(max=4000))


class OrganizationPatch(_Patch):
    name = fields.Str(validate=_title)
    description = fields.Str(validate=validate.Length(max=4000))


class OrganizationOut(Schema):
    id = fields.Int(required=True)
    name = fields.Str(required=True)
    description = fields.Str()
    created_at = fields.DateTime()


# ---------------------------------------------------------------- users and roles


class RoleIn(Schema):
    name = fields.Str(required=True, validate=validate.OneOf(ROLE_NAMES))
    organization_id = fields.Int(load_default=None, allow_none=True, validate=_id)
    collaboration_id = fields.Int(load_default=None, allow_none=True, validate=_id)


class RoleOut(Schema):
    id = fields.Int(required=True)
    name = fields.Str(required=True)
    organization_id = fields.Int(allow_none=True)
    collaboration_id = fields.Int(allow_none=True)


class UserIn(Schema):
    username = fields.Str(required=True, validate=_name)
    password = fields.Str(required=True, validate=validate.Length(min=8, max=1024))
    email = fields.Email(load_default=None, allow_none=True)
    organization_id = fields.Int(required=True, validate=_id)


class UserPatch(_Patch):
    email = fields.Email(allow_none=True)
    password = fields.Str(validate=validate.Length(min=8, max=1024))
    current_password = fields.Str(
        validate=validate.Length(max=1024),
        metadata={"description": "Required when changing one's own password."},
    )
    active = fields.Bool()


class UserOut(Schema):
    id = fields.Int(required=True)
    username = fields.Str(required=True)
    email = fields.Str(allow_none=True)
    organization_id = fields.Int(required=True)
    active = fields.Bool()
    created_at = fields.DateTime()
    last_login = fields.DateTime(allow_none=True)
    roles = fields.List(fields.Nested(RoleOut))


class UserQuery(PageQuery):
    organization_id = fields.Int(validate=_id)


# ---------------------------------------------------------------- collaborations


class CollaborationIn(Schema):
    name = fields.Str(required=True, validate=_title)
    description = fields.Str(load_default="", validate=validate.Length(max=4000))
    organization_ids = fields.List(fields.Int(validate=_id), load_default=list)


class CollaborationPatch(_Patch):
    name = fields.Str(validate=_title)
    description = fields.Str(validate=validate.Length(max=4000))


class MemberIn(Schema):
    organization_id = fields.Int(required=True, validate=_id)


class CollaborationOut(Schema):
    id = fields.Int(required=True)
    name = fields.Str(required=True)
    description = fields.Str()
    created_at = fields.DateTime()
    organization_ids = fields.Method("_org_ids")

    def _org_ids(self, collab) -> list[int]:
        return sorted(o.id for o in collab.organizations)


# ---------------------------------------------------------------- nodes

_projects = fields.List(fields.Str(validate=validate.Regexp(r"^[a-z0-9-]{1,64}$")))


class NodeIn(Schema):
    name = fields.Str(validate=_name, metadata={"description": "Default: org-collab ids."})
    organization_id = fields.Int(required=True, validate=_id)
    collaboration_id = fields.Int(required=True, validate=_id)
    audience = fields.Str(
        validate=validate.Length(min=1, max=256),
        metadata={"description": "`aud` of relay tokens; default: the node name."},
    )
    projects = fields.List(
        fields.Str(validate=validate.Regexp(r"^[a-z0-9-]{1,64}$")), load_default=list
    )


class NodePatch(_Patch):
    name = fields.Str(validate=_name)
    audience = fields.Str(validate=validate.Length(min=1, max=256))
    projects = _projects


class NodeQuery(PageQuery):
    collaboration_id = fields.Int(validate=_id)
    organization_id = fields.Int(validate=_id)


class NodeOut(Schema):
    id = fields.Int(required=True)
    name = fields.Str(required=True)
    organization_id = fields.Int(required=True)
    collaboration_id = fields.Int(required=True)
    audience = fields.Str()
    projects = fields.List(fields.Str())
    api_key_prefix = fields.Str(metadata={"description": "First characters of the key."})
    last_seen = fields.DateTime(allow_none=True)
    online = fields.Method("_online")
    created_at = fields.DateTime()

    def _online(self, node) -> bool:
        if node.last_seen is None:
            return False
        limit = current_app.config["NODE_OFFLINE_AFTER"]
        return (utcnow() - node.last_seen).total_seconds() <= limit


class NodeKeyOut(NodeOut):
    api_key = fields.Str(
        required=True, metadata={"description": "Shown once: only its hash is kept."}
    )


# ---------------------------------------------------------------- tasks, runs, results


class TaskIn(Schema):
    name = fields.Str(load_default="", validate=validate.Length(max=256))
    collaboration_id = fields.Int(required=True, validate=_id)
    algorithm = fields.Str(required=True, validate=_algorithm_name)
    parameters = fields.Dict(keys=fields.Str(), load_default=dict)
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


class TaskQuery(PageQuery):
    collaboration_id = fields.Int(validate=_id)
    status = fields.Str(validate=validate.OneOf(TASK_STATUSES))


class RunFields(Schema):
    """What every view of a run shows (RunOut; image_schemas.ImageRunOut)."""

    task_id = fields.Int(required=True)
    node_id = fields.Int(required=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    message = fields.Str()
    log = fields.Str(metadata={"description": "An excerpt of the run's log."})
    result = fields.Raw(allow_none=True)


class RunOut(RunFields):
    id = fields.Int(required=True)
    round = fields.Int(metadata={"description": "The round of an iterative task (0 first)."})
    status = fields.Str(required=True, validate=validate.OneOf(RUN_STATUSES))
    attempts = fields.Int()
    created_at = fields.DateTime()


class TaskOut(Schema):
    id = fields.Int(required=True)
    name = fields.Str()
    collaboration_id = fields.Int(required=True)
    creator_id = fields.Int(allow_none=True)
    algorithm = fields.Str(required=True)
    parameters = fields.Dict()
    node_ids = fields.List(fields.Int(), attribute="target_node_ids")
    status = fields.Str(required=True, validate=validate.OneOf(TASK_STATUSES))
    message = fields.Str()
    created_at = fields.DateTime()
    dispatched_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    deadline = fields.DateTime()
    round = fields.Int(metadata={"description": "The round running now (0 first)."})
    runs = fields.Method("_run_counts", metadata={"description": "Runs per status."})

    def _run_counts(self, task) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in task.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts


class ResultOut(Schema):
    task_id = fields.Int(required=True)
    value = fields.Raw(allow_none=True)
    created_at = fields.DateTime()


# ---------------------------------------------------------------- audit


class AuditQuery(PageQuery):
    collaboration_id = fields.Int(validate=_id)
    action = fields.Str(validate=validate.Length(max=64))
    actor_name = fields.Str(validate=validate.Length(max=128))
    outcome = fields.Str(validate=validate.OneOf(AUDIT_OUTCOMES))
    since = fields.AwareDateTime(default_timezone=UTC)
    until = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "Before this."})


class AuditOut(Schema):
    id = fields.Int(required=True)
    time = fields.DateTime()
    actor_type = fields.Str()
    actor_id = fields.Int(allow_none=True)
    actor_name = fields.Str()
    action = fields.Str()
    outcome = fields.Str()
    organization_id = fields.Int(allow_none=True)
    collaboration_id = fields.Int(allow_none=True)
    target_type = fields.Str()
    target_id = fields.Int(allow_none=True)
    detail = fields.Dict()
    remote = fields.Str()


# ---------------------------------------------------------------- the node link


_agent_session = fields.Str(
    load_default=None,
    validate=validate.Length(min=8, max=64),
    metadata={"description": "A random id the agent process chose when it started."},
)


class WorkQuery(Schema):
    wait = fields.Float(
        load_default=0,
        validate=validate.Range(min=0, max=600),
        metadata={"description": "Seconds to wait for work (capped by LONG_POLL_MAX)."},
    )
    limit = fields.Int(load_default=None, validate=validate.Range(min=1, max=100))
    session = _agent_session


class WorkItem(Schema):
    kind = fields.Str(required=True, metadata={"description": "`task_run`."})
    run_id = fields.Int(required=True)
    task_id = fields.Int(required=True)
    collaboration_id = fields.Int(required=True)
    algorithm = fields.Str(required=True)
    parameters = fields.Dict(
        metadata={"description": "The task's parameters with this round's node parameters."}
    )
    round = fields.Int(metadata={"description": "The round of an iterative task (0 first)."})
    user = fields.Str(
        allow_none=True,
        metadata={"description": "The researcher who created the task (for node policy)."},
    )
    attempt = fields.Int()
    deadline = fields.DateTime()
    lease_expires = fields.DateTime()
    # Image runs only (gateway/coordinator/image_runs.py, docs/client-images.md).
    gateway_token = fields.Str(
        metadata={"description": "Image runs: a relay token for this node's gateway."}
    )
    relay_stations = fields.List(
        fields.Dict(),
        metadata={"description": "Image runs with `relay`: [{name, node_id, token}] per node."},
    )
    relay_error = fields.Str(
        metadata={"description": "Image runs with `relay`: why there are no stations."}
    )
    disclosure = fields.Dict(
        metadata={"description": "Image runs: the coordinator's disclosure rules."}
    )


class WorkOut(Schema):
    work = fields.List(fields.Nested(WorkItem), required=True)


# The final statuses a node may report; the last three: image runs (docs/client-images.md).
NODE_RESULT_STATUSES = ("completed", "failed", "not approved", "killed", "timed out")


class RunResultIn(Schema):
    status = fields.Str(required=True, validate=validate.OneOf(NODE_RESULT_STATUSES))
    result = fields.Raw(load_default=None, allow_none=True)
    log = fields.Str(load_default="", validate=validate.Length(max=1_000_000))
    message = fields.Str(load_default="", validate=validate.Length(max=10_000))
    outcome = fields.Str(
        load_default=None,
        validate=validate.OneOf(["blocked"]),
        metadata={"description": "blocked: a disclosure filter at the node refused a command."},
    )


class RunResultOut(Schema):
    run_id = fields.Int(required=True)
    status = fields.Str(required=True)
    duplicate = fields.Bool(metadata={"description": "The same result was already in."})


class HeartbeatIn(Schema):
    running = fields.List(fields.Int(validate=_id), load_default=list)
    reset = fields.Bool(
        load_default=False,
        metadata={
            "description": "The agent (re)started: its claimed runs not in `running` are "
            "given back at once, and `session` becomes the node's current agent."
        },
    )
    session = _agent_session


class HeartbeatOut(Schema):
    time = fields.DateTime(required=True)
    cancel = fields.List(
        fields.Int(),
        metadata={"description": "Runs among `running` the agent should stop."},
    )


# ---------------------------------------------------------------- a station's settings

# What a station reports of its profiles (gateway/agent/settings_report.py): bounded in
# size, and only disclosure settings by name: any other option is refused, so that a
# secret (datashield.seed) sent by mistake is never stored.
_setting_name = validate.Regexp(
    DISCLOSURE_SETTING, error="Only nfilter.* and datashield.privacy* settings are reported."
)
_option_name = validate.Regexp(r"^[A-Za-z][A-Za-z0-9._]{0,127}$")
_package_name = validate.Regexp(r"^[A-Za-z][A-Za-z0-9.]{0,127}$")


class SettingIn(Schema):
    name = fields.Str(required=True, validate=_setting_name)
    value = fields.Str(
        required=True,
        validate=validate.Length(max=256),
        metadata={"description": 'As R source, e.g. `5`, `"banana"`.'},
    )
    source = fields.Str(
        required=True,
        validate=validate.OneOf(("profile", "package")),
        metadata={"description": "The profile's own option, or a package's `default.` one."},
    )


class PackageIn(Schema):
    name = fields.Str(required=True, validate=_package_name)
    version = fields.Str(required=True, validate=validate.Length(max=64))


class MethodCountsIn(Schema):
    aggregate = fields.Int(required=True, validate=validate.Range(min=0, max=100_000))
    assign = fields.Int(required=True, validate=validate.Range(min=0, max=100_000))


class ProfileSettingsIn(Schema):
    name = fields.Str(required=True, validate=_profile_name)
    packages = fields.List(
        fields.Nested(PackageIn),
        load_default=list,
        validate=validate.Length(max=200),
        metadata={"description": "The DataSHIELD packages the profile serves."},
    )
    package_whitelist = fields.List(
        fields.Str(validate=_package_name),
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=200),
        metadata={"description": "node.yaml's `packages:`; null: every package."},
    )
    blacklist = fields.List(
        fields.Str(validate=validate.Length(min=1, max=256)),
        load_default=list,
        validate=validate.Length(max=1000),
    )
    methods = fields.Nested(MethodCountsIn, load_default=None, allow_none=True)
    settings = fields.List(
        fields.Nested(SettingIn), load_default=list, validate=validate.Length(max=200)
    )
    withheld = fields.List(
        fields.Str(validate=_option_name),
        load_default=list,
        validate=validate.Length(max=500),
        metadata={"description": "Other options the profile sets, named without values."},
    )


def _unique(items: list | None) -> None:
    if items is not None and len(items) != len(set(items)):
        raise ValidationError("Each item once.")


class PolicyIn(Schema):
    """The agent's own policy (agent.yaml `policy:`), after its defaults: what the station
    accepts whatever the coordinator asks. null: any ("*")."""

    collaborations = fields.List(
        fields.Int(validate=_id),
        required=True,
        allow_none=True,
        validate=[validate.Length(max=1000), _unique],
        metadata={"description": "Collaboration ids whose work the station accepts; null: any."},
    )
    users = fields.List(
        fields.Str(validate=_name),
        required=True,
        allow_none=True,
        validate=[validate.Length(max=1000), _unique],
        metadata={
            "description": "Researchers whose tasks and relayed calls it accepts; null: any."
        },
    )
    algorithms = fields.List(
        fields.Str(validate=_algorithm_name),
        required=True,
        allow_none=True,
        validate=[validate.Length(max=100), _unique],
        metadata={"description": "Algorithms task runs may use; null: any."},
    )
    projects = fields.List(
        fields.Str(validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,128}$")),
        required=True,
        validate=[validate.Length(max=1000), _unique],
        metadata={"description": "The projects task runs may read."},
    )
    profile = fields.Str(
        required=True,
        validate=_profile_name,
        metadata={"description": "The gateway profile task runs use."},
    )


def _unique_names(items: list[dict], what: str) -> None:
    names = [i["name"] for i in items]
    if len(names) != len(set(names)):
        raise ValidationError(f"Each {what} once.")


class NodeSettingsIn(Schema):
    profiles = fields.List(
        fields.Nested(ProfileSettingsIn),
        required=True,
        validate=validate.Length(min=1, max=100),
    )
    policy = fields.Nested(
        PolicyIn,
        load_default=None,
        metadata={"description": "The agent's policy; absent from an agent older than it."},
    )

    @validates_schema
    def _once(self, data, **_kw):
        _unique_names(data["profiles"], "profile")
        for i, profile in enumerate(data["profiles"]):
            try:
                _unique_names(profile["settings"], "setting")
            except ValidationError as err:
                raise ValidationError({"profiles": {i: {"settings": err.messages}}}) from None


class NodeSettingsOut(Schema):
    node_id = fields.Int(required=True)
    node_name = fields.Str(required=True)
    reported = fields.Bool(
        required=True, metadata={"description": "False: the station has not reported yet."}
    )
    reported_at = fields.DateTime(allow_none=True)
    profiles = fields.List(fields.Nested(ProfileSettingsIn), required=True)
    policy = fields.Nested(
        PolicyIn,
        required=True,
        allow_none=True,
        metadata={"description": "null: the station did not report its agent's policy."},
    )


class NodeSettingsAck(Schema):
    profiles = fields.Int(required=True)
    changed = fields.Bool(required=True)
    reported_at = fields.DateTime(required=True)
