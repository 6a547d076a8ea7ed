"""`dsgateway node ...`: the commands a station's operator and data steward use."""


def test_the_steward_commands_are_part_of_dsgateway(tmp_path):
    from click.testing import CliRunner

    from gateway.cli import cli

    digest = "sha256:" + "ab" * 32
    runner = CliRunner()
    base = ["node", "images", "--state-dir", str(tmp_path)]
    r = runner.invoke(cli, [*base, "approve", digest, "--reason", "reviewed", "--by", "sam"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, [*base, "list"])
    assert digest in r.output and "approved" in r.output


def test_images_subcommand_help_needs_no_store():
    from click.testing import CliRunner

    # The group's store options are checked when a subcommand opens the store, so a
    # subcommand's --help works on its own, and a real command without a store says why.
    from gateway.cli import cli

    runner = CliRunner()
    shown = runner.invoke(cli, ["node", "images", "approve", "--help"])
    assert shown.exit_code == 0, shown.output
    assert "DIGEST" in shown.output
    refused = runner.invoke(cli, ["node", "images", "list"])
    assert refused.exit_code == 2
    assert "Give either --config node.yaml or --state-dir DIR." in refused.output


def test_a_station_without_the_coordinator_extra_still_runs_its_commands():
    # A station installs only dsgateway[node]: no Celery. Blocking the import in a fresh
    # interpreter stands in for that install (the test venv has every extra).
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['celery'] = None\n"
        "from click.testing import CliRunner\n"
        "from gateway.cli import cli\n"
        "r = CliRunner().invoke(cli, ['node', 'run', '--help']); print(r.exit_code)\n"
        "r = CliRunner().invoke(cli, ['coordinator', 'serve']); print(r.exit_code, r.output)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1].startswith("1 Error: The coordinator's parts are not installed")
    assert "pip install 'dsgateway[coordinator]'" in out.stdout
