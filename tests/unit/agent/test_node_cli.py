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
