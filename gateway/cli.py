"""The one `dsgateway` command.

dsgateway gateway serve --config node.yaml      run a node's DataSHIELD gateway
dsgateway gateway serve --data ./data           quick start: user admin, profile default
dsgateway gateway hash-password                 make a password_hash for node.yaml
dsgateway gateway audit --user alice            read the audit log
dsgateway gateway install-r-package             install dsGatewayBase into an R library
dsgateway demo                                  a coordinator, three stations, a study
dsgateway demo --gateway-only                   example data, one gateway, a session
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

__all__ = ["main"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dsgateway")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.1.0"


@click.group()
@click.version_option(version=_version(), prog_name="dsgateway")
def cli() -> None:
    """Federated, non-disclosive DataSHIELD analysis."""


@cli.group()
def gateway() -> None:
    """The node's DataSHIELD gateway (Armadillo and Opal APIs over R)."""


def _config(config_file: str | None, data_dir: str | None):
    from gateway.node.config import ConfigError, NodeConfig

    if bool(config_file) == bool(data_dir):
        raise click.UsageError("Give either --config FILE or --data DIR.")
    try:
        if config_file:
            return NodeConfig.from_file(config_file)
        return NodeConfig.quick(data_dir)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


@gateway.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="node.yaml")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="quick start")
@click.option("--host", default=None, help="Address to listen on (default from config).")
@click.option("--port", default=None, type=int, help="Port to listen on (default from config).")
def serve(config_file, data_dir, host, port) -> None:
    """Serve the gateway with waitress until interrupted."""
    import dataclasses

    from gateway.node.app import create_app
    from gateway.node.server import serve_forever

    cfg = _config(config_file, data_dir)
    server = dataclasses.replace(
        cfg.server, host=host or cfg.server.host, port=port if port is not None else cfg.server.port
    )
    cfg = dataclasses.replace(cfg, server=server)
    if cfg.quick_password:
        click.echo(f"Quick start: user 'admin', password '{cfg.quick_password}'")
        click.echo("(set DSGATEWAY_ADMIN_PASSWORD to choose it)")
    click.echo(f"Data: {cfg.data_dir}  State and audit log: {cfg.state_dir}")
    click.echo("Starting R ...")
    app = create_app(cfg)
    click.echo(
        f"dsgateway on http://{server.host}:{server.port}  "
        f"(Armadillo API at /, Opal API at /ws; {server.threads} threads)"
    )

    def stop(signum, frame):
        raise SystemExit(0)  # waitress stops on SystemExit; then R is shut down below

    signal.signal(signal.SIGTERM, stop)
    try:
        serve_forever(app, server.host, server.port)
    finally:
        from gateway.node.app import close_services

        close_services(app.extensions["dsgateway"])


@gateway.command("hash-password")
@click.password_option("--password", prompt="Password", help="Prompted for if not given.")
def hash_password(password: str) -> None:
    """Print a scrypt hash to put under users.<name>.password_hash."""
    from werkzeug.security import generate_password_hash

    click.echo(generate_password_hash(password, method="scrypt"))


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("use an ISO date/time or an age like 30m, 2h, 7d") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@gateway.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="node.yaml")
@click.option("--log", "log_file", type=click.Path(dir_okay=False), help="audit.log path")
@click.option("--user", default=None)
@click.option("--outcome", type=click.Choice(["returned", "refused", "failed", "blocked", "ok"]))
@click.option("--action", default=None)
@click.option("--since", default=None, help="ISO time, or an age: 30m, 2h, 7d")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit(config_file, log_file, user, outcome, action, since, as_json) -> None:
    """Print the audit log, oldest first."""
    from gateway.node.audit import AuditLog

    if log_file:
        path = Path(log_file)
    elif config_file:
        path = _config(config_file, None).audit_path
    else:
        path = Path("var") / "audit.log"
    if not path.exists():
        raise click.ClickException(f"No audit log at {path}")
    entries = AuditLog(path).read(user=user, outcome=outcome, action=action, since=_since(since))
    for e in entries:
        if as_json:
            click.echo(json.dumps(e, ensure_ascii=False))
            continue
        what = e.get("expression") or e.get("table") or e.get("path", "")
        message = f"  {e['message']}" if e.get("message") else ""
        click.echo(
            f"{e.get('time', '')}  {e.get('user') or '-':<12} {e.get('face', '-'):<9} "
            f"{e.get('action', ''):<16} {e.get('outcome', ''):<8} {e.get('status', '')} "
            f"{what}{message}"
        )


@gateway.command("install-r-package")
@click.option(
    "--library",
    type=click.Path(file_okay=False),
    default=None,
    help="R library to install into (default: $DSGATEWAY_R_LIB, else a per-user "
    "library that the gateway finds by itself).",
)
def install_r_package(library: str | None) -> None:
    """Install dsGatewayBase, the built-in DataSHIELD server package, into an R library."""
    from gateway.node import rpackage

    target = library or os.environ.get(rpackage.LIBRARY_ENV) or str(rpackage.user_library())
    click.echo(f"Installing {rpackage.PACKAGE} into {target} ...")
    try:
        rpackage.install(target)
    except RuntimeError as err:
        raise click.ClickException(str(err)) from None
    click.echo("Done.")


def _ensure_r_package(cfg):
    """The demo needs a DataSHIELD package; install the shipped one if none is found."""
    import dataclasses

    from gateway.node import rpackage

    if cfg.r_lib and rpackage.is_installed(cfg.r_lib):
        return cfg
    target = rpackage.user_library()
    click.echo(f"Installing the built-in R server package into {target} (once) ...")
    rpackage.install(target)
    return dataclasses.replace(cfg, r_lib=str(target))


# ---------------------------------------------------------------- demo


def _print(title: str, value) -> None:
    click.secho(title, bold=True)
    click.echo("  " + json.dumps(value, indent=2, default=str).replace("\n", "\n  "))


@cli.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default="demo-run",
    show_default=True,
    help="Where the coordinator, the stations and the study's files go.",
)
@click.option("--seed", default=None, type=int, help="Seed of the synthetic data [2020].")
@click.option("--keep-running", is_flag=True, help="Leave the federation up at the end.")
@click.option("--stop", is_flag=True, help="Stop a federation left up by --keep-running.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--gateway-only", is_flag=True, help="The small demo: one gateway, no coordinator.")
@click.option("--keep", is_flag=True, help="--gateway-only: keep its temporary directory.")
def demo(workdir, seed, keep_running, stop, no_progress, gateway_only, keep) -> None:
    """A coordinator and three stations with synthetic MS registries on this machine,
    and a federated study through them (docs/getting-started.md)."""
    if gateway_only:
        _gateway_demo(1 if seed is None else seed, keep)
        return
    from gateway.demo.launcher import DemoError, stop_recorded
    from gateway.demo.run import run_demo

    if stop:
        pids = stop_recorded(Path(workdir))
        click.echo(f"Stopped {len(pids)} processes." if pids else f"Nothing runs in {workdir}.")
        return
    try:
        run_demo(
            Path(workdir),
            seed=2020 if seed is None else seed,
            keep_running=keep_running,
            echo=click.echo,
            progress=not no_progress,
        )
    except DemoError as err:
        raise click.ClickException(str(err)) from None


def _gateway_demo(seed: int, keep: bool) -> None:
    """Generate example data, start a gateway on it, run a DataSHIELD session with the
    Python `datashield` client (Opal driver), print what comes back, stop."""
    import secrets

    from datashield import DSLoginBuilder, DSSession

    from gateway.node.app import close_services, create_app
    from gateway.node.config import NodeConfig
    from gateway.node.exampledata import generate_example_data
    from gateway.node.server import BackgroundServer

    work = Path(tempfile.mkdtemp(prefix="dsgateway-demo-"))
    tables = generate_example_data(work / "data", seed)
    click.echo(f"Example data in {work / 'data'}: {', '.join(tables)}")
    password = secrets.token_urlsafe(12)
    cfg = NodeConfig.quick(work / "data", work / "state", password=password)
    cfg = _ensure_r_package(cfg)
    click.echo("Starting the gateway (R workers) ...")
    app = create_app(cfg)
    server = BackgroundServer(app).start()
    click.echo(f"Gateway on {server.url}; a DataSHIELD session as user 'admin':")
    try:
        logins = DSLoginBuilder().add("demo", server.url, "admin", password).build()
        session = DSSession(logins)
        session.open()
        try:
            _print("tables", session.tables())
            session.assign_table("D", "demo.cohort.patients")
            _print("ls()", session.ls())
            # dsBaseClient passes most object names as strings: dimDS("D")
            _print('dimDS("D")', session.aggregate('dimDS("D")'))
            _print("meanDS(D$age)", session.aggregate("meanDS(D$age)"))
            _print('classDS("D$sex")', session.aggregate('classDS("D$sex")'))
            try:
                session.aggregate("nonsense(D$age)")
            except Exception:  # the client raises; the reason is in get_errors()
                errors = {name: str(err) for name, err in session.get_errors().items()}
                for name, err in session.get_errors().items():
                    if hasattr(err, "get_error"):
                        errors[name] = err.get_error()
                _print("nonsense(D$age) is refused", errors)
        finally:
            session.close()
    finally:
        server.stop()
        close_services(app.extensions["dsgateway"])
    click.echo(f"Audit log: {cfg.audit_path}")
    if not keep:
        click.echo("(run with --keep to keep the data and the audit log)")
        import shutil

        shutil.rmtree(work, ignore_errors=True)


from gateway.agent.cli import node  # noqa: E402 (the station's group: gateway + agent)

try:  # a station installs only the [node] extra: the coordinator's group needs Celery
    from gateway.coordinator.cli import coordinator
except ImportError as missing:
    _why = f"{missing}"

    @click.group(invoke_without_command=True, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def coordinator(args) -> None:
        """The coordinator (not installed here: pip install 'dsgateway[coordinator]')."""
        raise click.ClickException(
            f"The coordinator's parts are not installed ({_why}); "
            "install them with: pip install 'dsgateway[coordinator]'"
        )


from gateway.docs_reference import docs  # noqa: E402 (generated references, `make docs`)

cli.add_command(coordinator)
cli.add_command(docs)
cli.add_command(node)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="dsgateway")


if __name__ == "__main__":
    main()
