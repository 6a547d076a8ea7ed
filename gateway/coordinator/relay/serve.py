"""Serving the relay: the coordinator's API and the relay listener in one process. With
the in-memory hub (RELAY_HUB=local, the default without Redis) they must be one
process: the listener that receives a researcher's call and the API that holds the
agent's relay poll share the calls in flight. With the Redis hub (RELAY_HUB=redis, or
a Redis broker) `--relay-only` serves just the listener, next to any `serve` processes.

    python -m gateway.coordinator.relay --port 5000 --relay-port 5001

does what `dsgateway coordinator serve` does (migrates SQLite, the embedded Celery
worker and sweep with the memory:// broker) and also serves the relay listener on
`--relay-port` (setting `RELAY_PORT`, default 5001). `relay_command` is a click command
meant to be attached to the coordinator's CLI group as `dsgateway coordinator relay`.
"""

from __future__ import annotations

import threading

import click

__all__ = ["relay_command"]


@click.command("relay")
@click.option("--host", default=None, help="Address to listen on (default: HOST setting).")
@click.option("--port", default=None, type=int, help="The API's port (default: PORT).")
@click.option("--relay-port", default=None, type=int, help="The relay's port (RELAY_PORT).")
@click.option("--threads", default=None, type=int, help="Request threads per listener.")
@click.option("--migrate/--no-migrate", default=None, help="Migrate first (default: SQLite).")
@click.option("--relay-only", is_flag=True, help="Only the relay listener (needs the Redis hub).")
def relay_command(host, port, relay_port, threads, migrate, relay_only) -> None:
    """Serve the coordinator's API and its DataSHIELD relay (Armadillo at the root of the
    relay port, Opal under /nodes/<node_id>/ws)."""
    from gateway.coordinator.celery_app import EmbeddedWorker, is_embedded
    from gateway.coordinator.cli import _app, _migrate_if
    from gateway.coordinator.relay import hub_of
    from gateway.coordinator.relay.app import create_relay_app
    from gateway.coordinator.relay.hub import RedisRelayHub
    from gateway.coordinator.server import make_server

    app = _app()
    _migrate_if(app, migrate)
    host = host or app.config["HOST"]
    port = port if port is not None else int(app.config["PORT"])
    relay_port = relay_port if relay_port is not None else int(app.config.get("RELAY_PORT", 5001))
    listener = make_server(create_relay_app(app), host, relay_port, threads)
    if relay_only:
        if not isinstance(hub_of(app), RedisRelayHub):
            raise click.ClickException(
                "--relay-only needs the Redis hub (RELAY_HUB=redis and REDIS_URL): with the "
                "in-memory hub the agents' relay polls must reach this very process."
            )
        click.echo(f"dsgateway relay on http://{host}:{relay_port}/ (Redis hub)")
        try:
            listener.run()
        except KeyboardInterrupt:
            pass
        return
    worker = EmbeddedWorker(app).start() if is_embedded(app) else None
    api = make_server(app, host, port, threads)
    click.echo(f"dsgateway coordinator on http://{host}:{port}/api")
    click.echo(f"dsgateway relay on http://{host}:{relay_port}/ (Armadillo; Opal: /nodes/<id>/ws)")
    relay_thread = threading.Thread(target=listener.run, name="relay-http", daemon=True)
    relay_thread.start()
    try:
        api.run()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        if worker is not None:
            worker.stop()
