"""What the operator's admin commands share: one transaction on the coordinator's
database per command, input loaded by the API's marshmallow schemas, objects named by
id or by name, tables for people and `--json` (the API's response schemas) for scripts.

A command works in one app context and commits once at its end; any error (a schema
message, a missing object, a conflict) ends it with a message and exit status 1, and the
app context's teardown rolls back whatever it had begun, so nothing is half-written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # the coordinator's packages load only when a command runs
    from marshmallow import Schema
    from sqlalchemy.orm import Session

__all__ = [
    "USER_PASSWORD_ENV",
    "admin_session",
    "emit",
    "json_option",
    "load",
    "record",
    "resolve",
    "table",
]

USER_PASSWORD_ENV = "DSGATEWAY_USER_PASSWORD"  # noqa: S105 (a variable name)
ACTOR = "cli"  # audit events of these commands: actor_type system, actor_name cli

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (what the REST API answers) for scripts."
)


@contextmanager
def admin_session() -> Iterator[tuple[Any, Session]]:
    """The coordinator app (settings as for `serve`) and its database session."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    from gateway.coordinator import create_app, db
    from gateway.coordinator.errors import CoordinatorError

    app = create_app()
    try:
        with app.app_context():
            try:
                yield app, db.session()
            except CoordinatorError as err:
                raise click.ClickException(_with_errors(err.message, err.errors)) from None
            except IntegrityError as err:
                # A unique name in use, found on flush or commit: the database says which.
                detail = " ".join(line.strip() for line in str(err.orig).splitlines())
                raise click.ClickException(f"That conflicts with existing data: {detail}") from None
            except (OperationalError, ProgrammingError) as err:
                text = str(err.orig).lower()
                if "no such table" in text or "does not exist" in text:
                    raise click.ClickException(
                        "The database has no coordinator tables yet: run "
                        "`dsgateway coordinator db upgrade` first."
                    ) from None
                raise
    finally:
        db.engine(app).dispose()


def _with_errors(message: str, errors: Any) -> str:
    if not errors:
        return message
    return message + "\n" + "\n".join(_flatten(errors))


def _flatten(messages: Any, prefix: str = "") -> list[str]:
    if isinstance(messages, dict):
        return [
            line
            for key, value in messages.items()
            for line in _flatten(value, prefix if key == "_schema" else f"{prefix}{key}: ")
        ]
    if isinstance(messages, list):
        return [line for m in messages for line in _flatten(m, prefix)]
    return [f"  {prefix}{messages}"]


def load(schema: type[Schema], data: dict[str, Any], partial: bool = False) -> dict[str, Any]:
    """The API's validation of a request body, as a command-line error."""
    from marshmallow import ValidationError

    data = {k: v for k, v in data.items() if not (partial and v is None)}
    try:
        return schema().load(data)
    except ValidationError as err:
        raise click.ClickException(
            _with_errors("Invalid input:", err.normalized_messages())
        ) from None


_NAME_COLUMNS = {"User": "username"}
_WHAT = {"Organization": "organisation"}


def resolve(s: Session, model: type, ref: str | int) -> Any:
    """An object by id (digits) or by its name (username for users)."""
    from sqlalchemy import select

    what = _WHAT.get(model.__name__, model.__name__.lower())
    ref = str(ref).strip()
    if ref.isdigit():
        obj = s.get(model, int(ref))
    else:
        column = getattr(model, _NAME_COLUMNS.get(model.__name__, "name"))
        obj = s.execute(select(model).where(column == ref)).scalar()
    if obj is None:
        raise click.ClickException(f"No such {what}: {ref!r}.")
    return obj


def record(action: str, target: Any, **fields: Any) -> None:
    """An audit event for a change made from the command line."""
    from gateway.coordinator import audit

    audit.record(action, target, actor_type="system", actor_name=ACTOR, **fields)


def commit() -> None:
    from gateway.coordinator import db

    db.session().commit()  # an IntegrityError becomes the message above


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    text = str(value)
    # Times as the API gives them, to the second.
    if len(text) >= 19 and text[4:5] == "-" and text[10:11] == "T":
        return text[:19].replace("T", " ")
    return text


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], headings: Sequence[str] = ()
) -> str:
    headings = list(headings or columns)
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headings)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(headings), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    if not rows:
        out.append("(none)")
    return "\n".join(out)


def names() -> dict[str, dict[int, str]]:
    """Organisation and collaboration names by id, for tables people read."""
    from sqlalchemy import select

    from gateway.coordinator import db
    from gateway.coordinator.models import Collaboration, Organization

    s = db.session()
    return {
        kind: dict(s.execute(select(model.id, model.name)).all())
        for kind, model in (("organization", Organization), ("collaboration", Collaboration))
    }


def _labelled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ids of organisations and collaborations shown as `name (id)`."""
    known = names()

    def label(kind: str, ident: Any) -> Any:
        return ident if ident is None else f"{known[kind].get(ident, '?')} ({ident})"

    out = []
    for row in rows:
        row = dict(row)
        for kind in ("organization", "collaboration"):
            if f"{kind}_id" in row:
                row[f"{kind}_id"] = label(kind, row[f"{kind}_id"])
        if "organization_ids" in row:
            row["organization_ids"] = [label("organization", i) for i in row["organization_ids"]]
        out.append(row)
    return out


_HEADINGS = {
    "organization_id": "organization",
    "collaboration_id": "collaboration",
    "organization_ids": "organizations",
}


def emit(data: Any, columns: Sequence[str], as_json: bool) -> None:
    """`data`: what a response schema dumped (a dict or a list of dicts)."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    rows = _labelled(data if isinstance(data, list) else [data])
    click.echo(table(rows, columns, [_HEADINGS.get(c, c) for c in columns]))


def password(confirm: bool = True) -> str:
    """From $DSGATEWAY_USER_PASSWORD, else prompted for (hidden)."""
    value = os.environ.get(USER_PASSWORD_ENV)
    if value:
        return value
    return click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
