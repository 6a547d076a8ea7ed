"""`dsgateway node run --config agent.yaml`: a station in one command, its gateway
(the Armadillo and Opal faces, for the station's own users) and its agent (the link to
the coordinator, outgoing only)."""

from __future__ import annotations

import logging
import signal
import threading

import click

from gateway.agent.images.cli import images

__all__ = ["node"]


@click.group()
def node() -> None:
    """A station of the federation: its gateway and its agent."""


@node.command()
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="agent.yaml (it names the gateway's node.yaml under `gateway`).",
)
@click.option("--log-level", default="INFO", show_default=True)
def run(config_file: str, log_level: str) -> None:
    """Run the gateway and the agent until interrupted."""
    from gateway.agent.agent import Agent
    from gateway.agent.config import AgentConfig, AgentConfigError
    from gateway.agent.dispatch import executor_for_station
    from gateway.agent.link import CoordinatorLink, WorkNews

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = AgentConfig.from_file(config_file)
        key = cfg.api_key()
    except AgentConfigError as err:
        raise click.ClickException(str(err)) from None

    app = server = node_cfg = None
    if cfg.gateway is not None:
        from gateway.node.app import create_app
        from gateway.node.config import ConfigError, NodeConfig
        from gateway.node.server import BackgroundServer

        try:
            node_cfg = NodeConfig.from_file(cfg.gateway)
        except ConfigError as err:
            raise click.ClickException(str(err)) from None
        click.echo("Starting the gateway (R) ...")
        app = create_app(node_cfg)
        server = BackgroundServer(app, node_cfg.server.host, node_cfg.server.port).start()
        click.echo(f"Gateway on {server.url}")
    else:
        click.echo("No `gateway` in the configuration: only runs that need no R will work.")

    link = CoordinatorLink(cfg.api_url, key, cfg.request_timeout)
    try:  # image runs to Docker, the rest to the gateway (gateway/agent/dispatch.py)
        executor = executor_for_station(cfg, link, app, node_cfg, server)
    except AgentConfigError as err:
        raise click.ClickException(str(err)) from None
    # A station that relays hears of work on its relay exchange (one long poll when
    # idle, not two: docs/relay.md); without a gateway, the agent long-polls for work.
    news = WorkNews() if server is not None else None
    from gateway.agent.settings_report import SettingsReport

    # The station's profiles and the agent's policy, read-only at the coordinator.
    settings = SettingsReport.for_gateway(link, app, cfg.policy)
    agent = Agent(cfg, link, executor, news=news, settings=settings).start()
    click.echo(f"Agent connecting to {cfg.api_url}")
    relay = None
    if server is not None:  # relayed DataSHIELD calls (docs/relay.md) need the gateway
        from gateway.agent.relay import RelayAgent

        relay = RelayAgent.from_config(cfg, key, server.url, gateway_app=app, news=news)
        relay.start()

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        done.wait()
    finally:
        click.echo("Stopping ...")
        agent.stop(timeout=1)  # its threads are daemons: a long poll need not finish
        executor.close()
        if relay is not None:
            relay.stop(timeout=1)
        if server is not None:
            from gateway.node.app import close_services

            server.stop()
            close_services(app.extensions["dsgateway"])


# The data steward's image approvals: `dsgateway node images ...`
# (docs/data-stewards-images.md).
node.add_command(images)
