"""Users and their roles.

Admins of an organisation manage its users; the superuser manages everyone. A user
reads and edits herself (a new password needs the current one). Roles are granted by
the superuser, by an organisation's admin within that organisation, or by a
collaboration's admin within that collaboration, to users of member organisations.
"""

from __future__ import annotations

from flask import Blueprint, current_app
from sqlalchemy import select

from gateway.coordinator import admin, audit, db
from gateway.coordinator.api.endpoint import endpoint
from gateway.coordinator.api.lookup import get_or_404
from gateway.coordinator.authz import Principal, current_user
from gateway.coordinator.errors import BadRequest, Conflict, Forbidden, NotFound
from gateway.coordinator.models import Collaboration, Organization, Role, User
from gateway.coordinator.schemas import RoleIn, RoleOut, UserIn, UserOut, UserPatch, UserQuery
from gateway.coordinator.security import check_password, hash_password

bp = Blueprint("users", __name__)


def _admin_orgs(principal: Principal) -> set[int] | None:
    """Organisations whose users the caller manages (None: all)."""
    if principal.is_superuser:
        return None
    return {
        r.organization_id
        for r in principal.roles
        if r.name == "admin" and r.collaboration_id is None and r.organization_id is not None
    }


def _manages(principal: Principal, user: User) -> bool:
    orgs = _admin_orgs(principal)
    return orgs is None or user.organization_id in orgs


def _visible_user(user_id: int) -> User:
    principal = current_user()
    user = db.session().get(User, user_id)
    if user is None or (user.id != principal.user.id and not _manages(principal, user)):
        raise NotFound("No such user.")
    return user


@bp.get("/users")
@endpoint(query=UserQuery, response=UserOut, many=True, summary="Users the caller manages")
def list_users(query):
    principal = current_user()
    stmt = select(User).order_by(User.id)
    orgs = _admin_orgs(principal)
    if orgs is not None:
        stmt = stmt.where((User.organization_id.in_(orgs)) | (User.id == principal.user.id))
    if "organization_id" in query:
        stmt = stmt.where(User.organization_id == query["organization_id"])
    stmt = stmt.limit(query["limit"]).offset(query["offset"])
    return db.session().execute(stmt).scalars().all()


@bp.post("/users")
@endpoint(
    body=UserIn,
    response=UserOut,
    status=201,
    errors=(403, 404, 409),
    summary="Create a user (admins of her organisation)",
)
def create_user(body):
    principal = current_user()
    orgs = _admin_orgs(principal)
    if orgs is not None and body["organization_id"] not in orgs:
        raise Forbidden("Only an admin of that organisation may add users to it.")
    get_or_404(Organization, body["organization_id"], "organisation")
    method = current_app.config["PASSWORD_HASH_METHOD"]
    user = User(
        username=body["username"],
        email=body["email"],
        organization_id=body["organization_id"],
        password_hash=hash_password(body["password"], method),
    )
    db.session().add(user)
    audit.record("user.create", user, detail={"username": user.username})
    db.commit()
    return user


@bp.get("/users/<int:user_id>")
@endpoint(response=UserOut, errors=(404,), summary="One user")
def get_user(user_id):
    return _visible_user(user_id)


@bp.patch("/users/<int:user_id>")
@endpoint(body=UserPatch, response=UserOut, errors=(403, 404, 409), summary="Edit a user")
def patch_user(user_id, body):
    principal = current_user()
    user = _visible_user(user_id)
    is_admin = _manages(principal, user)
    is_self = user.id == principal.user.id
    if "active" in body and (not is_admin or is_self):
        raise Forbidden("Only an admin may activate or deactivate another user.")
    if "password" in body:
        method = current_app.config["PASSWORD_HASH_METHOD"]
        if is_self and not check_password(
            user.password_hash, body.get("current_password", ""), method
        ):
            raise Forbidden("The current password is wrong.")
        user.password_hash = hash_password(body["password"], method)
        user.token_generation += 1  # every refresh token of hers stops working
    if "email" in body:
        user.email = body["email"]
    if "active" in body:
        user.active = body["active"]
    audit.record("user.update", user, detail={"fields": sorted(set(body) - {"current_password"})})
    db.commit()
    return user


@bp.delete("/users/<int:user_id>")
@endpoint(status=204, errors=(403, 404), summary="Delete a user (admins of her organisation)")
def delete_user(user_id):
    principal = current_user()
    user = _visible_user(user_id)
    if not _manages(principal, user) or user.id == principal.user.id:
        raise Forbidden("Only an admin may delete a user, and not herself.")
    audit.record("user.delete", user, detail={"username": user.username})
    db.session().delete(user)
    db.commit()


# ------------------------------------------------------------------ roles


def _check_grant(principal: Principal, user: User, spec: dict) -> None:
    s = db.session()
    admin.check_role_scope(s, user, spec)
    org_id, collab_id = spec.get("organization_id"), spec.get("collaboration_id")
    collab = s.get(Collaboration, collab_id) if collab_id else None
    if principal.is_superuser:
        return
    if collab is None and org_id is None:
        raise Forbidden("Only the superuser grants roles over everything.")
    if collab is None:
        if "admin" not in principal.roles_for_org(org_id) or user.organization_id != org_id:
            raise Forbidden("Only an admin of the organisation grants roles over it, to its users.")
        return
    # A collaboration's admin, or an organisation admin for her organisation in it.
    held = principal.roles_in(collab)
    if "admin" not in held:
        raise Forbidden("Only an admin of the collaboration grants roles in it.")
    collab_admin = principal.administers(collab)
    if not collab_admin and (org_id is None or "admin" not in principal.roles_for_org(org_id)):
        raise Forbidden("Grant roles for your own organisation in this collaboration.")
    if user.organization not in collab.organizations:
        raise BadRequest("The user's organisation is not a member of that collaboration.")


@bp.post("/users/<int:user_id>/roles")
@endpoint(
    body=RoleIn,
    response=RoleOut,
    status=201,
    errors=(403, 404, 409),
    summary="Grant a role",
)
def grant_role(user_id, body):
    principal = current_user()
    user = db.session().get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    _check_grant(principal, user, body)
    if admin.find_role(user, body) is not None:
        raise Conflict("The user already holds that role.")
    role = Role(
        user=user,
        name=body["name"],
        organization_id=body["organization_id"],
        collaboration_id=body["collaboration_id"],
    )
    db.session().add(role)
    audit.record(
        "role.grant",
        role,
        collaboration_id=role.collaboration_id,
        detail={"user": user.username, "role": role.name},
    )
    db.commit()
    return role


@bp.delete("/users/<int:user_id>/roles/<int:role_id>")
@endpoint(status=204, errors=(403, 404), summary="Take a role away")
def revoke_role(user_id, role_id):
    principal = current_user()
    role = db.session().get(Role, role_id)
    if role is None or role.user_id != user_id:
        raise NotFound("No such role.")
    spec = {
        "name": role.name,
        "organization_id": role.organization_id,
        "collaboration_id": role.collaboration_id,
    }
    _check_grant(principal, role.user, spec)
    audit.record(
        "role.revoke",
        role,
        collaboration_id=role.collaboration_id,
        detail={"user": role.user.username, "role": role.name},
    )
    db.session().delete(role)
    db.commit()
