"""`dsgateway coordinator ...`: serve the API, run a Celery worker, migrate the
database, make the first administrator, make a relay signing key; and the operator's
administration of organisations, users, collaborations, nodes and tokens
(cli_admin.py, cli_nodes.py).

Settings come from the usual layers (DSGATEWAY_COORDINATOR_CONFIG, DSGATEWAY_COORD_*);
see docs/coordinator.md.
"""

from __future__ import annotations

import os
import sys

import click

from gateway.coordinator.cli_admin import collaborations, organizations, users
from gateway.coordinator.cli_nodes import nodes, tokens
from gateway.coordinator.relay.serve import relay_command

__all__ = ["coordinator"]

ADMIN_PASSWORD_ENV = "DSGATEWAY_ADMIN_PASSWORD"  # noqa: S105 (a variable name)


def _app():
    from gateway.coordinator import create_app

    return create_app()


def _migrate_if(app, migrate: bool | None) -> None:
    """Bring the schema up to date when asked, or by default for SQLite (the embedded
    case, where nobody else would); PostgreSQL is migrated by `db upgrade`."""
    from gateway.coordinator.migrate import upgrade

    url = app.config["DATABASE_URL"]
    if migrate or (migrate is None and url.startswith("sqlite")):
        upgrade(url)


@click.group()
def coordinator() -> None:
    """The federation's coordinator: collaborations, nodes, tasks and results."""


@coordinator.command()
@click.option("--host", default=None, help="Address to listen on (default: HOST setting).")
@click.option("--port", default=None, type=int, help="Port (default: PORT setting).")
@click.option("--threads", default=None, type=int, help="Request threads (long polls hold one).")
@click.option(
    "--migrate/--no-migrate",
    default=None,
    help="Bring the database schema up to date first (default: only for SQLite).",
)
def serve(host, port, threads, migrate) -> None:
    """Serve the API with waitress. With the embedded broker (memory://, the default) a
    Celery worker and the periodic sweep run inside this process: one command, no Redis."""
    from gateway.coordinator.celery_app import EmbeddedWorker, is_embedded
    from gateway.coordinator.server import make_server

    app = _app()
    url = app.config["DATABASE_URL"]
    _migrate_if(app, migrate)
    host = host or app.config["HOST"]
    port = port if port is not None else int(app.config["PORT"])
    worker = None
    if is_embedded(app):
        worker = EmbeddedWorker(app).start()
        click.echo("Embedded mode: Celery worker and sweep in this process (no Redis).")
    click.echo(f"Database: {_safe_url(url)}")
    click.echo(f"dsgateway coordinator on http://{host}:{port}/api (OpenAPI: /api/openapi.json)")
    try:
        make_server(app, host, port, threads).run()
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.stop()


def _safe_url(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


@coordinator.command()
@click.option("--concurrency", "-c", default=None, type=int, help="Worker processes.")
@click.option("--pool", default="prefork", type=click.Choice(["prefork", "threads", "solo"]))
@click.option("--beat", is_flag=True, help="Also run the periodic sweep (in ONE worker only).")
@click.option("--loglevel", default="INFO")
def worker(concurrency, pool, beat, loglevel) -> None:
    """Run a Celery worker for the coordinator's tasks (Redis broker)."""
    from gateway.coordinator.celery_app import is_embedded

    app = _app()
    if is_embedded(app):
        raise click.ClickException(
            "The broker is memory:// (embedded): its worker runs inside `dsgateway "
            "coordinator serve`. Set DSGATEWAY_COORD_CELERY_BROKER_URL=redis://... to use "
            "separate workers."
        )
    celery = app.extensions["celery"]
    options = {
        "pool": pool,
        "loglevel": loglevel,
        "beat": beat,
        "schedule_filename": os.path.join(app.instance_path, "celerybeat-schedule"),
    }
    if concurrency:
        options["concurrency"] = concurrency
    celery.Worker(**options).start()


@coordinator.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the migrations up to REVISION."""
    from gateway.coordinator.migrate import current_revision, upgrade

    app = _app()
    url = app.config["DATABASE_URL"]
    upgrade(url, revision)
    click.echo(f"{_safe_url(url)} is at revision {current_revision(url)}")


@db.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one."""
    from gateway.coordinator.migrate import current_revision, head_revision

    url = _app().config["DATABASE_URL"]
    click.echo(f"current: {current_revision(url)}  head: {head_revision()}")


@coordinator.command("create-admin")
@click.option("--username", default="admin", show_default=True)
@click.option("--organization", default="Coordinator", show_default=True)
@click.option("--email", default=None)
@click.option("--migrate/--no-migrate", default=None, help="As for serve.")
def create_admin(username: str, organization: str, email: str | None, migrate) -> None:
    """Create a superuser (and her organisation if it is new). The password comes from
    $DSGATEWAY_ADMIN_PASSWORD, or is prompted for."""
    from sqlalchemy import select

    from gateway.coordinator import db as database
    from gateway.coordinator.models import Organization, Role, User
    from gateway.coordinator.schemas import UserIn
    from gateway.coordinator.security import hash_password

    password = os.environ.get(ADMIN_PASSWORD_ENV)
    if not password:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    errors = UserIn().validate(
        {"username": username, "password": password, "organization_id": 1, "email": email}
    )
    if errors:
        raise click.ClickException(f"Invalid: {errors}")
    app = _app()
    _migrate_if(app, migrate)
    with app.app_context():
        s = database.session()
        if s.execute(select(User).where(User.username == username)).scalar():
            raise click.ClickException(f"User {username!r} exists already.")
        org = s.execute(select(Organization).where(Organization.name == organization)).scalar()
        if org is None:
            org = Organization(name=organization)
            s.add(org)
        user = User(
            username=username,
            email=email,
            organization=org,
            password_hash=hash_password(password, app.config["PASSWORD_HASH_METHOD"]),
            roles=[Role(name="admin")],
        )
        s.add(user)
        s.commit()
        click.echo(f"Superuser {username!r} (organisation {organization!r}) created.")


@coordinator.command("relay-key")
@click.argument("path", type=click.Path(dir_okay=False))
def relay_key(path: str) -> None:
    """Write a new RSA private key for relay tokens to PATH (mode 0600) and print the
    public key nodes verify with (their tokens.public_key_file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if os.path.exists(path):
        raise click.ClickException(f"{path} exists; not overwriting a key.")
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    click.echo(f"Private key: {path} (set RELAY_PRIVATE_KEY_FILE to it)")
    click.echo(public.decode("ascii"), nl=False)


# `dsgateway coordinator relay`: the API and the relay listener (docs/relay.md).
coordinator.add_command(relay_command)

# The operator's administration (cli_admin.py, cli_nodes.py; docs/coordinator.md).
for _group in (organizations, users, collaborations, nodes, tokens):
    coordinator.add_command(_group)


if __name__ == "__main__":  # python -m gateway.coordinator.cli ...
    coordinator.main(args=sys.argv[1:], prog_name="dsgateway coordinator")
