"""DataSHIELD methods and options, from the installed packages' declarations, per profile.

A DataSHIELD package declares, in its DESCRIPTION or `inst/DATASHIELD` file:

    AggregateMethods: meanDS, exists=base::exists, ...
    AssignMethods:    vectorDS, c=dsBase::vectorDS, ...
    Options:          datashield.privacyLevel=5, default.nfilter.tab=3, ...

Methods are comma lists (whitespace and newlines do not matter) of `name`, meaning the
package's own `pkg::name`, or `name=pkg::fun`; a method belongs to the package that
declares it, whatever package its function lives in (as in Opal and Armadillo). Options
are comma lists of `key=value`; the value is R source (a literal such as `3`, `"banana"`,
`c(1, 2)`), kept as written, and a comma inside parentheses or quotes does not split.
Entries that cannot be used (no name, a function that is not `pkg::fun`, an option
without `=`) are skipped with a warning, as Opal does, instead of failing the gateway.

Which declaration wins when two packages declare the same method name (Opal: the package
published last; Armadillo: refuses to start): here the packages are taken in order, the
profile's `packages` list when it has one, else by package name, and a later package
overrides an earlier one. Within one package a later entry overrides an earlier one.
Options merge the same way, then the profile's own options override them. A profile's
blacklist removes methods by name (`exists`) or by function (`base::exists`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from gateway.node.errors import NotFound

__all__ = [
    "KINDS",
    "Method",
    "MethodRegistry",
    "PackageInfo",
    "Profile",
    "discover_methods",
    "parse_methods",
    "parse_options",
]

log = logging.getLogger(__name__)

KINDS = ("aggregate", "assign")

# What expression.py can call and write into R source: a method name the DataSHIELD
# grammar reads as one identifier, and a function `pkg::fun` with syntactic names.
_METHOD_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9._]*\Z")
_FUNCTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9.]*::[A-Za-z][A-Za-z0-9._]*\Z")
_OPTION_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9._]*\Z")


@dataclass(frozen=True)
class Method:
    name: str  # as the client calls it: meanDS, exists
    function: str  # what runs: dsBase::meanDS, base::exists
    package: str  # the DataSHIELD package that declares it
    version: str  # that package's version
    kind: str  # "aggregate" | "assign"


@dataclass(frozen=True)
class PackageInfo:
    name: str
    version: str
    aggregate: str | None = None  # the AggregateMethods field, as read from R
    assign: str | None = None  # the AssignMethods field
    options: str | None = None  # the Options field

    @property
    def is_datashield(self) -> bool:
        return self.aggregate is not None or self.assign is not None or self.options is not None


@dataclass
class Profile:
    name: str
    packages: list[str] | None = None  # None: every DataSHIELD package
    blacklist: list[str] = field(default_factory=list)  # method names (or pkg::fun) removed
    options: dict[str, str] = field(default_factory=dict)  # override package defaults


# ------------------------------------------------------------------------- parsing


def parse_methods(package: str, field_value: str | None) -> list[tuple[str, str]]:
    """(name, pkg::fun) pairs of an AggregateMethods/AssignMethods field, in order."""
    if not field_value:
        return []
    # `name = pkg :: fun` with spaces is one entry; then commas and whitespace separate.
    text = re.sub(r"\s*=\s*", "=", field_value)
    text = re.sub(r"\s*::\s*", "::", text)
    pairs = []
    for entry in re.split(r"[,\s]+", text):
        if not entry:
            continue
        name, sep, function = entry.partition("=")
        if not sep:
            function = f"{package}::{name}"
        if not _METHOD_NAME_RE.match(name) or not _FUNCTION_RE.match(function):
            log.warning("package %s: skipping the unusable method entry %r", package, entry)
            continue
        pairs.append((name, function))
    return pairs


def parse_options(field_value: str | None, package: str = "?") -> dict[str, str]:
    """key -> R source of an Options field, in order."""
    options: dict[str, str] = {}
    if not field_value:
        return options
    for entry in _split_top_level(field_value):
        entry = entry.strip()
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        key, value = re.sub(r"\s+", "", key), value.strip()
        if not sep or not _OPTION_NAME_RE.match(key) or not value:
            log.warning("package %s: skipping the unusable option entry %r", package, entry)
            continue
        options[key] = value
    return options


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are outside parentheses, brackets and quotes."""
    parts, start, depth, quote = [], 0, 0, None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def discover_methods(packages: list[PackageInfo]) -> tuple[list[Method], dict[str, str]]:
    """Every method the packages declare (one per package and name, in package order:
    aggregate then assign) and their default options (a later package overrides)."""
    methods: list[Method] = []
    options: dict[str, str] = {}
    for pkg in packages:
        for kind, value in (("aggregate", pkg.aggregate), ("assign", pkg.assign)):
            declared: dict[str, str] = {}
            for name, function in parse_methods(pkg.name, value):
                declared.pop(name, None)  # a later entry overrides and moves to the end
                declared[name] = function
            methods += [
                Method(name, function, pkg.name, pkg.version, kind)
                for name, function in declared.items()
            ]
        options.update(parse_options(pkg.options, pkg.name))
    return methods, options


# ------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class _Resolved:
    packages: tuple[PackageInfo, ...]
    methods: dict[str, tuple[Method, ...]]  # kind -> methods sorted by name
    tables: dict[str, dict[str, str]]  # kind -> name -> pkg::fun
    options: dict[str, str]


class MethodRegistry:
    """The methods and options of each profile, worked out once."""

    def __init__(self, packages: list[PackageInfo], profiles: dict[str, Profile]):
        self._packages = [p for p in packages if p.is_datashield]
        self._profiles = dict(profiles)
        self._resolved = {name: self._resolve(p) for name, p in self._profiles.items()}

    @property
    def profiles(self) -> list[str]:
        return list(self._profiles)

    def methods(self, profile: str, kind: str) -> list[Method]:
        return list(self._get(profile).methods[_kind(kind)])

    def table(self, profile: str, kind: str) -> dict[str, str]:
        """name -> pkg::fun, what expression.check_aggregate/check_assign take."""
        return dict(self._get(profile).tables[_kind(kind)])

    def options(self, profile: str) -> dict[str, str]:
        return dict(self._get(profile).options)

    def packages(self, profile: str) -> list[PackageInfo]:
        return list(self._get(profile).packages)

    def _get(self, profile: str) -> _Resolved:
        try:
            return self._resolved[profile]
        except KeyError:
            raise NotFound(f"Profile '{profile}' not found") from None

    def _resolve(self, profile: Profile) -> _Resolved:
        by_name = {p.name: p for p in self._packages}
        if profile.packages is None:
            chosen = [by_name[n] for n in sorted(by_name)]
        else:
            missing = [n for n in profile.packages if n not in by_name]
            if missing:
                log.warning("profile %s: no DataSHIELD package named %s", profile.name, missing)
            chosen = [by_name[n] for n in dict.fromkeys(profile.packages) if n in by_name]
        declared, options = discover_methods(chosen)
        options.update(profile.options)
        blacklist = set(profile.blacklist)
        methods: dict[str, tuple[Method, ...]] = {}
        tables: dict[str, dict[str, str]] = {}
        for kind in KINDS:
            winners: dict[str, Method] = {}
            for m in declared:
                if m.kind != kind or m.name in blacklist or m.function in blacklist:
                    continue
                if m.name in winners and winners[m.name].package != m.package:
                    log.warning(
                        "profile %s: %s method %s of %s overrides the one of %s",
                        profile.name,
                        kind,
                        m.name,
                        m.package,
                        winners[m.name].package,
                    )
                winners[m.name] = m
            ordered = tuple(winners[n] for n in sorted(winners))
            methods[kind] = ordered
            tables[kind] = {m.name: m.function for m in ordered}
        return _Resolved(tuple(chosen), methods, tables, options)


def _kind(kind: str) -> str:
    k = kind.lower()
    if k not in KINDS:
        raise ValueError(f"kind must be 'aggregate' or 'assign', not {kind!r}")
    return k
