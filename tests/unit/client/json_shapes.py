"""Comparing what `gateway.client.rds.to_python` gives with what the Opal face's JSON
gives (decoded as `algorithms` decodes it): the same structure, the same strings,
booleans and missing values, and the same numbers up to the JSON's precision (jsonlite
writes 15 significant digits; the RDS bytes carry the whole double)."""

from __future__ import annotations

import math
from typing import Any


def mismatches(ours: Any, theirs: Any, path: str = "$", rel: float = 0.0) -> list[str]:
    """Where `ours` (from RDS) and `theirs` (from JSON) differ; empty if they agree.
    With `rel`, numbers may also differ by that much (relative)."""
    if isinstance(ours, bool) or isinstance(theirs, bool):
        same = type(ours) is type(theirs) and ours == theirs
        return [] if same else [f"{path}: {ours!r} != {theirs!r}"]
    if isinstance(ours, int | float) and isinstance(theirs, int | float):
        if isinstance(ours, float) and math.isnan(ours):
            ok = isinstance(theirs, float) and math.isnan(theirs)
        elif isinstance(ours, float) and math.isinf(ours):
            ok = ours == theirs
        else:
            ok = float(f"{ours:.15g}") == float(theirs) or (
                rel > 0 and math.isclose(ours, theirs, rel_tol=rel, abs_tol=rel)
            )
        return [] if ok else [f"{path}: {ours!r} != {theirs!r}"]
    if ours is None or theirs is None:
        return [] if ours is theirs else [f"{path}: {ours!r} != {theirs!r}"]
    if isinstance(ours, str) or isinstance(theirs, str):
        return [] if ours == theirs else [f"{path}: {ours!r} != {theirs!r}"]
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{path}: length {len(ours)} != {len(theirs)}"]
        out: list[str] = []
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            out += mismatches(a, b, f"{path}[{i}]", rel)
        return out
    if isinstance(ours, dict) and isinstance(theirs, dict):
        if list(ours) != list(theirs):
            return [f"{path}: keys {list(ours)} != {list(theirs)}"]
        out = []
        for key in ours:
            out += mismatches(ours[key], theirs[key], f"{path}.{key}", rel)
        return out
    return [f"{path}: {type(ours).__name__} {ours!r:.80} != {type(theirs).__name__} {theirs!r:.80}"]
