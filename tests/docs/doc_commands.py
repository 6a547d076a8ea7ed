"""Finding the commands and code in the documentation, and checking a `dsgateway` command
line against the real click CLI without running it.

The documentation is README.md, docs/**/*.md, docker/README.md and
client_images/**/README.md. In fenced blocks that are shell (```console, ```sh, ```bash,
```shell, or a bare ```), every simple command whose program is `dsgateway` (also
`.venv/bin/dsgateway` and `python -m gateway.cli`) or `make` is taken, with its file and
line. Inline code spans that start with `dsgateway ` or `make ` are taken too, as references: their
command path and options must exist, but they may leave out required parts.

Written for the docs as they are: usage synopses (`list [--state approved]`), elisions
(`sha256:...`, a bare `...`), placeholders (`<node_id>`, `$k`) and continuation lines.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]

SHELL_LANGUAGES = {"", "console", "sh", "bash", "shell", "shell-session", "zsh"}
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
INLINE = re.compile(r"(?<!`)`((?:dsgateway|make) [^`]+)`(?!`)")
PLACEHOLDER = re.compile(r"<[A-Za-z_][\w .:/-]*>")  # <node_id>, <path to file>
SHELL_VARIABLE = re.compile(r"\$\{?[A-Za-z_]\w*\}?")
REDIRECTION = re.compile(r"\s\d*>&\d+|\s\d*>>?\s*\S+|\s<\s*\S+")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
WRAPPERS = {"sudo", "exec", "env", "time", "nohup"}


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "docker" / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    files += sorted((ROOT / "client_images").rglob("README.md"))
    return [f for f in files if f.is_file()]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass(frozen=True)
class Block:
    """A fenced block: its language, first line number (of its content) and text."""

    file: Path
    line: int
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{rel(self.file)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    found, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, language = m.group(1), m.group(2), m.group(3).lower()
        start, i = i + 1, i + 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence[:3]):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        found.append(Block(path, start + 1, language, "\n".join(body)))
        i += 1
    return found


@dataclass
class Invocation:
    """One documented command line: `program` is "dsgateway" or "make"."""

    file: Path
    line: int
    program: str
    argv: list[str]  # after the program, placeholders kept as written
    text: str  # the simple command as written
    fenced: bool  # a full command in a shell block (else an inline reference)
    elided: bool = False  # it had `...`: only the part before it is checked
    container: bool = False  # `docker compose exec SERVICE dsgateway ...`

    @property
    def where(self) -> str:
        return f"{rel(self.file)}:{self.line}"

    @property
    def runnable_argv(self) -> list[str] | None:
        """The arguments as a shell would pass them, or None when they hold placeholders
        or elisions and so cannot be run as written."""
        if self.elided or any(
            PLACEHOLDER.search(a) or "$" in a or "..." in a or "[" in a for a in self.argv
        ):
            return None
        return list(self.argv)


def _logical_lines(block: Block) -> list[tuple[int, str]]:
    """Lines with `\\` continuations joined; console blocks keep only `$ ` prompts."""
    out: list[tuple[int, str]] = []
    pending, first = "", 0
    for n, raw in enumerate(block.text.splitlines()):
        line = raw.rstrip()
        if block.language in ("console", "shell-session"):
            if pending:
                pass
            elif line.lstrip().startswith("$ "):
                line = line.lstrip()[2:]
            else:
                continue  # output
        if not pending:
            first = block.line + n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return out


def _tokens(line: str) -> list[str]:
    line = REDIRECTION.sub(" ", " " + line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote: prose, not a command
        return []


def _simple_commands(tokens: list[str]) -> list[list[str]]:
    commands, current = [], []
    for tok in tokens:
        if set(tok) <= set(";&|()"):  # shlex groups runs of operators: `&)`
            if current:
                commands.append(current)
            current = []
        else:
            current.append(tok)
    if current:
        commands.append(current)
    return commands


def _program(words: list[str]) -> tuple[str | None, list[str]]:
    while words and (ENV_ASSIGNMENT.match(words[0]) or words[0] in WRAPPERS):
        words = words[1:]
    if not words:
        return None, []
    head = words[0]
    if head == "dsgateway" or head.endswith("/dsgateway"):
        return "dsgateway", words[1:]
    if re.fullmatch(r"(\S*/)?python3?", head) and words[1:3] == ["-m", "gateway.cli"]:
        return "dsgateway", words[3:]
    if head == "make":
        return "make", words[1:]
    if head in ("docker", "docker-compose", "podman") and "dsgateway" in words:
        # `docker compose exec api dsgateway coordinator db current`: the command inside
        return "dsgateway", words[words.index("dsgateway") + 1 :]
    return None, []


def _normalise(argv: list[str]) -> tuple[list[str], bool]:
    """Usage-synopsis brackets dropped, the arguments cut at a bare `...`."""
    out = []
    for arg in argv:
        if arg in ("...", "…"):
            return out, True
        arg = arg.replace("[", "").replace("]", "") if not arg.startswith("[") else arg[1:]
        arg = arg.rstrip("]")
        if arg:
            out.append(arg)
    return out, False


def invocations(path: Path) -> list[Invocation]:
    found: list[Invocation] = []
    for block in blocks(path):
        if block.language not in SHELL_LANGUAGES:
            continue
        for line_no, line in _logical_lines(block):
            for words in _simple_commands(_tokens(line)):
                program, argv = _program(words)
                if program is None:
                    continue
                argv, elided = _normalise(argv)
                inv = Invocation(path, line_no, program, argv, shlex.join(words), True, elided)
                inv.container = words[0] in ("docker", "docker-compose", "podman")
                found.append(inv)
    in_fence = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for m in INLINE.finditer(line):
            words = _tokens(m.group(1))
            if not words:
                continue
            program = words[0]
            argv, elided = _normalise(_simple_commands(words)[0][1:])
            found.append(Invocation(path, n, program, argv, m.group(1), False, elided))
    return found


def all_invocations() -> list[Invocation]:
    return [inv for f in doc_files() for inv in invocations(f)]


# ---------------------------------------------------------------- the click check


def _parseable(arg: str) -> str:
    """A value click can convert: placeholders and shell variables stand for a number."""
    arg = PLACEHOLDER.sub("1", arg)
    return SHELL_VARIABLE.sub("1", arg)


@contextlib.contextmanager
def _parse_only(cmd: click.Command):
    """Paths the docs name (node.yaml, agent.yaml) are files the reader has, not ones this
    test has, so a path parameter need not exist while parsing; and a prompt (the password
    of hash-password) must not read stdin. Both restored afterwards."""
    paths = [p.type for p in cmd.params if isinstance(p.type, click.Path) and p.type.exists]
    prompts = [(p, p.prompt) for p in cmd.params if getattr(p, "prompt", None)]
    for t in paths:
        t.exists = False
    for p, _ in prompts:
        p.prompt = None
    try:
        yield
    finally:
        for t in paths:
            t.exists = True
        for p, prompt in prompts:
            p.prompt = prompt


def check_command(cli: click.Group, inv: Invocation) -> list[str]:
    """Parse the documented arguments with click, command by command down the groups,
    without invoking anything. Returns the command path; raises click.UsageError (or a
    subclass) with click's own message when the line would be refused."""
    args = [_parseable(a) for a in inv.argv]
    cmd: click.Command = cli
    ctx: click.Context | None = None
    name, path = "dsgateway", []
    sink = io.StringIO()
    while True:
        try:
            with (
                _parse_only(cmd),
                contextlib.redirect_stdout(sink),
                contextlib.redirect_stderr(sink),
            ):
                ctx = cmd.make_context(name, list(args), parent=ctx)
        except click.exceptions.Exit:  # --help, --version: printed and done
            return path
        except click.exceptions.NoArgsIsHelpError:  # a group named on its own
            return path
        except click.MissingParameter:
            if inv.fenced and not inv.elided:
                raise
            return path  # a reference may leave out what it does not talk about
        if not isinstance(cmd, click.Group):
            return path
        rest = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
        if not rest:
            return path
        sub_name, sub, sub_args = cmd.resolve_command(ctx, rest)
        cmd, name, args = sub, sub_name, sub_args
        path.append(sub_name)


def make_targets(makefile: Path) -> set[str]:
    targets = set()
    for line in makefile.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-/ ]+?)\s*:(?!=)", line)
        if m and not line.startswith("\t"):
            targets.update(m.group(1).split())
    return targets
