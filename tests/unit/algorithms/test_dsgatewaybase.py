"""Unit tests of the R server package dsGatewayBase (algorithms/R/dsGatewayBase).

The package is used as installed in DSGATEWAY_R_LIB (default: <repo>/.rlib, where
`make rpkg` puts it); these tests install nothing. Each call is evaluated the way the
gateway evaluates it: the client's expression, rewritten to `dsGatewayBase::f(...)`,
parsed and evaluated in the R global environment where the session's symbols live.
Results are compared with the same statistic computed directly in R or with numpy.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
R_LIB = os.environ.get("DSGATEWAY_R_LIB", str(REPO / ".rlib"))
PKG_SRC = REPO / "algorithms" / "R" / "dsGatewayBase"
RSCRIPT = shutil.which("Rscript")

pytestmark = [
    pytest.mark.r,
    pytest.mark.skipif(RSCRIPT is None, reason="Rscript not found"),
    pytest.mark.skipif(
        not (Path(R_LIB) / "dsGatewayBase" / "DESCRIPTION").exists(),
        reason=f"dsGatewayBase is not installed in {R_LIB} (run `make rpkg`)",
    ),
]

# R prelude: load jsonlite, define the gateway-like evaluator and a JSON printer.
_PRELUDE = r"""
suppressPackageStartupMessages(library(jsonlite))
ds_eval <- function(text) {
  tryCatch(list(ok = TRUE, value = eval(parse(text = text), envir = globalenv())),
           error = function(e) list(ok = FALSE, error = conditionMessage(e)))
}
ds_out <- function(x) {
  cat("\n@@JSON@@", jsonlite::toJSON(x, auto_unbox = TRUE, digits = NA, null = "null",
                                     na = "null", force = TRUE), "\n", sep = "")
}
"""


def run_r(code: str, data: dict[str, dict[str, list]] | None = None, tmp: Path | None = None):
    """Run R `code` (which must call ds_out(...) once) and return the decoded JSON.

    `data` maps symbol names to columns; each becomes a data.frame in the global
    environment (string columns become factors, None becomes NA).
    """
    setup = ""
    if data:
        assert tmp is not None
        path = tmp / "data.json"
        path.write_text(json.dumps(data))
        setup = (
            f"local({{ d <- jsonlite::fromJSON({json.dumps(str(path))}, simplifyVector = TRUE)\n"
            "  for (nm in names(d)) {\n"
            "    df <- as.data.frame(lapply(d[[nm]], function(col) {\n"
            "      if (is.character(col)) factor(col) else col }), stringsAsFactors = TRUE)\n"
            "    assign(nm, df, envir = globalenv()) } })\n"
        )
    env = dict(os.environ, R_LIBS_USER=R_LIB, R_LIBS=R_LIB, LANG="C.UTF-8")
    proc = subprocess.run(
        [RSCRIPT, "--vanilla", "-e", _PRELUDE + setup + code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"R failed:\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@JSON@@")]
    assert marker, f"no JSON output:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(marker[-1][len("@@JSON@@") :])


def ds_call(expr: str, setup: str = "", data=None, tmp=None):
    """Evaluate one gateway-rewritten expression; return {'ok', 'value'|'error'}."""
    code = setup + f"\nds_out(ds_eval({json.dumps(expr)}))\n"
    return run_r(code, data=data, tmp=tmp)


def _close(a, b, tol=1e-9):
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)


RNG = np.random.default_rng(20240601)
N = 60
AGE = np.round(RNG.normal(50, 12, N), 2).tolist()
for i in (3, 17, 41):
    AGE[i] = None
BMI = np.round(RNG.normal(26, 4, N), 2).tolist()
SEX = [("f" if v < 0.5 else "m") for v in RNG.random(N)]
GROUP = [["a", "b", "c"][int(v * 3)] for v in RNG.random(N)]
DATA = {"D": {"age": AGE, "bmi": BMI, "sex": SEX, "grp": GROUP}}


def _valid(values):
    return np.array([v for v in values if v is not None], dtype=float)


# ---------------------------------------------------------------------------
# DESCRIPTION: methods, options


def test_description_methods_resolve_to_functions():
    code = f"""
    d <- read.dcf({json.dumps(str(PKG_SRC / "DESCRIPTION"))},
                  fields = c("Package", "Version", "License", "AggregateMethods",
                             "AssignMethods", "Options"))
    split_field <- function(x) trimws(strsplit(gsub("\\\\s+", " ", x), ",")[[1]])
    check <- function(entries) vapply(entries, function(e) {{
      if (grepl("=", e, fixed = TRUE)) {{
        target <- trimws(sub("^[^=]*=", "", e))
        parts <- strsplit(target, "::", fixed = TRUE)[[1]]
        exists(parts[2], envir = asNamespace(parts[1]), inherits = FALSE)
      }} else {{
        e %in% getNamespaceExports("dsGatewayBase")
      }}
    }}, logical(1))
    agg <- split_field(d[1, "AggregateMethods"])
    ass <- split_field(d[1, "AssignMethods"])
    opts <- split_field(d[1, "Options"])
    ds_out(list(package = d[1, "Package"], version = d[1, "Version"],
                agg = as.list(check(agg)), ass = as.list(check(ass)), options = opts,
                agg_names = agg, ass_names = ass))
    """
    out = run_r(code)
    assert out["package"] == "dsGatewayBase"
    assert out["version"] == "0.1.0"
    missing = [k for k, v in {**out["agg"], **out["ass"]}.items() if not v]
    assert not missing, f"methods without a function: {missing}"
    for name in ("meanDS", "dimDS", "colnamesDS", "classDS", "lengthDS", "exists=base::exists"):
        assert name in out["agg_names"]
    assert "c=dsGatewayBase::vectorDS" in out["ass_names"]
    assert "list=base::list" in out["ass_names"]
    opts = dict(o.split("=", 1) for o in out["options"])
    assert opts == {
        "datashield.privacyLevel": "5",
        "default.datashield.privacyControlLevel": '"banana"',
        "default.nfilter.glm": "0.33",
        "default.nfilter.kNN": "3",
        "default.nfilter.string": "80",
        "default.nfilter.subset": "3",
        "default.nfilter.stringShort": "20",
        "default.nfilter.tab": "3",
        "default.nfilter.noise": "0.25",
        "default.nfilter.levels.density": "0.33",
        "default.nfilter.levels.max": "40",
    }


def test_exports_match_description_and_namespace_functions():
    out = run_r(
        """
        ex <- getNamespaceExports("dsGatewayBase")
        ns <- asNamespace("dsGatewayBase")
        is_fun <- vapply(ex, function(f) is.function(get(f, ns)), logical(1))
        ds_out(list(exports = ex, functions = as.list(is_fun)))
        """
    )
    assert all(out["functions"].values())


# ---------------------------------------------------------------------------
# Settings


def test_onload_defaults_and_site_override():
    out = run_r(
        """
        loadNamespace("dsGatewayBase")
        a <- dsGatewayBase::listDisclosureSettingsDS()
        options(nfilter.tab = 10, nfilter.glm = 0.5)
        b <- dsGatewayBase::listDisclosureSettingsDS()
        ds_out(list(a = a, b = b, names = names(a),
                    tab = dsGatewayBase::getDisclosureSetting("nfilter.tab"),
                    default_tab = getOption("default.nfilter.tab")))
        """
    )
    assert out["names"] == [
        "datashield.privacyControlLevel",
        "nfilter.tab",
        "nfilter.subset",
        "nfilter.glm",
        "nfilter.string",
        "nfilter.stringShort",
        "nfilter.kNN",
        "nfilter.levels.density",
        "nfilter.levels.max",
        "nfilter.noise",
        "nfilter.privacy.old",
    ]
    a = out["a"]
    assert a["datashield.privacyControlLevel"] == "banana"
    assert (a["nfilter.tab"], a["nfilter.subset"], a["nfilter.glm"]) == (3, 3, 0.33)
    assert (a["nfilter.string"], a["nfilter.stringShort"], a["nfilter.kNN"]) == (80, 20, 3)
    assert (a["nfilter.levels.density"], a["nfilter.levels.max"]) == (0.33, 40)
    assert (a["nfilter.noise"], a["nfilter.privacy.old"]) == (0.25, 5)
    assert out["b"]["nfilter.tab"] == 10
    assert out["b"]["nfilter.glm"] == 0.5
    assert out["tab"] == 10
    assert out["default_tab"] == 3


def test_onload_keeps_options_set_before_loading():
    out = run_r(
        """
        options(default.nfilter.tab = 7)
        loadNamespace("dsGatewayBase")
        ds_out(list(tab = dsGatewayBase::getDisclosureSetting("nfilter.tab"),
                    subset = getOption("default.nfilter.subset")))
        """
    )
    assert out == {"tab": 7, "subset": 3}


# ---------------------------------------------------------------------------
# Phase 1: dimDS, colnamesDS, classDS, lengthDS, meanDS, exists


def test_dim_colnames_class_length(tmp_path):
    code = """
    ds_out(list(dim = ds_eval('dsGatewayBase::dimDS("D")'),
                dim_ref = dim(D),
                cols = ds_eval('dsGatewayBase::colnamesDS("D")'),
                cls_df = ds_eval('dsGatewayBase::classDS("D")'),
                cls_sex = ds_eval('dsGatewayBase::classDS("D$sex")'),
                cls_age = ds_eval('dsGatewayBase::classDS("D$age")'),
                len = ds_eval('dsGatewayBase::lengthDS("D$age")'),
                exists_yes = ds_eval('base::exists("D")'),
                exists_no = ds_eval('base::exists("nope")')))
    """
    out = run_r(code, data=DATA, tmp=tmp_path)
    assert out["dim"]["value"] == [N, 4] == out["dim_ref"]
    assert out["cols"]["value"] == ["age", "bmi", "sex", "grp"]
    assert out["cls_df"]["value"] == "data.frame"
    assert out["cls_sex"]["value"] == "factor"
    assert out["cls_age"]["value"] == "numeric"
    assert out["len"]["value"] == N
    assert out["exists_yes"]["value"] is True
    assert out["exists_no"]["value"] is False


def test_name_arguments_refuse_code(tmp_path):
    for bad in ("D;1", "D+1", "D$age$", "get", ""):
        out = ds_call(f"dsGatewayBase::dimDS({json.dumps(bad)})", data=DATA, tmp=tmp_path)
        if bad == "get":
            # a plain name is a reference: it resolves (to base::get) like dsBase would
            assert out["ok"]
            continue
        assert not out["ok"], bad
        assert "FAILED" in out["error"]


def test_mean_matches_numpy(tmp_path):
    out = ds_call("dsGatewayBase::meanDS(D$age)", data=DATA, tmp=tmp_path)
    assert out["ok"], out
    v = out["value"]
    valid = _valid(AGE)
    assert list(v) == ["EstimatedMean", "Nmissing", "Nvalid", "Ntotal", "ValidityMessage"]
    assert _close(v["EstimatedMean"], valid.mean())
    assert v["Nmissing"] == 3
    assert v["Nvalid"] == len(valid) == N - 3
    assert v["Ntotal"] == N
    assert v["ValidityMessage"] == "VALID ANALYSIS"


def test_mean_matches_r_and_classes(tmp_path):
    out = run_r(
        """
        r <- eval(parse(text = "dsGatewayBase::meanDS(D$bmi)"), envir = globalenv())
        ds_out(list(mean = r$EstimatedMean, ref = mean(D$bmi, na.rm = TRUE),
                    classes = as.list(vapply(r, function(e) class(e)[1], character(1)))))
        """,
        data=DATA,
        tmp=tmp_path,
    )
    assert _close(out["mean"], out["ref"])
    assert out["classes"] == {
        "EstimatedMean": "numeric",
        "Nmissing": "integer",
        "Nvalid": "integer",
        "Ntotal": "integer",
        "ValidityMessage": "character",
    }


def test_mean_refused_below_nfilter_tab():
    out = ds_call("dsGatewayBase::meanDS(x)", setup="x <- c(1, 2, NA, NA)\n")
    assert not out["ok"]
    assert out["error"] == "FAILED: Nvalid less than nfilter.tab"
    # exactly nfilter.tab valid values pass; zero valid values pass (mean is NaN)
    out = ds_call("dsGatewayBase::meanDS(x)", setup="x <- c(1, 2, 3, NA)\n")
    assert out["ok"] and _close(out["value"]["EstimatedMean"], 2.0)
    out = ds_call("dsGatewayBase::meanDS(x)", setup="x <- c(NA_real_, NA_real_)\n")
    assert out["ok"] and out["value"]["Nvalid"] == 0


def test_mean_site_override_wins(tmp_path):
    setup = "options(nfilter.tab = 10)\nx <- c(1, 2, 3, 4, 5, 6, 7, 8, 9)\n"
    out = ds_call("dsGatewayBase::meanDS(x)", setup=setup)
    assert not out["ok"]
    assert "nfilter.tab" in out["error"]
    out = ds_call("dsGatewayBase::meanDS(x)", setup="options(default.nfilter.tab = 10)\nx <- 1:9\n")
    assert not out["ok"]
    # the un-prefixed site value wins over the default, in both directions
    out = ds_call(
        "dsGatewayBase::meanDS(x)",
        setup="options(default.nfilter.tab = 10, nfilter.tab = 2)\nx <- c(4, 8)\n",
    )
    assert out["ok"] and _close(out["value"]["EstimatedMean"], 6.0)


def test_vector_ds_is_c_and_blocked_when_not_permissive():
    out = ds_call("dsGatewayBase::vectorDS(1, 2, 3)")
    assert out["ok"] and out["value"] == [1, 2, 3]
    out = ds_call(
        "dsGatewayBase::vectorDS(1, 2)",
        setup='options(datashield.privacyControlLevel = "non-permissive")\n',
    )
    assert not out["ok"]
    assert out["error"].startswith("BLOCKED:")
