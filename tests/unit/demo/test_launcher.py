"""The demo's working directory and stop command, with real processes: it never empties
a folder it did not make, nor one whose parts still run, and `--stop` ends what
`--keep-running` left."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.demo.launcher import MARKER, DemoError, DemoFederation, stop_recorded


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )


def test_a_folder_the_demo_did_not_make_is_left_alone(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(DemoError, match="was not made by the demo"):
        DemoFederation(tmp_path).prepare_workdir()
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_a_previous_demo_folder_is_emptied(tmp_path):
    work = tmp_path / "run"
    DemoFederation(work).prepare_workdir()
    (work / "station-a").mkdir()
    DemoFederation(work).prepare_workdir()
    assert sorted(p.name for p in work.iterdir()) == [MARKER]


def test_a_running_demo_is_neither_emptied_nor_left_running_by_stop(tmp_path):
    work = tmp_path / "run"
    DemoFederation(work).prepare_workdir()
    procs = [_sleeper(), _sleeper()]
    try:
        (work / "pids").write_text("".join(f"{p.pid}\n" for p in procs))
        with pytest.raises(DemoError, match="dsgateway demo --stop"):
            DemoFederation(work).prepare_workdir()
        assert (work / "pids").exists()
        assert sorted(stop_recorded(work)) == sorted(p.pid for p in procs)
        for p in procs:
            assert p.wait(timeout=30) is not None  # ended by SIGTERM
        assert not (work / "pids").exists()
        assert stop_recorded(work) == []
    finally:
        for p in procs:
            p.kill()
