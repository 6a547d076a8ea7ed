"""Load-table benchmark: Arrow -> R data.frame against pyarrow's own Parquet read.

    .venv/bin/python bench/load_table.py [--rows 1000000] [--repeats 5]

``run()`` writes the benchmark table (10 columns: doubles, ints, text, a dictionary and
a bool, some missing; see gateway.node.exampledata.benchmark_table) to a temporary
Parquet file and measures, as the median of ``repeats`` runs after one warm-up:

* ``pyarrow_read_s``: ``pyarrow.parquet.read_table(path)``, the reference;
* ``read_arrow_s``: the gateway's ``read_arrow`` (text read dictionary-encoded);
* ``convert_s``: ``arrow_to_r_dataframe`` on what ``read_arrow`` returned, which is
  what a worker does on load-table;
* ``convert_plain_s``: ``arrow_to_r_dataframe`` on the plain read (text not
  dictionary-encoded, so Arrow must hash every string).

``ratio`` is convert_s / pyarrow_read_s (the target is at most ~2); ``load_ratio`` is
(read_arrow_s + convert_s) / pyarrow_read_s, the whole load against a bare read.
The measuring runs in a child process, so R is never embedded in the caller.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(rows: int = 1_000_000, repeats: int = 5) -> dict:
    """Measure in a child process; return the figures as a dict (see module doc)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            f"--rows={rows}",
            f"--repeats={repeats}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load-table benchmark failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: page cache, R's memory, first-call costs
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        del result
    return statistics.median(times)


def _measure(rows: int, repeats: int) -> dict:
    import pyarrow.parquet as pq
    import rpy2.rinterface as ri
    from rpy2.rinterface_lib import embedded

    from gateway.node.datasources import TableRef, TableSource, read_arrow
    from gateway.node.exampledata import write_benchmark_table
    from gateway.node.r_convert import arrow_to_r_dataframe

    if not embedded.isready():
        ri.initr()
    r_gc = ri.baseenv["gc"]

    with tempfile.TemporaryDirectory() as tmp:
        path = write_benchmark_table(Path(tmp) / "bench.parquet", rows=rows, seed=1)
        source = TableSource(TableRef("bench", "load", "table"), "parquet", str(path))
        plain = pq.read_table(path)
        ours = read_arrow(source, None)
        figures = {
            "rows": rows,
            "columns": plain.num_columns,
            "repeats": repeats,
            "file_mb": round(path.stat().st_size / 1e6, 1),
            "threads": os.cpu_count(),
            "pyarrow_read_s": _median_time(lambda: pq.read_table(path), repeats),
            "read_arrow_s": _median_time(lambda: read_arrow(source, None), repeats),
        }

        def timed_convert(table):
            times = []
            arrow_to_r_dataframe(table)  # warm-up
            r_gc()
            for _ in range(repeats):
                gc.collect()
                t0 = time.perf_counter()
                df = arrow_to_r_dataframe(table)
                times.append(time.perf_counter() - t0)
                del df
                r_gc()  # free the R copy outside the timings
            return statistics.median(times)

        figures["convert_s"] = timed_convert(ours)
        figures["convert_plain_s"] = timed_convert(plain)
    read = figures["pyarrow_read_s"]
    figures["ratio"] = round(figures["convert_s"] / read, 3)
    figures["load_ratio"] = round((figures["read_arrow_s"] + figures["convert_s"]) / read, 3)
    for key in ("pyarrow_read_s", "read_arrow_s", "convert_s", "convert_plain_s"):
        figures[key] = round(figures[key], 4)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.rows, args.repeats)))
        return
    figures = run(args.rows, args.repeats)
    print(f"load-table benchmark: {figures['rows']:,} rows x {figures['columns']} columns")
    print(f"  Parquet file {figures['file_mb']} MB, median of {figures['repeats']} runs")
    print(f"  pyarrow read_table          {figures['pyarrow_read_s']:.3f} s   (reference)")
    print(f"  read_arrow (gateway)        {figures['read_arrow_s']:.3f} s")
    print(f"  arrow_to_r_dataframe        {figures['convert_s']:.3f} s")
    print(f"  ... of the plain read       {figures['convert_plain_s']:.3f} s")
    print(f"  ratio convert / read        {figures['ratio']:.2f}")
    print(f"  ratio (read + convert)/read {figures['load_ratio']:.2f}")


if __name__ == "__main__":
    main()
