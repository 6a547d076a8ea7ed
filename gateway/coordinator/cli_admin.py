"""`dsgateway coordinator organizations|users|collaborations ...`: the operator's
administration on the coordinator host, acting as the superuser on its database.

Input is validated by the REST API's schemas (OrganizationIn, UserIn, RoleIn, ...) and
the shared rules in admin.py; output is the API's response schemas, as a table or with
`--json`. Objects are named by id or by name. Every change is audited (actor `cli`).
See docs/coordinator.md, "Administration from the command line".
"""

from __future__ import annotations

import click

from gateway.coordinator.cli_common import (
    admin_session,
    commit,
    emit,
    json_option,
    load,
    password,
    record,
    resolve,
)

__all__ = ["collaborations", "organizations", "users"]

ORG_COLUMNS = ("id", "name", "description", "created_at")
USER_COLUMNS = ("id", "username", "email", "organization_id", "active", "roles", "last_login")
ROLE_COLUMNS = ("id", "name", "organization_id", "collaboration_id")
COLLAB_COLUMNS = ("id", "name", "organization_ids", "description", "created_at")


# ------------------------------------------------------------------ organisations


@click.group()
def organizations() -> None:
    """Organisations (hospitals, registries): list, create, edit."""


@organizations.command("list")
@json_option
def organizations_list(as_json: bool) -> None:
    """Every organisation."""
    from sqlalchemy import select

    from gateway.coordinator.models import Organization
    from gateway.coordinator.schemas import OrganizationOut

    with admin_session() as (_app, s):
        orgs = s.execute(select(Organization).order_by(Organization.id)).scalars().all()
        emit(OrganizationOut(many=True).dump(orgs), ORG_COLUMNS, as_json)


@organizations.command("create")
@click.argument("name")
@click.option("--description", default="", help="Free text.")
@json_option
def organizations_create(name: str, description: str, as_json: bool) -> None:
    """Create the organisation NAME."""
    from gateway.coordinator.models import Organization
    from gateway.coordinator.schemas import OrganizationIn, OrganizationOut

    body = load(OrganizationIn, {"name": name, "description": description})
    with admin_session() as (_app, s):
        org = Organization(name=body["name"], description=body["description"])
        s.add(org)
        record("organization.create", org, detail={"name": org.name})
        commit()
        emit(OrganizationOut().dump(org), ORG_COLUMNS, as_json)


@organizations.command("edit")
@click.argument("organization")
@click.option("--name", default=None, help="A new name.")
@click.option("--description", default=None, help="A new description.")
@json_option
def organizations_edit(organization: str, name, description, as_json: bool) -> None:
    """Rename ORGANIZATION (id or name) or change its description."""
    from gateway.coordinator.models import Organization
    from gateway.coordinator.schemas import OrganizationOut, OrganizationPatch

    body = load(OrganizationPatch, {"name": name, "description": description}, partial=True)
    with admin_session() as (_app, s):
        org = resolve(s, Organization, organization)
        for key, value in body.items():
            setattr(org, key, value)
        record("organization.update", org, detail={"fields": sorted(body)})
        commit()
        emit(OrganizationOut().dump(org), ORG_COLUMNS, as_json)


# ------------------------------------------------------------------ users


def _user_rows(users) -> list[dict]:
    from gateway.coordinator.cli_common import names
    from gateway.coordinator.schemas import UserOut

    rows = UserOut(many=True).dump(users)
    known = names()
    for row in rows:
        row["roles"] = [_role_text(r, known) for r in row["roles"]]
    return rows


def _role_text(role: dict, known: dict | None = None) -> str:
    """`researcher in study`, `data_steward for Hospital B in study`, `admin of everything`."""
    known = known or {"organization": {}, "collaboration": {}}
    org, collab = role["organization_id"], role["collaboration_id"]
    text = role["name"]
    if org is not None:
        text += f" for {known['organization'].get(org, org)}"
    if collab is not None:
        text += f" in {known['collaboration'].get(collab, collab)}"
    return text if org is not None or collab is not None else text + " of everything"


@click.group()
def users() -> None:
    """Users: list, create, set-password, enable/disable, delete, and their roles."""


@users.command("list")
@click.option("--organization", default=None, help="Only the users of this organisation.")
@json_option
def users_list(organization, as_json: bool) -> None:
    """Every user, with her roles."""
    from sqlalchemy import select

    from gateway.coordinator.models import Organization, User
    from gateway.coordinator.schemas import UserOut

    with admin_session() as (_app, s):
        stmt = select(User).order_by(User.id)
        if organization is not None:
            stmt = stmt.where(User.organization_id == resolve(s, Organization, organization).id)
        found = s.execute(stmt).scalars().all()
        if as_json:
            emit(UserOut(many=True).dump(found), USER_COLUMNS, True)
        else:
            emit(_user_rows(found), USER_COLUMNS, False)


@users.command("create")
@click.argument("username")
@click.option("--organization", required=True, help="Her organisation (id or name).")
@click.option("--email", default=None)
@json_option
def users_create(username: str, organization: str, email, as_json: bool) -> None:
    """Create USERNAME. The password comes from $DSGATEWAY_USER_PASSWORD or is prompted
    for. Give her roles with `users roles add`."""
    from sqlalchemy import select

    from gateway.coordinator.models import Organization, User
    from gateway.coordinator.schemas import UserIn, UserOut
    from gateway.coordinator.security import hash_password

    secret = password()
    with admin_session() as (app, s):
        org = resolve(s, Organization, organization)
        body = load(
            UserIn,
            {"username": username, "password": secret, "email": email, "organization_id": org.id},
        )
        if s.execute(select(User.id).where(User.username == body["username"])).first():
            raise click.ClickException(f"User {username!r} exists already.")
        user = User(
            username=body["username"],
            email=body["email"],
            organization_id=org.id,
            password_hash=hash_password(body["password"], app.config["PASSWORD_HASH_METHOD"]),
        )
        s.add(user)
        record("user.create", user, detail={"username": user.username})
        commit()
        emit(UserOut().dump(user) if as_json else _user_rows([user])[0], USER_COLUMNS, as_json)


@users.command("set-password")
@click.argument("user")
def users_set_password(user: str) -> None:
    """Set USER's password ($DSGATEWAY_USER_PASSWORD, or prompted for). Her refresh
    tokens stop working, as after a password change through the API."""
    from gateway.coordinator.models import User
    from gateway.coordinator.schemas import UserPatch
    from gateway.coordinator.security import hash_password

    body = load(UserPatch, {"password": password()})
    with admin_session() as (app, s):
        target = resolve(s, User, user)
        target.password_hash = hash_password(body["password"], app.config["PASSWORD_HASH_METHOD"])
        target.token_generation += 1
        record("user.update", target, detail={"fields": ["password"]})
        commit()
        click.echo(f"Password of {target.username!r} set; her refresh tokens are revoked.")


def _set_active(user: str, active: bool) -> None:
    from gateway.coordinator.models import User

    with admin_session() as (_app, s):
        target = resolve(s, User, user)
        target.active = active
        record("user.update", target, detail={"fields": ["active"]})
        commit()
        state = "enabled" if active else "disabled (no login, no API call, no relayed call)"
        click.echo(f"User {target.username!r} {state}.")


@users.command("disable")
@click.argument("user")
def users_disable(user: str) -> None:
    """Disable USER: her tokens (access, refresh, relay) are refused from now on."""
    _set_active(user, False)


@users.command("enable")
@click.argument("user")
def users_enable(user: str) -> None:
    """Enable USER again."""
    _set_active(user, True)


@users.command("delete")
@click.argument("user")
def users_delete(user: str) -> None:
    """Delete USER and her roles (her tasks stay, without a creator)."""
    from gateway.coordinator.models import User

    with admin_session() as (_app, s):
        target = resolve(s, User, user)
        record("user.delete", target, detail={"username": target.username})
        s.delete(target)
        commit()
        click.echo(f"User {target.username!r} deleted.")


@users.group("roles")
def roles() -> None:
    """A user's roles: list, add, remove. A role has a scope: a collaboration, an
    organisation (and its collaborations), or neither (everything: the superuser)."""


def _role_spec(s, name: str, organization, collaboration) -> dict:
    from gateway.coordinator.models import Collaboration, Organization
    from gateway.coordinator.schemas import RoleIn

    org = resolve(s, Organization, organization) if organization is not None else None
    collab = resolve(s, Collaboration, collaboration) if collaboration is not None else None
    return load(
        RoleIn,
        {
            "name": name,
            "organization_id": org.id if org else None,
            "collaboration_id": collab.id if collab else None,
        },
    )


_scope_options = [
    click.option("--organization", default=None, help="Scope: this organisation (id or name)."),
    click.option("--collaboration", default=None, help="Scope: this collaboration (id or name)."),
]


def _scoped(command):
    for option in reversed(_scope_options):
        command = option(command)
    return command


@roles.command("list")
@click.argument("user")
@json_option
def roles_list(user: str, as_json: bool) -> None:
    """USER's roles."""
    from gateway.coordinator.models import User
    from gateway.coordinator.schemas import RoleOut

    with admin_session() as (_app, s):
        target = resolve(s, User, user)
        emit(RoleOut(many=True).dump(target.roles), ROLE_COLUMNS, as_json)


@roles.command("add")
@click.argument("user")
@click.argument("role", metavar="ROLE")
@_scoped
@json_option
def roles_add(user: str, role: str, organization, collaboration, as_json: bool) -> None:
    """Grant ROLE (admin, researcher, data_steward) to USER over a scope."""
    from gateway.coordinator import admin
    from gateway.coordinator.models import Role, User
    from gateway.coordinator.schemas import RoleOut

    with admin_session() as (_app, s):
        target = resolve(s, User, user)
        spec = _role_spec(s, role, organization, collaboration)
        admin.check_role_scope(s, target, spec)
        if admin.find_role(target, spec) is not None:
            raise click.ClickException(f"{target.username!r} already holds that role.")
        granted = Role(user=target, **spec)
        s.add(granted)
        record(
            "role.grant",
            granted,
            collaboration_id=granted.collaboration_id,
            detail={"user": target.username, "role": granted.name},
        )
        commit()
        emit(RoleOut().dump(granted), ROLE_COLUMNS, as_json)


@roles.command("remove")
@click.argument("user")
@click.argument("role", metavar="ROLE")
@_scoped
def roles_remove(user: str, role: str, organization, collaboration) -> None:
    """Take ROLE with exactly this scope away from USER."""
    from gateway.coordinator import admin
    from gateway.coordinator.models import User

    with admin_session() as (_app, s):
        target = resolve(s, User, user)
        spec = _role_spec(s, role, organization, collaboration)
        held = admin.find_role(target, spec)
        if held is None:
            raise click.ClickException(
                f"{target.username!r} holds no such role; see `users roles list {user}`."
            )
        record(
            "role.revoke",
            held,
            collaboration_id=held.collaboration_id,
            detail={"user": target.username, "role": held.name},
        )
        target.roles.remove(held)
        commit()
        from gateway.coordinator.cli_common import names

        click.echo(f"Role {_role_text(spec, names())} taken from {target.username!r}.")


# ------------------------------------------------------------------ collaborations


@click.group()
def collaborations() -> None:
    """Collaborations: list, create, add or remove member organisations."""


@collaborations.command("list")
@json_option
def collaborations_list(as_json: bool) -> None:
    """Every collaboration, with its member organisations."""
    from sqlalchemy import select

    from gateway.coordinator.models import Collaboration
    from gateway.coordinator.schemas import CollaborationOut

    with admin_session() as (_app, s):
        found = s.execute(select(Collaboration).order_by(Collaboration.id)).scalars().all()
        emit(CollaborationOut(many=True).dump(found), COLLAB_COLUMNS, as_json)


@collaborations.command("create")
@click.argument("name")
@click.option("--description", default="")
@click.option(
    "--organization", "organizations_", multiple=True, help="A member (id or name); repeatable."
)
@json_option
def collaborations_create(name: str, description: str, organizations_, as_json: bool) -> None:
    """Create the collaboration NAME."""
    from gateway.coordinator.models import Collaboration, Organization
    from gateway.coordinator.schemas import CollaborationIn, CollaborationOut

    with admin_session() as (_app, s):
        orgs = {o.id: o for o in (resolve(s, Organization, ref) for ref in organizations_)}
        body = load(
            CollaborationIn,
            {"name": name, "description": description, "organization_ids": sorted(orgs)},
        )
        collab = Collaboration(
            name=body["name"], description=body["description"], organizations=list(orgs.values())
        )
        s.add(collab)
        record(
            "collaboration.create",
            collab,
            detail={"name": collab.name, "organizations": sorted(orgs)},
        )
        commit()
        emit(CollaborationOut().dump(collab), COLLAB_COLUMNS, as_json)


@collaborations.command("add-organization")
@click.argument("collaboration")
@click.argument("organization")
@json_option
def collaborations_add(collaboration: str, organization: str, as_json: bool) -> None:
    """Make ORGANIZATION a member of COLLABORATION."""
    from gateway.coordinator.models import Collaboration, Organization
    from gateway.coordinator.schemas import CollaborationOut, MemberIn

    with admin_session() as (_app, s):
        collab = resolve(s, Collaboration, collaboration)
        org = resolve(s, Organization, organization)
        load(MemberIn, {"organization_id": org.id})
        if org in collab.organizations:
            raise click.ClickException(f"{org.name!r} is already a member of {collab.name!r}.")
        collab.organizations.append(org)
        record(
            "collaboration.add_organization",
            collab,
            collaboration_id=collab.id,
            detail={"organization_id": org.id},
        )
        commit()
        emit(CollaborationOut().dump(collab), COLLAB_COLUMNS, as_json)


@collaborations.command("remove-organization")
@click.argument("collaboration")
@click.argument("organization")
def collaborations_remove(collaboration: str, organization: str) -> None:
    """Take ORGANIZATION out of COLLABORATION (refused while it has a node there)."""
    from gateway.coordinator import admin
    from gateway.coordinator.models import Collaboration, Organization

    with admin_session() as (_app, s):
        collab = resolve(s, Collaboration, collaboration)
        org = admin.check_member_removal(s, collab, resolve(s, Organization, organization).id)
        collab.organizations.remove(org)
        record(
            "collaboration.remove_organization",
            collab,
            collaboration_id=collab.id,
            detail={"organization_id": org.id},
        )
        commit()
        click.echo(f"{org.name!r} is no longer a member of {collab.name!r}.")
