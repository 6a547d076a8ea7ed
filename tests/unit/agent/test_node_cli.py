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
