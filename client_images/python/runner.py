"""dsgateway's Python client-image runner: runs a researcher's script, or one function of
`algorithms`, against the node's gateway, as the node's image runner starts it.

The contract (docs/client-images.md):
- `DSGATEWAY_URL`, `DSGATEWAY_TOKEN`, `DSGATEWAY_PROFILE`: the gateway, a short-lived
  token of the researcher, the DataSHIELD profile;
- `/input/parameters.json`:
    {"tables": {"D": "demo/cohort/patients"}                # assigned first (optional)
             | {"D": {"table": "...", "variables": ["age", "sex"]}},
     "script": "analysis.py"                               # a file in /input, or
     "algorithm": "mean", "args": {"x": "D$age"},          # algorithms.mean(session, x=...)
     "driver": "opal" | "armadillo"}     # default: opal; armadillo through the relay
- `/output`: `result.json` (and `result.csv` for tables) of an algorithm; a script
  writes its own files there (JSON, CSV or PNG). Exit code 0 means success.

With `DSGATEWAY_STATIONS` (a task created with `"relay": true`: every target
station's name, address through the run's proxy and relay token), the session has one
connection per station, named by station, through the coordinator's relay; each
station's gateway and policy decide as for any relayed call.

A script runs with these names defined: `session` (an open `datashield.DSSession`
with one connection, `node`, or one per station), `ds` (the `algorithms` package), `parameters` (the
dict above), `output` (a `pathlib.Path` to /output) and `write_json(name, value)`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import traceback
from pathlib import Path

INPUT = Path(os.environ.get("DSGATEWAY_INPUT", "/input"))
OUTPUT = Path(os.environ.get("DSGATEWAY_OUTPUT", "/output"))
DRIVERS = {
    "opal": "datashield_opal.OpalDriver",
    "armadillo": "gateway.client.ArmadilloDriver",
}


class BadParameters(Exception):
    pass


def to_jsonable(value):
    """Results of `algorithms` (data frames, dataclasses, numpy values) as JSON values."""
    try:
        import numpy as np
        import pandas as pd
    except ImportError:  # pragma: no cover - the image has both
        np = pd = None
    if pd is not None and isinstance(value, pd.DataFrame):
        return json.loads(value.to_json(orient="split", double_precision=15))
    if pd is not None and isinstance(value, pd.Series):
        return json.loads(value.to_json(orient="split", double_precision=15))
    if np is not None and isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if np is not None and isinstance(value, np.generic):
        return to_jsonable(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def write_json(name: str, value) -> Path:
    path = OUTPUT / name
    path.write_text(json.dumps(to_jsonable(value), allow_nan=False), encoding="utf-8")
    return path


def open_session(params: dict):
    from datashield import DSLoginBuilder, DSSession

    url = os.environ.get("DSGATEWAY_URL")
    token = os.environ.get("DSGATEWAY_TOKEN")
    if not url or not token:
        raise BadParameters("DSGATEWAY_URL and DSGATEWAY_TOKEN must be set by the node.")
    stations = json.loads(os.environ.get("DSGATEWAY_STATIONS") or "[]")
    # Through the relay the Armadillo face is the default: its token names the node.
    name = params.get("driver") or ("armadillo" if stations else "opal")
    driver = DRIVERS.get(name, name)
    profile = os.environ.get("DSGATEWAY_PROFILE", "default")
    builder = DSLoginBuilder()
    if stations:
        for station in stations:
            # Opal clients take a base URL with a path; Armadillo's token names the node.
            base = station["opal_url"] if name == "opal" else station["url"]
            builder.add(
                station["name"], base, token=station["token"], profile=profile, driver=driver
            )
    else:
        builder.add("node", url, token=token, profile=profile, driver=driver)
    session = DSSession(builder.build())
    session.open()
    return session


def assign_tables(session, tables: dict) -> None:
    if not isinstance(tables, dict):
        raise BadParameters("`tables` must map symbols to table names.")
    for symbol, spec in tables.items():
        if isinstance(spec, str):
            spec = {"table": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("table"), str):
            raise BadParameters(f"`tables.{symbol}`: give a table name or {{table, variables}}.")
        table = spec["table"]
        if "/" in table:  # Armadillo's project/folder/table; Opal names it project.folder.table
            table = table.replace("/", ".")
        session.assign_table(symbol, table=table, variables=spec.get("variables"))


def run(params: dict) -> None:
    script, algorithm = params.get("script"), params.get("algorithm")
    if bool(script) == bool(algorithm):
        raise BadParameters("Give exactly one of `script` and `algorithm`.")
    import algorithms

    session = open_session(params)
    try:
        assign_tables(session, params.get("tables") or {})
        if algorithm:
            fn = getattr(algorithms, algorithm, None)
            if algorithm not in algorithms.__all__ or not callable(fn):
                raise BadParameters(f"`algorithms` has no function {algorithm!r}.")
            args = params.get("args") or {}
            if not isinstance(args, dict):
                raise BadParameters("`args` must be an object of keyword arguments.")
            result = fn(session, **args)
            write_json("result.json", result)
            if hasattr(result, "to_csv"):
                result.to_csv(OUTPUT / "result.csv")
            print(f"{algorithm}: done", flush=True)
        else:
            path = INPUT / str(script)
            if path.parent != INPUT or not path.is_file():
                raise BadParameters(f"`script` must name a file in {INPUT}: {script!r}.")
            namespace = {
                "__name__": "__main__",
                "__file__": str(path),
                "session": session,
                "ds": algorithms,
                "parameters": params,
                "output": OUTPUT,
                "write_json": write_json,
            }
            code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
            exec(code, namespace)  # noqa: S102 - running the researcher's script is the point
    finally:
        try:
            session.close()
        except Exception:  # noqa: S110 - closing is best effort; the gateway ends it too
            pass


def main() -> int:
    try:
        params = json.loads((INPUT / "parameters.json").read_text(encoding="utf-8"))
        if not isinstance(params, dict):
            raise BadParameters("parameters.json must hold an object.")
        run(params)
        return 0
    except BadParameters as err:
        print(f"dsgateway runner: {err}", file=sys.stderr, flush=True)
        return 2
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
