"""`dsgateway demo`: start the federation, run the study, say where everything is, stop.

run_demo(Path("demo-run"), seed=2020, keep_running=False, echo=print)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from gateway.demo.launcher import DemoError, DemoFederation
from gateway.demo.registry import SITES
from gateway.demo.rstudy import R_STUDY
from gateway.demo.study import run_study

__all__ = ["DemoError", "r_clients_available", "run_demo"]


def _r_library(echo) -> str:
    """An R library holding dsGatewayBase, the stations' server package: the one named
    by DSGATEWAY_R_LIB (as `make` sets it, and keeps current), else the per-user one,
    installed again whenever this dsgateway ships another package (serverpkg.py)."""
    from gateway.demo.serverpkg import ensure_current
    from gateway.node import rpackage

    named = os.environ.get(rpackage.LIBRARY_ENV)
    if named and rpackage.is_installed(named):
        return named
    target = rpackage.user_library()
    ensure_current(target, echo)
    return str(target)


def r_clients_available() -> bool:
    """Whether R with DSI, DSMolgenisArmadillo and dsBaseClient is installed here."""
    if shutil.which("Rscript") is None:
        return False
    check = (
        "ok <- all(sapply(c('DSI', 'DSMolgenisArmadillo', 'dsBaseClient'), "
        "requireNamespace, quietly = TRUE)); quit(status = if (ok) 0 else 1)"
    )
    done = subprocess.run(["Rscript", "-e", check], capture_output=True)
    return done.returncode == 0


def _r_study(fed: DemoFederation, echo) -> None:
    script = fed.work / "study.R"
    script.write_text(R_STUDY)
    if not r_clients_available():
        echo(
            "R with DSI + DSMolgenisArmadillo + dsBaseClient is not installed here, so the "
            f"same study from R was not run; its code is in {script} "
            "(see docs/getting-started.md)."
        )
        return
    echo(f"Running the same study from R ({script}) ...")
    env = {
        **os.environ,
        "DSG_COORDINATOR": fed.coordinator_url,
        "DSG_RELAY": fed.relay_url,
        "DSG_USER": fed.researcher.username,
        "DSG_PASSWORD": fed.researcher.password,
    }
    done = subprocess.run(["Rscript", str(script)], env=env, capture_output=True, text=True)
    echo(done.stdout)
    if done.returncode != 0:
        echo(f"The R study failed:\n{done.stderr[-2000:]}")


def _where(fed: DemoFederation, echo) -> None:
    echo("")
    echo("Audit trail")
    echo("===========")
    db = fed.work / "coordinator" / "coordinator.db"
    echo(
        f"coordinator: its database {db} (table audit_events); as the admin: "
        f"GET {fed.coordinator_url}/api/audit (credentials in {fed.work / 'credentials.json'})"
    )
    for site in SITES:
        log = fed.stations[site.name] / "var" / "audit.log"
        lines = len(log.read_text().splitlines()) if log.exists() else 0
        echo(f"{site.name}: {log} ({lines} entries)")
        echo(f"    read it with: dsgateway gateway audit --log {log}")
    echo(f"Logs: {fed.work / 'coordinator' / 'coordinator.log'}, <station>/node.log")


def run_demo(
    work: Path,
    *,
    seed: int = 2020,
    keep_running: bool = False,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> dict:
    """The whole demo; returns the study's numbers."""
    work = Path(work).resolve()
    echo(f"dsgateway demo: a coordinator and three stations on this machine, in {work}")
    r_lib = _r_library(echo)
    fed = DemoFederation(work, seed=seed, r_lib=r_lib)
    stopped = False
    try:
        fed.start(echo)
        for site in SITES:
            echo(f"  {site.name}: {site.label}, {site.n} patients -> {fed.stations[site.name]}")
        results = run_study(
            fed.coordinator_url,
            fed.relay_url,
            fed.researcher.username,
            fed.researcher.password,
            work,
            echo=echo,
            progress=progress,
        )
        echo("")
        _r_study(fed, echo)
        _where(fed, echo)
        echo("")
        if keep_running:
            echo(
                f"Everything keeps running. Researcher login: {fed.researcher.username} / "
                f"{fed.researcher.password} at {fed.coordinator_url} (relay {fed.relay_url})."
            )
            echo(f"Stop everything with: {fed.stop_command()}")
        else:
            echo("Stopping the coordinator and the stations ...")
            fed.stop()
            stopped = True
            echo(f"Stopped. (Run with --keep-running to leave them up.) Files: {work}")
        return results
    except BaseException:
        if not stopped:
            fed.stop()
            stopped = True
        raise
