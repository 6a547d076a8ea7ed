"""The DataSHIELD expression check: parse a client's R expression with the DataSHIELD v2
grammar, check every function it calls against the method whitelist, and regenerate R
source in which each call names its `pkg::fun`.

The grammar follows the one Opal and Armadillo use (datashield4j `datashield-v2.jjt`):

    root        := exp [";"] <EOF>
    exp         := formula | simpleExp [ (R_OPERATOR | COMMON_OPERATOR) exp ]
    simpleExp   := call | string | symbol | "(" exp ")"
    call        := R_IDENTIFIER "(" [ exp ("," exp)* ] ")"
    symbol      := R_IDENTIFIER | NUMBER | RANGE
    formula     := R_IDENTIFIER "~" formulaTerm
    formulaTerm := ( "(" formulaTerm ")" | R_IDENTIFIER | NUMBER )
                   [ (COMMON_OPERATOR | F_OPERATOR) formulaTerm ]

with the tokens R_IDENTIFIER `[A-Za-z][A-Za-z0-9_$.-]*` (so `D$age` and `a-b` are one
token), strings of one or more `[A-Za-z0-9_.+;:,$-]` in '' or "", NUMBER, RANGE
`[0-9]+:[0-9]+`, R_OPERATOR `/ ! = %*%`, F_OPERATOR `: %in%`, COMMON_OPERATOR `+ - * ^`.
Binary operators have no precedence and group to the right, as in the real parser
(`a * b + c` means `a * (b + c)`), and are regenerated as `base::'op'(lhs, rhs)` calls so R
evaluates exactly that grouping.

Where the real parser would let something through that R reads differently or that is
not an R literal, this module is stricter (each is a parse error here):
- `=` is only accepted to name a function argument (`f(a = 1)`); Opal turns any other `=`
  into an assignment `base::'='(a, 1)`.
- identifiers are checked piece by piece: `a-b` (R reads a minus b) is accepted, but every
  name must start with a letter (`a-.b`, `D$_x`, `D$` are refused) and R's reserved words
  (`function`, `if`, ...) are refused.
- numbers follow R: `1L`, `1e5L`, `.5`; not the `1L.5` that the real lexer lets through.
Limits: at most MAX_LENGTH characters and MAX_DEPTH levels of calls and parentheses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from gateway.node.errors import ExpressionRefused, GatewayError

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Arg",
    "BinaryChain",
    "Call",
    "Formula",
    "FormulaTerm",
    "Node",
    "Number",
    "Range",
    "String",
    "Symbol",
    "check_aggregate",
    "check_assign",
    "parse",
]

MAX_LENGTH = 10_000
MAX_DEPTH = 64

# --------------------------------------------------------------------------- tokens

_NUMBER = "NUMBER"
_RANGE = "RANGE"
_IDENT = "IDENT"
_STRING = "STRING"
_DBLSTRING = "DBLSTRING"
_ROP = "ROP"
_FOP = "FOP"
_COP = "COP"
_COMMA = "COMMA"
_LPAREN = "("
_RPAREN = ")"
_TILDE = "~"
_SEMI = ";"
_EOF = "EOF"

# The names JavaCC gives these tokens in its messages.
_IMAGE = {
    _NUMBER: "<NUMBER>",
    _RANGE: "<RANGE>",
    _IDENT: "<R_IDENTIFIER>",
    _STRING: "<R_STRING>",
    _DBLSTRING: "<R_DBLSTRING>",
    _ROP: "<R_OPERATOR>",
    _FOP: "<F_OPERATOR>",
    _COP: "<COMMON_OPERATOR>",
    _COMMA: "<COMMA>",
    _LPAREN: '"("',
    _RPAREN: '")"',
    _TILDE: '"~"',
    _SEMI: '";"',
    _EOF: "<EOF>",
}

_STRING_CHARS = r"[A-Za-z0-9_.+\-;:,$]"
# Alternatives are ordered so that the first match is also the longest one (what JavaCC
# picks): RANGE before NUMBER (`1:10`), NUMBER before COMMON_OPERATOR (`-1`).
_TOKEN_RE = re.compile(
    "|".join(
        [
            rf"(?P<{_RANGE}>[0-9]+:[0-9]+)",
            rf"(?P<{_NUMBER}>-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?L?)",
            rf"(?P<{_IDENT}>[A-Za-z][A-Za-z0-9_$.\-]*)",
            rf"(?P<{_STRING}>'{_STRING_CHARS}+')",
            rf'(?P<{_DBLSTRING}>"{_STRING_CHARS}+")',
            rf"(?P<{_ROP}>[/!=]|%\*%)",
            rf"(?P<{_FOP}>:|%in%)",
            rf"(?P<{_COP}>[-+*^])",
            rf"(?P<{_COMMA}>,)",
            r"(?P<LPAREN>\()",
            r"(?P<RPAREN>\))",
            r"(?P<TILDE>~)",
            r"(?P<SEMI>;)",
        ]
    )
)
_GROUP_KIND = {"LPAREN": _LPAREN, "RPAREN": _RPAREN, "TILDE": _TILDE, "SEMI": _SEMI}
_SPACE = " \t\r\n"
_STRING_CHAR_SET = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-;:,$"
)


class _Token(NamedTuple):
    kind: str
    text: str
    line: int
    column: int
    error: str | None = None  # set on the token that stands for a lexical error


# ----------------------------------------------------------------------------- AST


@dataclass(frozen=True, slots=True)
class Symbol:
    """An identifier as the grammar reads it: `D`, `D$age`, `TRUE`, or `a-b` (a minus b)."""

    text: str


@dataclass(frozen=True, slots=True)
class Number:
    text: str


@dataclass(frozen=True, slots=True)
class Range:
    start: str
    end: str


@dataclass(frozen=True, slots=True)
class String:
    value: str  # only characters of _STRING_CHAR_SET


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Arg:
    name: Symbol | String | None
    value: Node


@dataclass(frozen=True, slots=True)
class BinaryChain:
    """`a op1 b op2 c` grouped to the right: op1(a, op2(b, c))."""

    operands: tuple[Node, ...]
    ops: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FormulaTerm:
    """Formula terms joined left to right by + - * ^ : %in%; items are names, numbers or
    parenthesised terms."""

    items: tuple[Symbol | Number | FormulaTerm, ...]
    ops: tuple[str, ...]
    parenthesised: bool = False


@dataclass(frozen=True, slots=True)
class Formula:
    lhs: Symbol
    rhs: FormulaTerm


Node = Symbol | Number | Range | String | Call | BinaryChain | Formula

# ------------------------------------------------------------------------- messages


def _escape(text: str) -> str:
    """JavaCC's add_escapes: quote what could be mistaken for something else."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _JAVA_ESCAPES:
            out.append(_JAVA_ESCAPES[ch])
        elif code < 0x20 or code > 0x7E:
            if code > 0xFFFF:  # Java sees a surrogate pair
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


_JAVA_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "'": "\\'",
    "\\": "\\\\",
}

_ECHO_LIMIT = 200


def _echo(expr: str) -> str:
    """The expression as the message repeats it: control and non-ASCII characters escaped
    (the message is one line per part and plain ASCII), and cut after _ECHO_LIMIT."""
    cut = expr[:_ECHO_LIMIT]
    shown = "".join(ch if 0x20 <= ord(ch) <= 0x7E else _escape(ch) for ch in cut)
    return shown + ("..." if len(expr) > _ECHO_LIMIT else "")


def _refuse(expr: str, detail: str) -> ExpressionRefused:
    # Armadillo: format("Error parsing expression '%s':%n%s", expression, message)
    return ExpressionRefused(f"Error parsing expression '{_echo(expr)}':\n{detail}")


def _lexical_hint(ch: str | None, after: str) -> str:
    if after[:1] in ("'", '"'):
        if ch is None:
            return "The string is not closed."
        if ch == after[0] and len(after) == 1:
            return "Strings may not be empty."
        return (
            "Strings may only contain letters, digits and the characters _ . + - ; : , $ "
            "(no spaces, quotes or backslashes)."
        )
    if after == ".":
        return "Names must start with a letter; names starting with '.' are not allowed."
    if after[:1] == "%":
        return "The only %-operators allowed are %*% and %in%."
    if ch is None:
        return "The expression is incomplete."
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return "Control characters are not allowed."
    if code > 0x7F:
        return "Only ASCII characters are allowed."
    return _CHAR_HINTS.get(ch, f"The character {ch} is not allowed here.")


_CHAR_HINTS = {
    "[": "Subsetting with [ ] or [[ ]] is not allowed.",
    "]": "Subsetting with [ ] or [[ ]] is not allowed.",
    "<": "Assignment (<-, <<-) and comparison (<, <=) are not allowed.",
    ">": "Assignment (->) and comparison (>, >=) are not allowed.",
    "&": "The logical operators & and && are not allowed.",
    "|": "The logical operators | and || are not allowed.",
    "{": "Braces { } are not allowed.",
    "}": "Braces { } are not allowed.",
    "`": "Backticks are not allowed.",
    "@": "Slot access with @ is not allowed.",
    "#": "Comments are not allowed.",
    "?": "Help requests with ? are not allowed.",
    "\\": "Backslashes are not allowed.",
    "_": "Names must start with a letter.",
    "$": "Names must start with a letter.",
    "'": "Strings may not be empty.",
    '"': "Strings may not be empty.",
}

# -------------------------------------------------------------------------- lexing


def _tokenize(expr: str) -> list[_Token]:
    """All tokens up to the end, or up to the first lexical error, which becomes an error
    token: like JavaCC, the error is raised only when the parser reaches it."""
    tokens: list[_Token] = []
    n = len(expr)
    i = 0
    line, line_start = 1, 0
    match = _TOKEN_RE.match
    while True:
        while i < n and expr[i] in _SPACE:
            if expr[i] == "\n" or (expr[i] == "\r" and expr[i + 1 : i + 2] != "\n"):
                line, line_start = line + 1, i + 1
            i += 1
        if i >= n:
            tokens.append(_Token(_EOF, "", line, i - line_start + 1))
            return tokens
        m = match(expr, i)
        if m is None:
            tokens.append(_lexical_error(expr, i, line, line_start))
            return tokens
        group = m.lastgroup
        tokens.append(_Token(_GROUP_KIND.get(group, group), m.group(), line, i - line_start + 1))
        i = m.end()


def _lexical_error(expr: str, start: int, line: int, line_start: int) -> _Token:
    # How far a token could get before it failed (what JavaCC calls "after").
    j = start
    first = expr[start]
    if first in ("'", '"'):
        j += 1
        while j < len(expr) and expr[j] in _STRING_CHAR_SET:
            j += 1
    elif first == "." or first == "%":
        j += 1
        if first == "%" and expr[j : j + 1] in ("i", "*"):
            j += 2 if expr[j : j + 2] == "in" else 1
    after = expr[start:j]
    ch = expr[j] if j < len(expr) else None
    column = j - line_start + 1
    if ch is None:
        message = (
            f"Lexical error at line {line}, column {column}.  "
            f'Encountered: <EOF> after : "{_escape(after)}"'
        )
    else:
        message = (
            f"Lexical error at line {line}, column {column}.  "
            f'Encountered: "{_escape(ch)}" ({ord(ch)}), after : "{_escape(after)}"'
        )
    return _Token("ERR", after, line, column, error=message + "\n" + _lexical_hint(ch, after))


# ------------------------------------------------------------------- name checking

# R's reserved words that are not values: as names they cannot mean anything safe.
_RESERVED = frozenset(["function", "if", "else", "for", "while", "repeat", "next", "break", "in"])
# Reserved constants: fine as a value (`TRUE`, `NULL`), not as a `$` part of a name.
_CONSTANTS = frozenset(
    [
        "TRUE",
        "FALSE",
        "NULL",
        "NA",
        "NA_integer_",
        "NA_real_",
        "NA_character_",
        "NA_complex_",
        "Inf",
        "NaN",
    ]
)
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9._]*\Z")
_SIMPLE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9._]*(?:\$[A-Za-z][A-Za-z0-9._]*)?\Z")
_UNSIGNED_NUMBER_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][0-9]+)?L?\Z")


def _name_problem(text: str) -> str | None:
    """Why an R_IDENTIFIER is not something R reads as names and differences (`D$a-D$b`),
    or None if it is fine."""
    if _SIMPLE_NAME_RE.match(text):  # the common case: `D`, `D$age`, `TRUE`
        head, _, tail = text.partition("$")
        if head not in _RESERVED and tail not in _RESERVED and tail not in _CONSTANTS:
            return None
    pieces = text.split("-")
    if pieces[-1] == "":
        return f"The name '{text}' may not end with '-'."
    for k, piece in enumerate(pieces):
        if piece == "" and k > 0:
            continue  # `a--b` is a - (-b)
        if piece[0].isdigit() and k > 0:
            if not _UNSIGNED_NUMBER_RE.match(piece):
                return f"'{piece}' in '{text}' is neither a name nor a number."
            continue
        segments = piece.split("$")
        for s, segment in enumerate(segments):
            if segment in _RESERVED:
                return f"'{segment}' is a reserved word of R and is not allowed."
            if not _NAME_RE.match(segment):
                shown = segment or "(nothing)"
                return (
                    f"'{shown}' in '{text}' is not a valid name: names must start with a "
                    "letter (names starting with '.' are not allowed)."
                )
            if s > 0 and segment in _CONSTANTS:
                return f"'{segment}' is a reserved word of R and cannot follow '$'."
    return None


# ------------------------------------------------------------------------- parsing

_STARTS = frozenset([_LPAREN, _NUMBER, _RANGE, _IDENT, _STRING, _DBLSTRING])
_EXP_START = ['"("', "<NUMBER>", "<RANGE>", "<R_IDENTIFIER>", "<R_STRING>", "<R_DBLSTRING>"]
_BINARY_OPS = ["<R_OPERATOR>", "<COMMON_OPERATOR>"]
_FORMULA_OPS = ["<COMMON_OPERATOR>", "<F_OPERATOR>"]
_ROOT_END = ['";"', "<EOF>"]
_ARG_END = ["<COMMA>", '")"']
_PAREN_END = ['")"']
_FORMULA_HINT = "A formula may only combine names and numbers with + - * ^ : %in% and ( )."


def _ends_with_formula(node: Node | Arg) -> bool:
    if isinstance(node, Arg):
        node = node.value
    if isinstance(node, BinaryChain):
        node = node.operands[-1]
    return isinstance(node, Formula)


_EXPECT_FORMULA_ITEM = ['"("', "<R_IDENTIFIER>", "<NUMBER>"]


class _Parser:
    __slots__ = ("expr", "pos", "tokens")

    def __init__(self, expr: str):
        self.expr = expr
        self.tokens = _tokenize(expr)
        # The last token (end or error) is never consumed; a copy of it lets the parser
        # look one token further without a bounds check.
        self.tokens.append(self.tokens[-1])
        self.pos = 0

    # -- token access: an error token raises as soon as the parser looks at it

    def _peek(self, k: int = 0) -> _Token:
        tok = self.tokens[self.pos + k]
        if tok.error is not None:
            raise _refuse(self.expr, tok.error)
        return tok

    def _next(self) -> _Token:
        tok = self._peek()
        self.pos += 1
        return tok

    def _fail(self, tok: _Token, expected: list[str], hint: str | None = None) -> ExpressionRefused:
        if tok.kind == _EOF:
            head = f'Encountered "<EOF>" at line {tok.line}, column {tok.column}.'
        else:
            head = (
                f'Encountered " {_IMAGE[tok.kind]} "{_escape(tok.text)} "" '
                f"at line {tok.line}, column {tok.column}."
            )
        lines = [head, "Was expecting:" if len(expected) == 1 else "Was expecting one of:"]
        lines += [f"    {e} ..." if e != "<EOF>" else f"    {e} " for e in expected]
        if hint is None:
            hint = self._parse_hint(tok)
        if hint:
            lines.append(hint)
        return _refuse(self.expr, "\n".join(lines))

    def _parse_hint(self, tok: _Token) -> str | None:
        prev = self.tokens[self.pos - 1] if self.pos > 0 else None
        if tok.kind == _EOF:
            return "The expression is empty." if prev is None else "The expression is incomplete."
        if tok.kind == _FOP and tok.text == ":":
            nxt = self.tokens[self.pos + 1] if self.pos + 1 < len(self.tokens) else None
            if (prev is not None and prev.text == ":") or (nxt is not None and nxt.text == ":"):
                return (
                    "Package-qualified names (:: and :::) are not allowed: call a method by "
                    "its name; the server adds its package."
                )
        if tok.text == "=" and prev is not None and prev.text in ("=", "!"):
            return "Comparison operators (==, !=, <, >) are not allowed."
        if tok.kind == _NUMBER and tok.text.startswith("-"):
            return (
                "The grammar reads '-' followed by a digit as a negative number: write "
                "a space after '-' to subtract."
            )
        return None

    def _fail_after(
        self, node: Node | Arg, tok: _Token, closers: list[str], hint: str | None = None
    ) -> ExpressionRefused:
        """The error for an unexpected token after a complete (sub)expression."""
        if _ends_with_formula(node):
            return self._fail(tok, _FORMULA_OPS + closers, hint or _FORMULA_HINT)
        return self._fail(tok, _BINARY_OPS + closers, hint)

    def _expect(self, kind: str, expected: list[str]) -> _Token:
        tok = self._peek()
        if tok.kind != kind:
            raise self._fail(tok, expected)
        self.pos += 1
        return tok

    def _too_deep(self) -> ExpressionRefused:
        return _refuse(
            self.expr,
            f"The expression is nested too deeply (more than {MAX_DEPTH} levels of calls "
            "or parentheses).",
        )

    def _symbol(self, tok: _Token) -> Symbol:
        problem = _name_problem(tok.text)
        if problem is not None:
            raise _refuse(self.expr, f"At line {tok.line}, column {tok.column}: {problem}")
        return Symbol(tok.text)

    # -- grammar

    def root(self) -> Node:
        node = self.exp(0)
        tok = self._peek()
        if tok.kind == _SEMI:
            self.pos += 1
            tok = self._peek()
            if tok.kind != _EOF:
                raise self._fail(tok, ["<EOF>"], _ONE_EXPRESSION)
        elif tok.kind != _EOF:
            hint = self._parse_hint(tok)
            if hint is None and tok.kind in _STARTS:
                hint = _ONE_EXPRESSION
            raise self._fail_after(node, tok, _ROOT_END, hint)
        return node

    def _formula_ahead(self) -> bool:
        return self._peek().kind == _IDENT and self._peek(1).kind == _TILDE

    def exp(self, depth: int) -> Node:
        return self._exp(depth, False)  # type: ignore[return-value]  # never an Arg

    def argument(self, depth: int) -> Arg:
        arg = self._exp(depth, True)
        return arg if isinstance(arg, Arg) else Arg(None, arg)

    def _exp(self, depth: int, named_ok: bool) -> Node | Arg:
        """exp, or with `named_ok` a named argument `name = exp` as well."""
        if self._formula_ahead():
            return self.formula(depth)
        first = self.simple(depth)
        tok = self._peek()
        if tok.kind == _ROP and tok.text == "=":
            self._check_equals(tok, first, named_ok)
            self.pos += 1
            return Arg(first, self.exp(depth))  # type: ignore[arg-type]  # checked above
        if tok.kind not in (_ROP, _COP):
            return first
        operands: list[Node] = [first]
        ops: list[str] = []
        while tok.kind in (_ROP, _COP):
            if tok.text == "=":
                self._check_equals(tok, operands[-1], False)
            ops.append(tok.text)
            self.pos += 1
            if self._formula_ahead():
                operands.append(self.formula(depth))
                break
            operands.append(self.simple(depth))
            tok = self._peek()
        return BinaryChain(tuple(operands), tuple(ops))

    def _check_equals(self, tok: _Token, lhs: Node, named_ok: bool) -> None:
        nxt = self._peek(1)
        if nxt.kind == _ROP and nxt.text == "=":
            self.pos += 1
            raise self._fail(nxt, _EXP_START)
        if not named_ok:
            raise _refuse(
                self.expr,
                f"At line {tok.line}, column {tok.column}: '=' is only allowed to name a "
                "function argument, as in f(name = value); assignment is not allowed.",
            )
        plain = isinstance(lhs, String) or (
            isinstance(lhs, Symbol)
            and _NAME_RE.match(lhs.text) is not None
            and lhs.text not in _CONSTANTS
        )
        if not plain:
            raise _refuse(
                self.expr,
                f"At line {tok.line}, column {tok.column}: an argument name before '=' must "
                "be a plain name or a string.",
            )

    def simple(self, depth: int) -> Node:
        tok = self._peek()
        kind = tok.kind
        if kind == _IDENT:
            if self._peek(1).kind == _LPAREN:
                return self.call(depth)
            self.pos += 1
            return self._symbol(tok)
        if kind in (_STRING, _DBLSTRING):
            self.pos += 1
            return String(tok.text[1:-1])
        if kind == _NUMBER:
            self.pos += 1
            return Number(tok.text)
        if kind == _RANGE:
            self.pos += 1
            start, end = tok.text.split(":")
            return Range(start, end)
        if kind == _LPAREN:
            if depth >= MAX_DEPTH:
                raise self._too_deep()
            self.pos += 1
            inner = self.exp(depth + 1)
            if self._peek().kind != _RPAREN:
                raise self._fail_after(inner, self._peek(), _PAREN_END)
            self.pos += 1
            return inner  # the AST itself keeps the grouping
        raise self._fail(tok, _EXP_START)

    def call(self, depth: int) -> Call:
        name_tok = self._next()
        for piece in re.split(r"[$\-]", name_tok.text):
            if piece in _RESERVED:
                raise _refuse(
                    self.expr,
                    f"At line {name_tok.line}, column {name_tok.column}: '{piece}' is a "
                    "reserved word of R and is not allowed.",
                )
        if depth >= MAX_DEPTH:
            raise self._too_deep()
        self.pos += 1  # "("
        args: list[Arg] = []
        if self._peek().kind != _RPAREN:
            while True:
                arg = self.argument(depth + 1)
                args.append(arg)
                tok = self._peek()
                if tok.kind == _COMMA:
                    self.pos += 1
                    continue
                if tok.kind != _RPAREN:
                    raise self._fail_after(arg, tok, _ARG_END)
                break
        self.pos += 1  # ")"
        return Call(name_tok.text, tuple(args))

    def formula(self, depth: int) -> Formula:
        lhs = self._symbol(self._next())
        self.pos += 1  # "~"
        return Formula(lhs, self.formula_term(depth, False))

    def formula_term(self, depth: int, parenthesised: bool) -> FormulaTerm:
        items: list[Symbol | Number | FormulaTerm] = []
        ops: list[str] = []
        while True:
            tok = self._peek()
            if tok.kind == _LPAREN:
                if depth >= MAX_DEPTH:
                    raise self._too_deep()
                self.pos += 1
                items.append(self.formula_term(depth + 1, True))
                self._expect(_RPAREN, [*_FORMULA_OPS, '")"'])
            elif tok.kind == _IDENT:
                self.pos += 1
                if self._peek().kind == _LPAREN:
                    raise self._fail(
                        self._peek(), _FORMULA_OPS, "Function calls are not allowed in formulas."
                    )
                items.append(self._symbol(tok))
            elif tok.kind == _NUMBER:
                self.pos += 1
                items.append(Number(tok.text))
            else:
                raise self._fail(tok, _EXPECT_FORMULA_ITEM)
            tok = self._peek()
            if tok.kind not in (_COP, _FOP):
                return FormulaTerm(tuple(items), tuple(ops), parenthesised)
            ops.append(tok.text)
            self.pos += 1


_ONE_EXPRESSION = "Only one expression is allowed (a single trailing ';' is accepted)."


def parse(expr: str) -> Node:
    """The AST of `expr`, or ExpressionRefused naming why it is outside the grammar."""
    if not isinstance(expr, str):
        raise TypeError(f"expression must be str, not {type(expr).__name__}")
    if len(expr) > MAX_LENGTH:
        raise _refuse(
            expr,
            f"The expression is too long ({len(expr)} characters; the limit is {MAX_LENGTH}).",
        )
    return _Parser(expr).root()


# -------------------------------------------------------------------- regeneration

_FUNCTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9.]*::[A-Za-z][A-Za-z0-9._]*\Z")
_FORMULA_SPACED = frozenset(["+", "-", "*", "%in%"])


class _Writer:
    __slots__ = ("kind", "methods")

    def __init__(self, methods: Mapping[str, str], kind: str):
        self.methods = methods
        self.kind = kind

    def function(self, name: str) -> str:
        function = self.methods.get(name)
        if function is None:
            # datashield4j NoSuchDSMethodException
            raise ExpressionRefused(f"No such DataSHIELD '{self.kind}' method with name: {name}")
        if not isinstance(function, str) or not _FUNCTION_RE.match(function):
            raise GatewayError(
                f"The DataSHIELD '{self.kind}' method {name} is configured with an invalid "
                f"function {function!r}; expected pkg::fun"
            )
        return function

    def node(self, node: Node) -> str:
        if isinstance(node, Call):
            # Look the name up before the arguments: the first unknown name, outermost
            # first, is the one reported, as the real servers do.
            function = self.function(node.name)
            return f"{function}({', '.join(self.arg(a) for a in node.args)})"
        if isinstance(node, Symbol | Number):
            return node.text
        if isinstance(node, String):
            return f'"{node.value}"'
        if isinstance(node, Range):
            return f"{node.start}:{node.end}"
        if isinstance(node, BinaryChain):
            head = "".join(
                f"base::'{op}'({self.node(operand)}, "
                for operand, op in zip(node.operands, node.ops, strict=False)
            )
            return head + self.node(node.operands[-1]) + ")" * len(node.ops)
        if isinstance(node, Formula):
            return f"{node.lhs.text} ~ {self.term(node.rhs)}"
        raise TypeError(f"not an expression node: {node!r}")  # pragma: no cover

    def arg(self, arg: Arg) -> str:
        value = self.node(arg.value)
        if arg.name is None:
            return value
        name = arg.name.text if isinstance(arg.name, Symbol) else f'"{arg.name.value}"'
        return f"{name} = {value}"

    def term(self, term: FormulaTerm) -> str:
        parts = [self._item(term.items[0])]
        for op, item in zip(term.ops, term.items[1:], strict=True):
            parts.append(f" {op} " if op in _FORMULA_SPACED else op)
            parts.append(self._item(item))
        text = "".join(parts)
        return f"({text})" if term.parenthesised else text

    def _item(self, item: Symbol | Number | FormulaTerm) -> str:
        return self.term(item) if isinstance(item, FormulaTerm) else item.text


def check_aggregate(expr: str, methods: Mapping[str, str]) -> str:
    """R source for an aggregate expression: one call at its root, every function in
    `methods` (name -> pkg::fun), rewritten to its pkg::fun."""
    node = parse(expr)
    if not isinstance(node, Call):
        # datashield4j FirstNodeInvokesFunctionValidator
        raise _refuse(expr, "must invoke a function.")
    return _Writer(methods, "AGGREGATE").node(node)


def check_assign(expr: str, methods: Mapping[str, str]) -> str:
    """R source for an assign expression: any expression of the grammar, every function in
    `methods` (name -> pkg::fun), rewritten to its pkg::fun."""
    return _Writer(methods, "ASSIGN").node(parse(expr))
