"""Disclosure checks on an image run's output: a safety net, not a proof.

The real guarantee is that the analysis container reaches nothing but the gateway's
non-disclosive DataSHIELD API (and, when asked, the relay to the same API at other
nodes). These checks catch the plain mistakes a script can still make with what that
API returns, before output leaves the node and again when the coordinator receives it.
Every rule is explicit and listed in docs/client-images.md ("Disclosure checks"):

1. Row limit: no table (CSV data rows, a JSON list, the rows of a JSON table) has more
   than `max_rows` rows: a longer one looks like row-level data.
2. Small counts: a count is a number in a column, or under a JSON key, whose name says
   so (`n`, `count`, `counts`, `freq`, `frequency`, or starting `n_`/`count_`, ending
   `_n`/`_count`; case-insensitive). A count must be 0 or at least `min_count`.
3. Identifiers: no column (a CSV column, a JSON table's column, a JSON list under a key)
   is named like an identifier (`identifiers`: regular expressions, searched
   case-insensitively in the column's name).
4. Pictures: PNG files leave only if `allow_png` (they cannot be read for the above).

A JSON "table" is a list of objects (records), an object whose values are all lists of
one length (columns), or pandas' split form `{"columns", "index", "data"}`.

`check_output(name, media_type, content, rules)` returns None or the reason a
researcher can act on; `check_outputs` raises `DisclosureRefused` for the first one.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_IDENTIFIERS",
    "DisclosureRefused",
    "DisclosureRules",
    "check_output",
    "check_outputs",
]

DEFAULT_IDENTIFIERS = (
    r"(^|[^a-z0-9])(id|ids|identifier|uuid|ssn|mrn|patient|subject|person|participant)"
    r"([^a-z0-9]|$)",
)
_COUNT_NAME = re.compile(
    r"^(n|count|counts|freq|frequency|n_.+|count_.+|.+_n|.+_count|.+_counts)$", re.IGNORECASE
)


class DisclosureRefused(Exception):
    """The output may not leave: the message says which file, what, and what to do."""


@dataclass(frozen=True)
class DisclosureRules:
    min_count: int = 5
    max_rows: int = 100
    allow_png: bool = True
    identifiers: tuple[str, ...] = field(default=DEFAULT_IDENTIFIERS)

    def __post_init__(self) -> None:
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int):
            raise ValueError("min_count is a whole number")
        if isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int):
            raise ValueError("max_rows is a whole number")
        if self.min_count < 1 or self.max_rows < 1:
            raise ValueError("min_count and max_rows must be at least 1")
        if not isinstance(self.allow_png, bool):
            raise ValueError("allow_png is true or false")
        for pattern in self.identifiers:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as err:
                raise ValueError(
                    f"identifiers: {pattern!r} is not a regular expression: {err}"
                ) from None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> DisclosureRules:
        """Rules from settings (missing keys keep their defaults); ValueError if unusable."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ValueError("disclosure rules are an object")
        unknown = set(raw) - {"min_count", "max_rows", "allow_png", "identifiers"}
        if unknown:
            raise ValueError(f"unknown disclosure rules: {sorted(unknown)}")
        data = dict(raw)
        if "identifiers" in data:
            ids = data["identifiers"]
            ids = [ids] if isinstance(ids, str) else ids
            if not isinstance(ids, list | tuple) or not all(isinstance(p, str) for p in ids):
                raise ValueError("identifiers: a list of regular expressions")
            data["identifiers"] = tuple(ids)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_count": self.min_count,
            "max_rows": self.max_rows,
            "allow_png": self.allow_png,
            "identifiers": list(self.identifiers),
        }

    def strictest(self, other: DisclosureRules) -> DisclosureRules:
        """Both sets of rules at once: the node applies its own and the coordinator's."""
        ids = tuple(dict.fromkeys((*self.identifiers, *other.identifiers)))
        return DisclosureRules(
            min_count=max(self.min_count, other.min_count),
            max_rows=min(self.max_rows, other.max_rows),
            allow_png=self.allow_png and other.allow_png,
            identifiers=ids,
        )


class _Checker:
    def __init__(self, name: str, rules: DisclosureRules):
        self.name = name
        self.rules = rules
        self.ids = [re.compile(p, re.IGNORECASE) for p in rules.identifiers]

    def refuse(self, what: str, advice: str) -> None:
        raise DisclosureRefused(f"{self.name}: {what}. {advice}")

    def too_long(self, where: str, rows: int) -> None:
        if rows > self.rules.max_rows:
            self.refuse(
                f"{where} has {rows} rows, more than the limit of {self.rules.max_rows}: it "
                "looks like row-level data",
                "Return summaries (means, counts of groups, model coefficients), not rows.",
            )

    def column(self, where: str, name: str, values: Iterable[Any], is_column: bool = True) -> None:
        """One named column (or a JSON key's value): counts; identifiers (columns only:
        a single value under a key like `subject_age` is not a list of people)."""
        if _COUNT_NAME.match(name.strip()):
            for value in values:
                number = _number(value)
                if number is not None and 0 < number < self.rules.min_count:
                    self.refuse(
                        f"{where}, column {name!r} holds the count {_show(number)}, under the "
                        f"minimum of {self.rules.min_count}",
                        f"Merge small groups (or leave the table out) so that every count is "
                        f"0 or at least {self.rules.min_count}.",
                    )
            return
        if is_column and any(p.search(name) for p in self.ids):
            self.refuse(
                f"{where} has a column {name!r}, named like an identifier",
                "Leave identifiers out of the output; return figures about groups.",
            )

    def table(self, where: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.too_long(where, len(rows))
        for i, name in enumerate(columns):
            self.column(where, str(name), (row[i] for row in rows if i < len(row)))

    # ---------------------------------------------------------------- formats

    def csv_text(self, text: str) -> None:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        rows = [r for r in rows if r]
        if not rows:
            return
        self.table("the table", rows[0], rows[1:])

    def json_value(self, value: Any, where: str = "the JSON value") -> None:
        if isinstance(value, dict):
            if _is_split_frame(value):
                self.too_long(f"{where} (index)", len(value.get("index") or []))
                self.table(where, [str(c) for c in value["columns"]], value["data"])
                return
            if _is_columns(value):
                columns = list(value)
                rows = [list(r) for r in zip(*value.values(), strict=True)]
                self.table(where, columns, rows)
                for key, column in value.items():
                    for item in column:
                        self._nested(item, f"{where}.{key}")
                return
            for key, item in value.items():
                if isinstance(item, list):
                    self.column(where, str(key), item)
                else:
                    self.column(where, str(key), [item], is_column=False)
                self.json_value(item, f"{where}.{key}")
            return
        if isinstance(value, list):
            self.too_long(where, len(value))
            if value and all(isinstance(v, dict) for v in value):
                columns = list(dict.fromkeys(k for v in value for k in v))
                rows = [[v.get(c) for c in columns] for v in value]
                self.table(where, columns, rows)
            for i, item in enumerate(value):
                self._nested(item, f"{where}[{i}]")

    def _nested(self, item: Any, where: str) -> None:
        if isinstance(item, dict | list):
            self.json_value(item, where)


def _is_split_frame(value: dict) -> bool:
    return (
        isinstance(value.get("columns"), list)
        and isinstance(value.get("data"), list)
        and all(isinstance(r, list) for r in value["data"])
        and set(value) <= {"columns", "index", "data", "name"}
    )


def _is_columns(value: dict) -> bool:
    lists = list(value.values())
    return (
        len(lists) >= 2
        and all(isinstance(v, list) for v in lists)
        and len({len(v) for v in lists}) == 1
        and len(lists[0]) > 0
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _show(number: float) -> str:
    return str(int(number)) if number == int(number) else f"{number:g}"


def check_output(name: str, media_type: str, content: Any, rules: DisclosureRules) -> str | None:
    """None if the file may leave, else the reason. `content`: a JSON file's value (or its
    text/bytes), a CSV's text (or bytes), a PNG's bytes or base64 text."""
    checker = _Checker(name, rules)
    try:
        if media_type == "image/png":
            if not rules.allow_png:
                checker.refuse(
                    "pictures may not leave here (their content cannot be checked)",
                    "Return the figures as JSON or CSV instead.",
                )
        elif media_type == "text/csv":
            text = content.decode("utf-8") if isinstance(content, bytes) else content
            if not isinstance(text, str):
                checker.refuse("a CSV file that is not text", "Write UTF-8 CSV.")
            checker.csv_text(text)
        elif media_type == "application/json":
            value = json.loads(content) if isinstance(content, bytes | str) else content
            checker.json_value(value)
        else:
            checker.refuse(f"files of type {media_type!r} are not checked here", "Use JSON or CSV.")
    except DisclosureRefused as err:
        return str(err)
    except (ValueError, UnicodeDecodeError, csv.Error) as err:
        return f"{name}: it could not be read for the disclosure check ({err})."
    return None


def check_outputs(outputs: Iterable[Any], rules: DisclosureRules) -> None:
    """`outputs`: OutputFile objects (node) or their dicts {name, type, content}
    (coordinator). Raises DisclosureRefused with the first file's reason."""
    for out in outputs:
        if isinstance(out, Mapping):
            name, media_type, content = out.get("name"), out.get("type"), out.get("content")
        else:
            name, media_type, content = out.name, out.media_type, out.data
        reason = check_output(str(name), str(media_type), content, rules)
        if reason is not None:
            raise DisclosureRefused(reason)
