"""`dsgateway coordinator nodes|tokens ...`: nodes and their API keys, relay tokens and
revoking a user's tokens, from the coordinator host (see cli_admin.py for the rules
these commands share with the REST API)."""

from __future__ import annotations

import click

from gateway.coordinator.cli_common import (
    admin_session,
    commit,
    emit,
    json_option,
    load,
    record,
    resolve,
)

__all__ = ["nodes", "tokens"]

NODE_COLUMNS = (
    "id",
    "name",
    "organization_id",
    "collaboration_id",
    "audience",
    "projects",
    "api_key_prefix",
    "online",
    "last_seen",
)
AGENT_KEY_ENV = "DSGATEWAY_NODE_API_KEY"


@click.group()
def nodes() -> None:
    """Nodes (one per organisation and collaboration): list, register, edit,
    rotate-key, remove."""


def _show_key(node_out: dict, key: str, as_json: bool) -> None:
    if as_json:
        emit({**node_out, "api_key": key}, (), True)
        return
    emit(node_out, NODE_COLUMNS, False)
    click.echo("")
    click.echo(f"API key of node {node_out['name']!r} (shown once; only its hash is kept):")
    click.echo("")
    click.echo(f"    {key}")
    click.echo("")
    click.echo(f"Give it to the node's agent in the environment variable {AGENT_KEY_ENV}.")


@nodes.command("list")
@click.option("--collaboration", default=None, help="Only this collaboration's nodes.")
@click.option("--organization", default=None, help="Only this organisation's nodes.")
@json_option
def nodes_list(collaboration, organization, as_json: bool) -> None:
    """Every node, with its last contact."""
    from sqlalchemy import select

    from gateway.coordinator.models import Collaboration, Node, Organization
    from gateway.coordinator.schemas import NodeOut

    with admin_session() as (_app, s):
        stmt = select(Node).order_by(Node.id)
        if collaboration is not None:
            stmt = stmt.where(Node.collaboration_id == resolve(s, Collaboration, collaboration).id)
        if organization is not None:
            stmt = stmt.where(Node.organization_id == resolve(s, Organization, organization).id)
        emit(NodeOut(many=True).dump(s.execute(stmt).scalars().all()), NODE_COLUMNS, as_json)


@nodes.command("register")
@click.option("--organization", required=True, help="The node's organisation (id or name).")
@click.option("--collaboration", required=True, help="Its collaboration (id or name).")
@click.option("--name", default=None, help="Default: node-<organisation id>-<collab id>.")
@click.option("--audience", default=None, help="`aud` of its relay tokens; default: the name.")
@click.option("--project", "projects", multiple=True, help="A project relay tokens open.")
@json_option
def nodes_register(organization, collaboration, name, audience, projects, as_json: bool) -> None:
    """Register a node and print its API key, once."""
    from gateway.coordinator import admin
    from gateway.coordinator.models import Collaboration, Organization
    from gateway.coordinator.schemas import NodeIn, NodeOut

    with admin_session() as (_app, s):
        org = resolve(s, Organization, organization)
        collab = resolve(s, Collaboration, collaboration)
        body = load(
            NodeIn,
            {
                k: v
                for k, v in {
                    "name": name,
                    "organization_id": org.id,
                    "collaboration_id": collab.id,
                    "audience": audience,
                    "projects": list(projects),
                }.items()
                if v is not None
            },
        )
        node, key = admin.new_node(org, collab, body)
        s.add(node)
        record("node.create", node, detail={"name": node.name, "organization_id": org.id})
        commit()
        _show_key(NodeOut().dump(node), key, as_json)


@nodes.command("edit")
@click.argument("node")
@click.option("--name", default=None)
@click.option("--audience", default=None, help="`aud` of its relay tokens.")
@click.option(
    "--project", "projects", multiple=True, help="Projects relay tokens open (replaces them)."
)
@click.option("--no-projects", is_flag=True, help="Relay tokens open no project.")
@json_option
def nodes_edit(node, name, audience, projects, no_projects, as_json: bool) -> None:
    """Change NODE's name, relay audience or projects."""
    from gateway.coordinator.models import Node
    from gateway.coordinator.schemas import NodeOut, NodePatch

    data = {"name": name, "audience": audience}
    if projects or no_projects:
        data["projects"] = [] if no_projects else list(projects)
    body = load(NodePatch, data, partial=True)
    with admin_session() as (_app, s):
        target = resolve(s, Node, node)
        if "projects" in body:
            body["projects"] = sorted(set(body["projects"]))
        for key, value in body.items():
            setattr(target, key, value)
        record("node.update", target, detail={k: body[k] for k in sorted(body)})
        commit()
        emit(NodeOut().dump(target), NODE_COLUMNS, as_json)


@nodes.command("rotate-key")
@click.argument("node")
@json_option
def nodes_rotate_key(node: str, as_json: bool) -> None:
    """Give NODE a new API key and print it once; the old key stops working at once."""
    from gateway.coordinator import admin
    from gateway.coordinator.models import Node
    from gateway.coordinator.schemas import NodeOut

    with admin_session() as (_app, s):
        target = resolve(s, Node, node)
        key = admin.set_node_key(target)
        record("node.rotate_key", target)
        commit()
        _show_key(NodeOut().dump(target), key, as_json)


@nodes.command("remove")
@click.argument("node")
def nodes_remove(node: str) -> None:
    """Remove NODE (refused once it has task runs: rotate its key instead)."""
    from gateway.coordinator import admin
    from gateway.coordinator.models import Node

    with admin_session() as (_app, s):
        target = resolve(s, Node, node)
        admin.check_node_removal(s, target)
        record("node.delete", target, detail={"name": target.name})
        s.delete(target)
        commit()
        click.echo(f"Node {target.name!r} removed.")


# ------------------------------------------------------------------ tokens


@click.group()
def tokens() -> None:
    """Relay tokens for DataSHIELD clients, and revoking a user's tokens."""


@tokens.command("relay")
@click.option("--user", required=True, help="The researcher (id or user name).")
@click.option("--collaboration", required=True, help="The node's collaboration (id or name).")
@click.option("--node", required=True, help="The node (id or name).")
@click.option(
    "--ttl",
    default=None,
    type=click.IntRange(60, 30 * 24 * 3600),
    help="Seconds the token is valid (default: RELAY_TOKEN_TTL).",
)
@json_option
def tokens_relay(user, collaboration, node, ttl, as_json: bool) -> None:
    """A relay token for USER on NODE, as POST /api/auth/relay-token gives her: the
    user must be active and a researcher of the collaboration."""
    from gateway.coordinator.app import services
    from gateway.coordinator.authz import Principal
    from gateway.coordinator.models import Collaboration, Node, User
    from gateway.coordinator.schemas import RelayTokenIn, RelayTokenOut
    from gateway.coordinator.tokens import TokenService

    with admin_session() as (app, s):
        who = resolve(s, User, user)
        collab = resolve(s, Collaboration, collaboration)
        target = resolve(s, Node, node)
        load(RelayTokenIn, {"node_id": target.id})
        if target.collaboration_id != collab.id:
            raise click.ClickException(
                f"Node {target.name!r} is not in collaboration {collab.name!r}."
            )
        if not who.active:
            raise click.ClickException(f"User {who.username!r} is disabled.")
        if "researcher" not in Principal(who, list(who.roles)).roles_in(collab):
            raise click.ClickException(
                f"{who.username!r} is not a researcher of {collab.name!r} (the relay would "
                "refuse the token): `dsgateway coordinator users roles add "
                f"{who.username} researcher --collaboration {collab.name}`."
            )
        svc = services(app).tokens
        if ttl is not None:
            svc = TokenService({**app.config, "RELAY_TOKEN_TTL": ttl})
        token = svc.relay_token(who, target)
        record(
            "relay.token",
            target,
            collaboration_id=target.collaboration_id,
            detail={"user": who.username, "projects": sorted(target.projects or []), "ttl": ttl},
        )
        commit()
        out = RelayTokenOut().dump(
            {
                "token": token,
                "token_type": "Bearer",
                "expires_in": svc.relay_ttl,
                "issuer": svc.relay_issuer,
                "audience": target.audience,
                "node_id": target.id,
                "collaboration_id": target.collaboration_id,
                "projects": sorted(target.projects or []),
            }
        )
        if as_json:
            emit(out, (), True)
            return
        click.echo(
            f"Relay token for {who.username!r} on node {target.name!r} (collaboration "
            f"{collab.name!r}, projects {', '.join(out['projects']) or '-'}), valid "
            f"{out['expires_in']} s:"
        )
        click.echo(token)


@tokens.command("revoke")
@click.option("--user", required=True, help="Whose refresh tokens (id or user name).")
def tokens_revoke(user: str) -> None:
    """Revoke every refresh token of USER (as her logout does). Access tokens end within
    ACCESS_TOKEN_TTL; relay tokens cannot be recalled one by one: `users disable` or
    taking her researcher role stops them at the relay."""
    from gateway.coordinator.models import User

    with admin_session() as (_app, s):
        who = resolve(s, User, user)
        who.token_generation += 1
        record("auth.logout", who, detail={"by": "cli"})
        commit()
        click.echo(f"Every refresh token of {who.username!r} is revoked.")
