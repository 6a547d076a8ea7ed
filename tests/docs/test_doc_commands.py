"""Every command in the documentation is checked, so the docs cannot rot.

- Every `dsgateway ...` command line in a shell block, and every inline `dsgateway ...`
  reference, is parsed by the real click CLI (the command path exists, every option is
  accepted, values convert, required parts are given in full command lines), without
  running it. A renamed command or option fails here with the file and line.
- `make` targets named in the docs exist in the Makefile.
- A curated, growing set of safe, quick commands is RUN as written, per page in document
  order, in a fresh directory (a node.yaml, an audit log with two entries, a SQLite
  coordinator database with an HS256 relay secret): `--help`/`--version`,
  `gateway hash-password`, `gateway audit`, `coordinator db upgrade`/`db current`/
  `create-admin`/`relay-key`, the coordinator's administration (`organizations`,
  `users`, `collaborations`, `nodes`, `tokens`), `node images ...`.
  A page that continues another says `<!-- docs-test: after docs/guides/operators.md -->`
  and that page's commands run first.
  Everything else is parsed only, with the reason (a server that runs until stopped, a
  placeholder in the line, ...); `pytest tests/docs -rA` ends with the list.
- Python blocks compile and their imports of `gateway`, `algorithms` and `datashield`
  name things that exist; YAML blocks load, and node.yaml / agent.yaml examples pass the
  real configuration schemas; R blocks parse (R's own parser).
- Relative links between pages, and the headings they point to, exist.
"""

from __future__ import annotations

import ast
import importlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import traceback
from collections import defaultdict
from pathlib import Path

import click
import pytest
import yaml

from gateway.cli import cli
from tests.docs.doc_commands import (
    ROOT,
    Block,
    Invocation,
    all_invocations,
    blocks,
    check_command,
    doc_files,
    make_targets,
    rel,
)

INVOCATIONS = all_invocations()
DSGATEWAY = [i for i in INVOCATIONS if i.program == "dsgateway"]
MAKE = [i for i in INVOCATIONS if i.program == "make"]
ADMIN_PASSWORD = "docs-test-password"

# Commands run as written when a page shows them in full (no placeholder): quick, and
# touching only the temporary directory. The value says what a success prints.
RUNNABLE = {
    ("gateway", "hash-password"): "scrypt:",
    ("gateway", "audit"): "",
    ("coordinator", "db", "upgrade"): "is at revision",
    ("coordinator", "db", "current"): "head:",
    ("coordinator", "create-admin"): "created",
    ("coordinator", "relay-key"): "BEGIN PUBLIC KEY",
    ("node", "images", "approve"): '"state": "approved"',
    ("node", "images", "reject"): '"state": "rejected"',
    ("node", "images", "revoke"): '"state": "revoked"',
    ("node", "images", "restrict"): '"state": "approved"',
    ("node", "images", "list"): "",
    ("node", "images", "history"): "",
    ("node", "images", "check"): '"allowed"',
}
# Whole groups that run as written: the coordinator's administration on its database.
RUNNABLE_GROUPS = {
    ("coordinator", group): ""
    for group in ("organizations", "users", "collaborations", "nodes", "tokens")
}
# Why the others are only parsed.
PARSE_ONLY = {
    ("gateway", "serve"): "serves until stopped (tests/e2e/test_cli_gateway.py runs it)",
    ("coordinator", "serve"): "serves until stopped (tests/functional run it)",
    ("coordinator", "relay"): "serves until stopped (tests/functional/test_relay*.py)",
    ("coordinator", "worker"): "a Celery worker, needs Redis (test_coordinator_celery.py)",
    ("node", "run"): "runs until stopped, needs a coordinator (test_coordinator_processes.py)",
    ("demo",): "a whole demo (the demo's own tests)",
    ("gateway", "install-r-package"): "R CMD INSTALL (make rpkg does the same)",
}


def _id(inv: Invocation) -> str:
    return f"{inv.where} {inv.text}"[:120]


def command_path(inv: Invocation) -> tuple[str, ...]:
    return tuple(check_command(cli, inv))


def classify(inv: Invocation) -> tuple[bool, str]:
    """(executed?, why not)."""
    if not inv.fenced:
        return False, "an inline reference"
    if inv.container:
        return False, "runs inside a container (docker compose exec/run)"
    if inv.runnable_argv is None:
        return False, "has a placeholder or `...`"
    if "--help" in inv.argv or "--version" in inv.argv:
        return True, ""
    path = command_path(inv)
    if path in RUNNABLE or path[:2] in RUNNABLE_GROUPS:
        return True, ""
    return False, PARSE_ONLY.get(path, "not in the curated set of runnable commands")


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("inv", DSGATEWAY, ids=_id)
def test_documented_command_parses(inv: Invocation):
    try:
        check_command(cli, inv)
    except click.UsageError as err:
        pytest.fail(f"{inv.where}: `{inv.text}` is refused by the CLI: {err.format_message()}")


def test_the_check_catches_rot():
    """The check itself: a wrong option, command or value fails; the docs' own shorthand
    (elisions, placeholders, usage brackets, files the reader has) passes."""

    def inv(*argv, fenced=True):
        return Invocation(Path("x.md"), 1, "dsgateway", list(argv), " ".join(argv), fenced)

    for bad in [
        inv("gateway", "serve", "--datadir", "x"),
        inv("coordinator", "db", "migrate"),
        inv("coordinator", "serve", "--port", "http"),
        inv("node", "images", "--config", "node.yaml", "approve", "sha256:1"),  # no --reason
        inv("node", "images", "--config", "n.yaml", "list", "--state", "pending"),
    ]:
        with pytest.raises(click.UsageError):
            check_command(cli, bad)
    assert check_command(cli, inv("node", "run", "--config", "agent.yaml")) == ["node", "run"]
    assert check_command(cli, inv("gateway", "hash-password")) == ["gateway", "hash-password"]
    assert check_command(cli, inv("node", "images", fenced=False)) == ["node", "images"]
    assert check_command(cli, inv("gateway", "serve", "--port", "808$k")) == ["gateway", "serve"]


def test_extraction_reads_shell_as_a_shell_would(tmp_path: Path):
    """Continuations, prompts, operators, env assignments, comments, containers, inline
    references; output lines of console blocks and other languages are not commands."""
    from tests.docs.doc_commands import invocations

    page = tmp_path / "page.md"
    page.write_text(
        "Run `dsgateway gateway audit --user alice` or `make demo`.\n"
        "```\n"
        "make setup   # once\n"
        "dsgateway coordinator serve --host 0.0.0.0 \\\n"
        "    --port 5000\n"
        "(cd n1 && X=1 .venv/bin/dsgateway gateway serve --data data --port 808$k &)\n"
        "docker compose exec api dsgateway coordinator db current\n"
        "```\n"
        "```console\n"
        "$ dsgateway node images --state-dir var list [--state approved]\n"
        "dsgateway coordinator on http://127.0.0.1:5000/api\n"
        "```\n"
        "```python\n"
        "dsgateway = 1\n"
        "```\n"
    )
    found = [(i.line, i.program, i.argv, i.fenced, i.container) for i in invocations(page)]
    assert found == [
        (3, "make", ["setup"], True, False),
        (
            4,
            "dsgateway",
            ["coordinator", "serve", "--host", "0.0.0.0", "--port", "5000"],
            True,
            False,
        ),
        (6, "dsgateway", ["gateway", "serve", "--data", "data", "--port", "808$k"], True, False),
        (7, "dsgateway", ["coordinator", "db", "current"], True, True),
        (
            10,
            "dsgateway",
            ["node", "images", "--state-dir", "var", "list", "--state", "approved"],
            True,
            False,
        ),
        (1, "dsgateway", ["gateway", "audit", "--user", "alice"], False, False),
        (1, "make", ["demo"], False, False),
    ]


@pytest.mark.parametrize("inv", MAKE, ids=_id)
def test_documented_make_target_exists(inv: Invocation):
    targets = make_targets(ROOT / "Makefile")
    wanted = [a for a in inv.argv if not a.startswith("-") and "=" not in a]
    missing = [t for t in wanted if t not in targets]
    assert not missing, f"{inv.where}: `{inv.text}`: no Makefile target {missing}"


# ---------------------------------------------------------------- running


def dsgateway_argv() -> list[str]:
    script = Path(sys.executable).parent / "dsgateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


def sandbox(tmp: Path) -> dict[str, str | None]:
    """A directory a reader might run the docs in: node.yaml (data in data/, state in
    var/), an audit log with two entries at var/audit.log (the default place), and the
    coordinator's settings pointing at SQLite here. Returns the environment changes."""
    from gateway.node.audit import AuditLog

    (tmp / "data" / "demo" / "cohort").mkdir(parents=True)
    (tmp / "node.yaml").write_text("data_dir: data\nstate_dir: var\n")
    (tmp / "var").mkdir()
    log = AuditLog(tmp / "var" / "audit.log")
    log.record(action="login", outcome="ok", user="alice", face="armadillo", status=200)
    log.record(
        action="execute",
        outcome="refused",
        user="alice",
        face="armadillo",
        status=400,
        expression="system(1)",
    )
    log.close()
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("DSGATEWAY_COORD")}
    env.update(
        DSGATEWAY_COORD_DATABASE_URL=f"sqlite:///{tmp / 'coordinator.db'}",
        DSGATEWAY_COORD_INSTANCE_PATH=str(tmp / "instance"),
        DSGATEWAY_COORD_RELAY_SECRET="docs-test-relay-secret-0123456789abcdef",
        DSGATEWAY_COORD_RELAY_ISSUER="https://coordinator.example.org",
        DSGATEWAY_ADMIN_PASSWORD=ADMIN_PASSWORD,
        DSGATEWAY_USER_PASSWORD=ADMIN_PASSWORD,
    )
    return env


def provide_named_files(tmp: Path, argv: list[str]) -> None:
    """A page may name a log or a node.yaml somewhere else (`--log demo-run/.../audit.log`,
    made by the demo): put the sandbox's there when the path is relative and missing."""
    sources = {"--log": tmp / "var" / "audit.log", "--config": tmp / "node.yaml"}
    for option, value in itertools.pairwise(argv):
        target = tmp / value
        if option in sources and not Path(value).is_absolute() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sources[option], target)


RUN_PAGES = sorted({rel(i.file) for i in DSGATEWAY if classify(i)[0]})


AFTER = re.compile(r"<!--\s*docs-test:\s*after\s+(\S+)\s*-->")


def pages_to_run(page: str) -> list[str]:
    """A page whose commands continue another page's (a token for a user the operators'
    guide created) says so with `<!-- docs-test: after docs/guides/operators.md -->`:
    that page's commands run first, in the same directory."""
    text = (ROOT / page).read_text(encoding="utf-8")
    before = [p for m in AFTER.finditer(text) for p in pages_to_run(m.group(1))]
    return [*before, page]


@pytest.mark.parametrize("page", RUN_PAGES)
def test_documented_commands_run(page: str, tmp_path: Path, monkeypatch):
    """The page's runnable commands, as written, in document order, in one directory (a
    guide's later step may use what an earlier one made). They run in this process
    through click's runner (the whole command, from parsing to its last line; only the
    interpreter start is saved); test_entry_point runs the installed `dsgateway`."""
    from click.testing import CliRunner

    env = sandbox(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    ran = 0
    pages = pages_to_run(page)
    for inv in (i for p in pages for i in DSGATEWAY if rel(i.file) == p and classify(i)[0]):
        expected = "" if "--help" in inv.argv or "--version" in inv.argv else None
        if expected is None:
            path = command_path(inv)
            expected = RUNNABLE.get(path, RUNNABLE_GROUPS.get(path[:2]))
        provide_named_files(tmp_path, inv.runnable_argv)
        done = runner.invoke(
            cli,
            inv.runnable_argv,
            prog_name="dsgateway",
            env=env,
            input=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n",  # for a password prompt
        )
        output = done.output
        if done.exception and not isinstance(done.exception, SystemExit):
            output += "".join(traceback.format_exception(done.exception))
        assert done.exit_code == 0, f"{inv.where}: `{inv.text}` exited {done.exit_code}:\n{output}"
        assert expected in output, (
            f"{inv.where}: `{inv.text}` did not print {expected!r}:\n{output}"
        )
        ran += rel(inv.file) == page
    assert ran


def test_entry_point(tmp_path: Path):
    """The installed `dsgateway` script itself, as readers type it."""
    done = subprocess.run(
        [*dsgateway_argv(), "gateway", "hash-password"],
        input="a password\na password\n",
        capture_output=True,
        text=True,
        timeout=120,  # a guard against a hang, not a performance bound
    )
    assert done.returncode == 0, done.stderr
    hashed = done.stdout.strip().splitlines()[-1]
    from werkzeug.security import check_password_hash

    assert check_password_hash(hashed, "a password")


def test_help_of_every_group_and_command():
    """`--help` works for every group and command (in-process: the runs above already use
    the real entry point), and a group's help names each of its commands."""
    from click.testing import CliRunner

    def walk(cmd: click.Command, path: list[str]):
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])

    # `node images` needs its store named before a subcommand's --help is reached (its
    # group checks --config/--state-dir first): give it one, as the docs do.
    group_options = {("node", "images"): ["--state-dir", "var"]}
    runner = CliRunner()
    for path, cmd in walk(cli, []):
        argv = []
        for i, name in enumerate(path):
            argv.append(name)
            if i < len(path) - 1:
                argv += group_options.get(tuple(path[: i + 1]), [])
        done = runner.invoke(cli, [*argv, "--help"], prog_name="dsgateway")
        assert done.exit_code == 0, f"dsgateway {' '.join(path)} --help: {done.output}"
        assert "Usage: dsgateway" in done.output
        for name in getattr(cmd, "commands", {}):
            assert name in done.output, f"`dsgateway {' '.join(path)} --help` lacks {name}"


def test_report_parsed_and_executed(capsys):
    """Which documented commands are executed and which are only parsed (and why)."""
    executed, parsed = [], defaultdict(list)
    for inv in DSGATEWAY:
        ran, why = classify(inv)
        (executed.append(inv) if ran else parsed[why].append(inv))
    lines = [f"documented dsgateway commands: {len(executed)} executed, "]
    lines[0] += f"{sum(map(len, parsed.values()))} parsed only"
    lines += [f"  executed  {i.where}  {i.text}" for i in executed]
    for why, invs in parsed.items():
        lines.append(f"  parsed only ({why}):")
        lines += [f"    {i.where}  {i.text}" for i in invs]
    REPORT[:] = lines
    assert executed, "no documented command is executed"


REPORT: list[str] = []  # printed at the end of the run by tests/docs/conftest.py


# ---------------------------------------------------------------- code blocks


def code_blocks(*languages: str) -> list[Block]:
    return [b for f in doc_files() for b in blocks(f) if b.language in languages]


def python_source(block: Block) -> str:
    """The code of a block; doctest-style blocks (`>>> `) keep only their input."""
    lines = block.text.splitlines()
    if not any(line.startswith(">>> ") for line in lines):
        return block.text
    return "\n".join(
        line[4:] for line in lines if line.startswith(">>> ") or line.startswith("... ")
    )


OUR_MODULES = ("gateway", "algorithms", "datashield")
# Pages whose python blocks list signatures (an API listing, not code to run).
LISTING_PAGES = {"docs/internals.md"}
PYTHON_BLOCKS = [b for b in code_blocks("python", "py") if rel(b.file) not in LISTING_PAGES]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.where)
def test_python_block_compiles_and_its_imports_exist(block: Block):
    source = python_source(block)
    try:
        tree = ast.parse(source, filename=block.where)
    except SyntaxError as err:
        pytest.fail(f"{rel(block.file)}:{block.line + (err.lineno or 1) - 1}: {err.msg}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in OUR_MODULES:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or _is_module(
                        f"{node.module}.{alias.name}"
                    ), f"{block.where}: `from {node.module} import {alias.name}`: no such name"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OUR_MODULES:
                    importlib.import_module(alias.name)


def _is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("block", code_blocks("yaml", "yml"), ids=lambda b: b.where)
def test_yaml_block_loads_and_configs_are_valid(block: Block, tmp_path: Path):
    """A node.yaml or agent.yaml example (or a fragment of one) passes the real schema,
    so a renamed key fails here."""
    from gateway.agent.config import AgentConfig, _AgentSchema
    from gateway.node.config import NodeConfig, _NodeSchema

    try:
        docs = [d for d in yaml.safe_load_all(block.text) if d is not None]
    except yaml.YAMLError as err:
        pytest.fail(f"{block.where}: not YAML: {err}")
    for doc in docs:
        if not isinstance(doc, dict) or not doc:
            continue
        # The two schemas share no key: one key of either makes the block an example of
        # that file (a misspelt sibling key then fails, as it would at the station).
        keys = set(doc)
        if keys & set(_NodeSchema().fields):
            NodeConfig.from_dict({"data_dir": "data", **doc}, base_dir=tmp_path)
        elif keys & set(_AgentSchema().fields):
            AgentConfig.from_dict({"coordinator": "http://c", **doc}, base_dir=tmp_path)


R_BLOCKS = code_blocks("r")


@pytest.mark.skipif(not R_BLOCKS, reason="no R blocks in the docs")
def test_r_blocks_parse(tmp_path: Path):
    """R's own parser (no packages needed): DSI and dsBaseClient code in the guides is
    at least valid R."""
    files = []
    for n, block in enumerate(R_BLOCKS):
        f = tmp_path / f"block{n}.R"
        f.write_text(block.text)
        files.append((f, block))
    script = (
        "for (f in commandArgs(TRUE)) tryCatch(parse(f), "
        "error = function(e) cat(f, ':', conditionMessage(e), '\\n', sep = ''))"
    )
    done = subprocess.run(
        ["Rscript", "-e", script, *[str(f) for f, _ in files]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    wheres = {str(f): b.where for f, b in files}
    failures = [
        line.replace(path, wheres[path])
        for line in done.stdout.splitlines()
        for path in wheres
        if line.startswith(path + ":")
    ]
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- links

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose_lines(path: Path):
    in_fence = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence:
            yield n, line


def test_relative_links_and_anchors_resolve():
    """A link to another page (and a heading in it) that was renamed or removed."""
    broken = []
    for page in doc_files():
        for n, line in _prose_lines(page):
            for m in LINK.finditer(line):
                target = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                    continue
                path, _, anchor = target.partition("#")
                file = (page.parent / path).resolve() if path else page
                if not file.exists():
                    broken.append(f"{rel(page)}:{n}: {target}: no such file")
                elif anchor and file.suffix == ".md":
                    headings = {_slug(h.lstrip("#")) for _, h in _prose_lines(file) if h[:1] == "#"}
                    if anchor not in headings:
                        broken.append(f"{rel(page)}:{n}: {target}: no such heading")
    assert not broken, "\n".join(broken)
