"""Building the R expressions the algorithms send.

Every expression must pass the DataSHIELD v2 grammar the servers check (Opal,
Armadillo and the gateway, see gateway/node/expression.py): names are identifiers or
``$`` chains (``D``, ``D$age``), strings hold only ``[A-Za-z0-9_.+-;:,$]`` (no spaces,
never empty), binary operators have no precedence and group to the right. Values are
checked here, so a bad argument fails in Python with a message saying why, before
anything is sent.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable

__all__ = [
    "NULL",
    "call",
    "formula",
    "logical",
    "name",
    "named",
    "number",
    "number_list",
    "string",
    "string_list",
]

NULL = "NULL"

_PIECE = r"[A-Za-z][A-Za-z0-9_.]*"
_NAME_RE = re.compile(rf"{_PIECE}(?:\${_PIECE})*")
_STRING_RE = re.compile(r"[A-Za-z0-9_.+\-;:,$]+")
_ARG_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")
_RESERVED = frozenset(
    "if else repeat while function for next break TRUE FALSE NULL Inf NaN NA NA_integer_ "
    "NA_real_ NA_character_ in".split()
)
_FORMULA_TOKEN_RE = re.compile(
    rf"\s*(?:(?P<name>{_PIECE}(?:\${_PIECE})*)|(?P<number>[0-9]+(?:\.[0-9]+)?)"
    r"|(?P<op>%in%|[-+*^:()]))"
)


def name(value: str, what: str = "name") -> str:
    """A server-side object, written as R reads a symbol: ``D`` or ``D$age``."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a server-side object name: expected a name or a $ chain "
            "of names, each starting with a letter (e.g. 'D' or 'D$age')"
        )
    if any(piece in _RESERVED for piece in value.split("$")):
        raise ValueError(f"{what} {value!r} uses a reserved word of R")
    return value


def string(value: str, what: str = "value") -> str:
    """A quoted R string; DataSHIELD only carries ``[A-Za-z0-9_.+-;:,$]`` in strings."""
    if not isinstance(value, str) or not _STRING_RE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} cannot be sent in a DataSHIELD expression: strings may only "
            "hold letters, digits and _ . + - ; : , $ (no spaces, not empty)"
        )
    return f'"{value}"'


def number(value: float | int) -> str:
    """A finite number as an R literal that reads back to the same double."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be sent: only finite numbers can")
    return repr(value)  # the shortest text that R parses back to the same double


def logical(value: bool) -> str:
    return "TRUE" if value else "FALSE"


def number_list(values: Iterable[float]) -> str:
    """Numbers as one comma-separated string, as dsBase transmits vectors: ``"0,1.5,-2"``."""
    return string(",".join(number(v) for v in values), "number list")


def string_list(values: Iterable[str], what: str = "value") -> str:
    """Strings as one comma-separated string: ``"female,male"``."""
    items = list(values)
    for item in items:
        if not isinstance(item, str) or "," in item or not _STRING_RE.fullmatch(item):
            raise ValueError(
                f"{what} {item!r} cannot be sent in a DataSHIELD expression: only letters, "
                "digits and _ . + - ; : $ are carried (no spaces or commas)"
            )
    return string(",".join(items), what)


def named(arg: str, value: str) -> str:
    """A named argument, ``arg = value``; ``value`` is already an R expression."""
    if not _ARG_NAME_RE.fullmatch(arg):
        raise ValueError(f"bad argument name {arg!r}")
    return f"{arg} = {value}"


def call(function: str, *args: str) -> str:
    """``function(arg1, arg2, ...)`` from arguments already written as R expressions."""
    if not _ARG_NAME_RE.fullmatch(function):
        raise ValueError(f"bad function name {function!r}")
    return f"{function}({', '.join(args)})"


def formula(text: str) -> str:
    """A model formula, ``y ~ x1 + x2`` (names, numbers, ``+ - * ^ : %in%``, parentheses),
    normalised to single spaces between tokens."""
    if not isinstance(text, str) or text.count("~") != 1:
        raise ValueError(f"formula {text!r} must have the form 'y ~ x1 + x2'")
    lhs, rhs = (part.strip() for part in text.split("~"))
    name(lhs, "the formula's response")
    tokens = []
    pos = 0
    rhs = rhs.rstrip()
    while pos < len(rhs):
        m = _FORMULA_TOKEN_RE.match(rhs, pos)
        if not m or m.end() == pos:
            raise ValueError(
                f"formula {text!r}: cannot read {rhs[pos:].strip()[:20]!r}; a DataSHIELD "
                "formula holds names, numbers, + - * ^ : %in% and parentheses"
            )
        if m.group("name"):
            tokens.append(name(m.group("name"), "formula term"))
        else:
            tokens.append(m.group("number") or m.group("op"))
        pos = m.end()
    if not tokens:
        raise ValueError(f"formula {text!r} has no terms on the right of '~'")
    _check_formula_terms(text, tokens)
    out = " ".join(tokens).replace("( ", "(").replace(" )", ")")
    return f"{lhs} ~ {out}"


def _check_formula_terms(text: str, tokens: list[str]) -> None:
    """Terms and operators alternate; parentheses group terms and balance."""
    want_term, depth = True, 0
    for item in tokens:
        if item == "(":
            if not want_term:
                raise ValueError(
                    f"formula {text!r}: '(' after a term (function calls are not allowed)"
                )
            depth += 1
        elif item == ")":
            if want_term or depth == 0:
                raise ValueError(f"formula {text!r}: unbalanced or empty parentheses")
            depth -= 1
        elif item in ("+", "-", "*", "^", ":", "%in%"):
            if want_term:
                raise ValueError(f"formula {text!r}: operator {item!r} without a term before it")
            want_term = True
        else:
            if not want_term:
                raise ValueError(f"formula {text!r}: two terms without an operator between them")
            want_term = False
    if want_term or depth:
        raise ValueError(f"formula {text!r} ends in the middle of a term")
