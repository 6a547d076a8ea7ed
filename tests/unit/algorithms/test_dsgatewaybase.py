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


def test_c_ds_is_what_ds_c_sends_and_as_dsbase_blocked_by_default():
    # dsBaseClient 6.3.3's ds.c sends cDS(list(...)); dsBase allows it only under the
    # 'permissive' or 'avocado' level, so at the default 'banana' it is refused.
    out = ds_call("dsGatewayBase::cDS(base::list(x, y))", setup="x <- c(1, 2)\ny <- 3:5\n")
    assert not out["ok"] and out["error"].startswith("BLOCKED:")
    avocado = 'options(datashield.privacyControlLevel = "avocado")\nx <- c(1, 2)\ny <- 3:5\n'
    out = ds_call("dsGatewayBase::cDS(base::list(x, y))", setup=avocado)
    assert out["ok"] and out["value"] == [1, 2, 3, 4, 5]
    out = ds_call("dsGatewayBase::cDS(base::list(x))", setup=avocado)  # 2 < nfilter.tab
    assert out["ok"] and out["value"] == [None, None]


# ---------------------------------------------------------------------------
# Phase 2: univariate summaries


def test_var_sums_match_numpy(tmp_path):
    out = ds_call("dsGatewayBase::varDS(D$age)", data=DATA, tmp=tmp_path)
    assert out["ok"], out
    v = out["value"]
    valid = _valid(AGE)
    assert list(v) == ["Sum", "SumOfSquares", "Nmissing", "Nvalid", "Ntotal", "ValidityMessage"]
    assert _close(v["Sum"], valid.sum())
    assert _close(v["SumOfSquares"], (valid**2).sum())
    assert (v["Nmissing"], v["Nvalid"], v["Ntotal"]) == (3, N - 3, N)
    # the client's pooled variance from these sums is numpy's sample variance
    n = v["Nvalid"]
    pooled = (v["SumOfSquares"] - v["Sum"] ** 2 / n) / (n - 1)
    assert _close(pooled, valid.var(ddof=1), 1e-9)
    out = ds_call("dsGatewayBase::varDS(x)", setup="x <- c(1, NA, 3)\n")
    assert not out["ok"] and out["error"] == "FAILED: Nvalid less than nfilter.tab"


def test_num_na(tmp_path):
    out = ds_call("dsGatewayBase::numNaDS(D$age)", data=DATA, tmp=tmp_path)
    assert out["value"] == sum(v is None for v in AGE) == 3
    assert ds_call("dsGatewayBase::numNaDS(D$bmi)", data=DATA, tmp=tmp_path)["value"] == 0


def test_is_valid_follows_nfilter_tab():
    setup = (
        "v2 <- c(1, 2); v3 <- c(1, 2, 3); e <- numeric(0)\n"
        'f_ok <- factor(c("a","a","a","b","b","b")); f_bad <- factor(c("a","a","a","b"))\n'
        'f_empty_level <- factor(c("a","a","a"), levels = c("a", "b"))\n'
        "df2 <- data.frame(a = 1:2); df5 <- data.frame(a = 1:5)\n"
        "ds_out(lapply(list(v2 = 'v2', v3 = 'v3', e = 'e', f_ok = 'f_ok', f_bad = 'f_bad',\n"
        "  f_empty_level = 'f_empty_level', df2 = 'df2', df5 = 'df5', lst = 'list(1)'),\n"
        "  function(s) ds_eval(sprintf('dsGatewayBase::isValidDS(%s)', s))$value))\n"
    )
    out = run_r(setup)
    assert out == {
        "v2": False,
        "v3": True,
        "e": True,
        "f_ok": True,
        "f_bad": False,
        "f_empty_level": True,
        "df2": False,
        "df5": True,
        "lst": False,
    }
    out = run_r("options(nfilter.tab = 4)\nds_out(dsGatewayBase::isValidDS(c(1, 2, 3)))")
    assert out is False


def test_quantile_mean_matches_numpy(tmp_path):
    out = ds_call("dsGatewayBase::quantileMeanDS(D$age)", data=DATA, tmp=tmp_path)
    assert out["ok"]
    valid = _valid(AGE)
    expected = [*np.percentile(valid, [5, 10, 25, 50, 75, 90, 95]).tolist(), valid.mean()]
    assert len(out["value"]) == 8
    for got, want in zip(out["value"], expected, strict=True):
        assert _close(got, want)
    names = run_r(
        "ds_out(names(dsGatewayBase::quantileMeanDS(c(5, 1, 4, 2, 3))))",
    )
    assert names == ["5%", "10%", "25%", "50%", "75%", "90%", "95%", "Mean"]
    out = ds_call("dsGatewayBase::quantileMeanDS(x)", setup="x <- c(1, 2)\n")
    assert out["ok"] and out["value"] is None  # NA: not valid under nfilter.tab
    # three values of which two are missing: the one left is not released either
    out = ds_call("dsGatewayBase::quantileMeanDS(x)", setup="x <- c(1, NA, 7, NA)\n")
    assert out["ok"] and out["value"] is None


def test_quantile_mean_is_identical_to_r_quantile():
    """quantileMeanDS avoids quantile()'s full sort; its numbers must stay identical()
    to quantile(x, probs, na.rm = TRUE) and mean() on every kind of vector: ties,
    integers, 0/1 values, infinities, NA and NaN, short and long vectors."""
    code = """
    probs <- c(0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
    ref <- function(x) {
      valid <- sum(!is.na(x))
      if (length(x) < 3 || (valid > 0 && valid < 3)) return(NA)
      out <- c(stats::quantile(x, probs, na.rm = TRUE), mean(x, na.rm = TRUE))
      names(out) <- c("5%", "10%", "25%", "50%", "75%", "90%", "95%", "Mean")
      out
    }
    set.seed(5)
    bad <- 0
    for (trial in 1:1500) {
      n <- sample(c(3:30, 100, 1000, 10007), 1)
      x <- switch(sample(5, 1), rnorm(n), round(rnorm(n), 1), sample(1:5, n, TRUE),
                  as.numeric(sample(c(0, 1), n, TRUE)), c(rnorm(n - 2), Inf, -Inf))
      if (runif(1) < 0.5) x[sample(n, sample(0:(n - 1), 1))] <- NA
      if (runif(1) < 0.1) x[sample(n, 1)] <- NaN
      if (!identical(dsGatewayBase::quantileMeanDS(x), ref(x))) bad <- bad + 1
    }
    f <- factor(rep(c("a", "b"), 5))
    ds_out(list(bad = bad,
                all_na = identical(dsGatewayBase::quantileMeanDS(rep(NA_real_, 5)),
                                   ref(rep(NA_real_, 5))),
                all_na_int = identical(dsGatewayBase::quantileMeanDS(rep(NA_integer_, 4)),
                                       ref(rep(NA_integer_, 4))),
                named = identical(dsGatewayBase::quantileMeanDS(c(a = 5, b = 1, c = 4, d = 2)),
                                  ref(c(a = 5, b = 1, c = 4, d = 2))),
                factor = ds_eval("dsGatewayBase::quantileMeanDS(f)")$ok))
    """
    out = run_r(code)
    assert out == {
        "bad": 0,
        "all_na": True,
        "all_na_int": True,
        "named": True,
        "factor": False,  # quantile() refuses unordered factors, as before
    }


# ---------------------------------------------------------------------------
# Phase 2: objects


def test_names_levels_ls(tmp_path):
    code = """
    L <- list(alpha = 1, beta = "b")
    a_very_long_object_name_x <- list(z = 1)
    ds_out(list(
      names_list = ds_eval('dsGatewayBase::namesDS("L")'),
      names_df = ds_eval('dsGatewayBase::namesDS("D")'),
      names_vec = ds_eval('dsGatewayBase::namesDS("D$age")'),
      names_long = ds_eval('dsGatewayBase::namesDS("a_very_long_object_name_x")'),
      levels = ds_eval('dsGatewayBase::levelsDS(D$grp)'),
      levels_ref = levels(D$grp),
      ls_all = ds_eval('dsGatewayBase::lsDS(NULL, 1L)'),
      ls_filter = ds_eval('dsGatewayBase::lsDS(search.filter = "a_:A:_", 1L)')))
    """
    out = run_r(code, data=DATA, tmp=tmp_path)
    assert out["names_list"]["value"] == ["alpha", "beta"]
    assert out["names_df"]["value"] == ["age", "bmi", "sex", "grp"]
    assert not out["names_vec"]["ok"]
    assert out["names_vec"]["error"].startswith("The input object is not of class <list>")
    assert not out["names_long"]["ok"]
    assert "too long" in out["names_long"]["error"]
    assert out["levels"]["value"] == {
        "Levels": out["levels_ref"],
        "ValidityMessage": "VALID ANALYSIS",
    }
    assert out["levels_ref"] == sorted(set(GROUP))
    ls_all = out["ls_all"]["value"]
    assert ls_all["environment.searched"] == "R_GlobalEnv"
    assert {"D", "L", "a_very_long_object_name_x"} <= set(ls_all["objects.found"])
    ls_f = out["ls_filter"]["value"]
    assert ls_f["objects.found"] == "a_very_long_object_name_x"  # one name: unboxed by JSON
    assert ls_f["search.filter.final"] == "a*"


def test_levels_refused_when_too_dense_or_not_permissive():
    setup = "x <- factor(c('a', 'b', 'c', 'd', 'a', 'b'))\n"
    out = ds_call("dsGatewayBase::levelsDS(x)", setup=setup)
    assert not out["ok"]
    assert out["error"] == "FAILED: Result length less than nfilter.levels.density of input length."
    out = ds_call(
        "dsGatewayBase::levelsDS(x)", setup=setup + "options(nfilter.levels.density = 1)\n"
    )
    assert out["ok"] and out["value"]["Levels"] == ["a", "b", "c", "d"]
    out = ds_call(
        "dsGatewayBase::levelsDS(x)",
        setup=setup + "options(datashield.privacyControlLevel = 'non-permissive')\n",
    )
    assert not out["ok"] and out["error"].startswith("BLOCKED")


def test_test_obj_exists_and_message(tmp_path):
    code = """
    M <- list(studysideMessage = "x")
    ds_out(list(
      yes = ds_eval('dsGatewayBase::testObjExistsDS("D")')$value,
      no = ds_eval('dsGatewayBase::testObjExistsDS("nope")')$value,
      ok = ds_eval('dsGatewayBase::messageDS("D")')$value,
      msg = ds_eval('dsGatewayBase::messageDS("M")')$value,
      missing = ds_eval('dsGatewayBase::messageDS("nope")')$value))
    """
    out = run_r(code, data=DATA, tmp=tmp_path)
    assert out["yes"] == {"test.obj.exists": True, "test.obj.class": "data.frame"}
    assert out["no"] == {"test.obj.exists": False, "test.obj.class": None}
    assert out["ok"].startswith("ALL OK")
    assert out["msg"].startswith("NOT ALL OK")
    assert out["missing"].startswith("Error: the object")


# ---------------------------------------------------------------------------
# Phase 2: conversions


def test_as_numeric_rules():
    code = """
    f_digits <- factor(c("10", "2", "33", NA))
    f_text <- factor(c("b", "a", "c", "a"))
    ch <- c("1.5", "2")
    ds_out(list(
      f_digits = ds_eval('dsGatewayBase::asNumericDS("f_digits")')$value,
      f_text = ds_eval('dsGatewayBase::asNumericDS("f_text")')$value,
      ch = ds_eval('dsGatewayBase::asNumericDS("ch")')$value,
      int = ds_eval('dsGatewayBase::asNumericDS("D$x")')$value,
      not_string = ds_eval('dsGatewayBase::asNumericDS(f_text)')))
    """
    out = run_r("D <- data.frame(x = c(TRUE, FALSE, TRUE))\n" + code)
    assert out["f_digits"] == [10, 2, 33, None]  # by value
    assert out["f_text"] == [2, 1, 3, 1]  # by factor code
    assert out["ch"] == [1, 2]  # "1.5" is not digits only: codes of as.factor
    assert out["int"] == [1, 0, 1]
    assert not out["not_string"]["ok"]
    assert out["not_string"]["error"] == "ERROR: x.name must be specified as a character string"


def test_as_factor_two_steps(tmp_path):
    code = """
    lv <- ds_eval('dsGatewayBase::asFactorDS1("D$grp")')
    f <- eval(parse(text = 'dsGatewayBase::asFactorDS2("D$grp", "c,b,a,z", FALSE, 1)'),
              envir = globalenv())
    dm <- eval(parse(text = 'dsGatewayBase::asFactorDS2("D$grp", "a,b,c", TRUE, 1)'),
               envir = globalenv())
    many <- ds_eval('dsGatewayBase::asFactorDS1("D$bmi")')
    ds_out(list(lv = lv, levels = levels(f), same = all(as.character(f) == as.character(D$grp)),
                dm_cols = colnames(dm), dm_b = sum(dm[, "DVb"]), ref_b = sum(D$grp == "b"),
                many = many))
    """
    out = run_r(code, data=DATA, tmp=tmp_path)
    assert out["lv"]["value"] == ["a", "b", "c"]
    assert out["levels"] == ["c", "b", "a", "z"]
    assert out["same"] is True
    assert out["dm_cols"] == ["DVb", "DVc"]
    assert out["dm_b"] == out["ref_b"] == GROUP.count("b")
    assert not out["many"]["ok"]
    assert "nfilter.levels.max" in out["many"]["error"] or "too many levels" in out["many"]["error"]


def test_as_factor_level_limits():
    out = ds_call("dsGatewayBase::asFactorDS1('x')", setup="x <- rep(1:50, 3)\n")
    assert not out["ok"]
    assert "nfilter.levels.max: that is 40" in out["error"]
    out = ds_call("dsGatewayBase::asFactorDS1('x')", setup="x <- c(1, 2, 3, 4, 1, 2)\n")
    assert not out["ok"]
    assert "33% of the length" in out["error"]


# ---------------------------------------------------------------------------
# Phase 2: tables


def _counts(values):
    return {k: values.count(k) for k in sorted(set(values))}


def test_table1d_counts_and_refusal(tmp_path):
    out = ds_call("dsGatewayBase::table1DDS(D$grp)", data=DATA, tmp=tmp_path)
    assert out["ok"], out
    row = out["value"]["table"][0]
    expected = _counts(GROUP)
    assert {k: row[k] for k in expected} == expected
    assert row["Total"] == N
    assert out["value"]["message"] == "valid Table"
    out = ds_call("dsGatewayBase::table1DDS(x)", setup="x <- c(1, 1, 1, 2, 2, 2, 3)\n")
    assert not out["ok"] and out["error"] == "invalid table - invalid counts present"


TABLE_ARGS = (
    "rvar.all.unique.levels.transmit = 'a,b,c', cvar.all.unique.levels.transmit = 'f,m', "
    "stvar.all.unique.levels.transmit = NULL, exclude.transmit = NULL, "
)


def test_table_2d_counts_match_python(tmp_path):
    expr = (
        "dsGatewayBase::tableDS(rvar.transmit = 'D$grp', cvar.transmit = 'D$sex', "
        "stvar.transmit = NULL, " + TABLE_ARGS + "useNA.transmit = 'no', "
        "force.nfilter.transmit = NULL)"
    )
    code = f"""
    r <- ds_eval({json.dumps(expr)})
    ds_out(list(ok = r$ok, counts = as.vector(r$value), dimnames = dimnames(r$value),
                cls = class(r$value)))
    """
    out = run_r(code, data=DATA, tmp=tmp_path)
    assert out["ok"] and out["cls"] == "table"
    assert out["dimnames"] == {"rvar": ["a", "b", "c"], "cvar": ["f", "m"]}
    expected = [
        sum(1 for g, s in zip(GROUP, SEX, strict=True) if g == gg and s == ss)
        for ss in ("f", "m")
        for gg in ("a", "b", "c")
    ]
    assert out["counts"] == expected


def test_table_small_cells_and_force_nfilter(tmp_path):
    base = (
        "dsGatewayBase::tableDS(rvar.transmit = 'D$grp', cvar.transmit = NULL, "
        "stvar.transmit = NULL, " + TABLE_ARGS + "useNA.transmit = 'always', "
        "force.nfilter.transmit = {force})"
    )
    smallest = min(_counts(GROUP).values())
    out = ds_call(base.format(force=f"'{smallest + 1}'"), data=DATA, tmp=tmp_path)
    # 1-D and 2-D refusals come back as a message string, as in dsBase
    assert out["ok"]
    assert out["value"] == (
        f"Failed: at least one cell has a non-zero count less than nfilter.tab i.e. {smallest + 1}"
    )
    out = ds_call(base.format(force="'1'"), data=DATA, tmp=tmp_path)
    assert not out["ok"]
    assert out["error"].startswith("Failed: if force.nfilter is non-null it must be >=")
    out = ds_call(base.format(force="NULL"), data=DATA, tmp=tmp_path)
    assert out["ok"] and isinstance(out["value"], list)
    # 3-D: an error
    expr3 = (
        "dsGatewayBase::tableDS(rvar.transmit = 'x', cvar.transmit = 'y', "
        "stvar.transmit = 'z', rvar.all.unique.levels.transmit = '1,2', "
        "cvar.all.unique.levels.transmit = '1,2', stvar.all.unique.levels.transmit = '1,2', "
        "exclude.transmit = NULL, useNA.transmit = 'no', force.nfilter.transmit = NULL)"
    )
    out = ds_call(expr3, setup="x <- c(1,1,2,2,1,2); y <- c(1,2,1,2,1,1); z <- c(1,1,1,2,2,2)\n")
    assert not out["ok"]
    assert "nfilter.tab" in out["error"]


def test_table_assign_and_layout(tmp_path):
    assign_expr = (
        "dsGatewayBase::tableDS.assign(rvar.transmit = 'D$grp', cvar.transmit = 'D$sex', "
        "stvar.transmit = NULL, " + TABLE_ARGS + "useNA.transmit = 'always')"
    )
    code = f"""
    T1 <- eval(parse(text = {json.dumps(assign_expr)}), envir = globalenv())
    lay <- ds_eval('dsGatewayBase::tableDS2(newobj = "T1", rvar.transmit = "D$grp",
                    cvar.transmit = "D$sex", stvar.transmit = NULL)')
    ds_out(list(names = names(T1), counts = T1$counts, dim = T1$dim,
                ref = as.vector(table(D$grp, D$sex, useNA = "always")),
                lay_names = names(lay$value), ids = lay$value$table.cell.IDs,
                lay_dim = lay$value$table.dim,
                dn = names(dimnames(lay$value$table.structure_and_cell.order)),
                leaked = exists("out.table.real")))
    """
    out = run_r(code, data=DATA, tmp=tmp_path)
    assert out["names"] == ["table", "counts", "dim", "dimnames"]
    assert out["counts"] == out["ref"]
    assert out["dim"] == [4, 3]
    assert out["lay_names"] == [
        "table.cell.IDs",
        "table.dim",
        "table.dimnames",
        "table.structure_and_cell.order",
    ]
    assert out["ids"] == list(range(1, 13))
    assert out["lay_dim"] == [4, 3]
    assert out["dn"] == ["D$grp", "D$sex"]
    assert out["leaked"] is False


# ---------------------------------------------------------------------------
# Phase 2: histograms


def test_histogram_small_cells_rule_matches_numpy(tmp_path):
    valid = _valid(AGE)
    lo, hi, nb = 10.0, 90.0, 8
    expr = f"dsGatewayBase::histogramDS2(D$age, {nb}, {lo}, {hi}, 1, 3, 0.25)"
    code = f"""
    r <- ds_eval({json.dumps(expr)})
    ds_out(list(ok = r$ok, counts = r$value$histobject$counts,
                breaks = r$value$histobject$breaks, invalid = r$value$invalidcells,
                cls = class(r$value$histobject)))
    """
    out = run_r(code, data=DATA, tmp=tmp_path)
    assert out["ok"] and out["cls"] == "histogram"
    counts, edges = np.histogram(valid, bins=np.linspace(lo, hi, nb + 1))
    small = (counts > 0) & (counts < 3)
    expected = np.where(small, 0, counts)
    assert out["counts"] == expected.tolist()
    assert out["invalid"] == int(small.sum())
    assert np.allclose(out["breaks"], edges)


def test_histogram_disclosure_checks(tmp_path):
    # too many breaks for nfilter.levels.density
    out = ds_call(
        "dsGatewayBase::histogramDS2(D$age, 50, 0, 100, 1, 3, 0.25)", data=DATA, tmp=tmp_path
    )
    assert not out["ok"] and out["error"].startswith("FAILED: Number of breaks is too big")
    # method 1 needs the site seed
    out = ds_call("dsGatewayBase::histogramDS1(D$age, 1, 3, 0.25)", data=DATA, tmp=tmp_path)
    assert not out["ok"] and "datashield.seed" in out["error"]
    # k too small, noise too small
    out = ds_call("dsGatewayBase::histogramDS1(D$age, 2, 2, 0.25)", data=DATA, tmp=tmp_path)
    assert not out["ok"] and out["error"].startswith("k must be greater than or equal to 3")
    out = ds_call(
        "dsGatewayBase::histogramDS1(D$age, 3, 3, 0.1)",
        setup="options(datashield.seed = 1)\n",
        data=DATA,
        tmp=tmp_path,
    )
    assert not out["ok"] and out["error"] == "'noise' must be greater than or equal to 0.25"
    out = ds_call("dsGatewayBase::histogramDS1(D$sex, 1, 3, 0.25)", data=DATA, tmp=tmp_path)
    assert out["value"] == "The input vector is not a numeric!"


def test_histogram_range_blurred_and_rng_restored(tmp_path):
    valid = _valid(AGE)
    code = """
    options(datashield.seed = 42)
    set.seed(7); before <- .Random.seed
    r1 <- ds_eval('dsGatewayBase::histogramDS1(D$age, 1, 3, 0.25)')$value
    r2 <- ds_eval('dsGatewayBase::histogramDS1(D$age, 1, 3, 0.25)')$value
    ds_out(list(r1 = r1, r2 = r2, restored = identical(before, .Random.seed)))
    """
    out = run_r(code, data=DATA, tmp=tmp_path)
    lo, hi = out["r1"]
    assert out["r1"] == out["r2"]  # same site seed, same answer
    assert out["restored"] is True
    assert lo < valid.min() and hi > valid.max()
    assert valid.min() * 0.95 - 1e-9 <= lo <= valid.min() * 0.99 + 1e-9
    assert valid.max() * 1.01 - 1e-9 <= hi <= valid.max() * 1.05 + 1e-9


def test_knn_centroids_match_brute_force():
    x = RNG.normal(0, 1, 200)
    code = f"""
    x <- c({",".join(repr(float(v)) for v in x)})
    knn <- dsGatewayBase:::.knn_centroids
    ds_out(list(k3 = knn(x, 3), k7 = knn(x, 7)))
    """
    out = run_r(code)
    for k in (3, 7):
        dist = np.abs(x[:, None] - x[None, :])
        idx = np.argsort(dist, axis=1, kind="stable")[:, :k]
        expected = x[idx].mean(axis=1)
        assert np.allclose(out[f"k{k}"], expected, atol=1e-12)


# ---------------------------------------------------------------------------
# Phase 2: correlation and covariance


def _complete_pairs():
    rows = [(a, b) for a, b in zip(AGE, BMI, strict=True) if a is not None and b is not None]
    return np.array(rows, dtype=float)


def test_cor_sums_give_numpy_correlation(tmp_path):
    out = ds_call("dsGatewayBase::corDS('D$age', 'D$bmi')", data=DATA, tmp=tmp_path)
    assert out["ok"], out
    v = out["value"]
    assert list(v) == [
        "sums.of.products",
        "sums",
        "complete.counts",
        "na.counts",
        "sums.of.squares",
    ]
    xy = _complete_pairs()
    n = v["complete.counts"][0][1]
    assert n == len(xy)
    sxy = v["sums.of.products"][0][1]
    sx, sy = v["sums"][0][0], v["sums"][1][0]
    sxx, syy = v["sums.of.squares"][0][0], v["sums.of.squares"][1][0]
    r = (n * sxy - sx * sy) / math.sqrt((n * sxx - sx**2) * (n * syy - sy**2))
    assert _close(r, np.corrcoef(xy[:, 0], xy[:, 1])[0, 1], 1e-9)
    assert v["na.counts"]["Number of NAs in each column"] == [[3, 0]]


def test_cov_casewise_and_pairwise_match_numpy(tmp_path):
    code = """
    E <- D[, c("age", "bmi")]
    E$bmi[c(1, 2)] <- NA
    ds_out(list(case = ds_eval('dsGatewayBase::covDS("E", NULL, "casewise.complete")')$value,
                pair = ds_eval('dsGatewayBase::covDS("E", NULL, "pairwise.complete")')$value,
                ref_case = cov(E, use = "complete.obs"),
                ref_pair = cov(E, use = "pairwise.complete.obs")))
    """
    out = run_r(code, data=DATA, tmp=tmp_path)
    case = out["case"]
    assert case["errorMessage"] is None  # NA when valid
    n = case["complete.counts"][0][1]
    sums = [s[0] for s in case["sums"]]
    sp = np.array(case["sums.of.products"])
    cov = (sp - np.outer(sums, sums) / n) / (n - 1)
    assert np.allclose(cov, np.array(out["ref_case"]), rtol=1e-9)
    pair = out["pair"]
    nn = np.array(pair["complete.counts"], dtype=float)
    s = np.array(pair["sums"])  # s[i][j]: sum of x_i over rows where x_i, x_j present
    sp = np.array(pair["sums.of.products"])
    cov_p = (sp - s * s.T / nn) / (nn - 1)
    assert np.allclose(cov_p, np.array(out["ref_pair"]), rtol=1e-9)
    assert pair["na.counts"]["Number of NAs pairwise"][0][1] == 5


def test_cor_cov_disclosure_checks():
    setup = "b <- c(rep(0, 20), 1, 1); z <- rnorm(22)\nsmall <- data.frame(a = 1:4, b = 4:1)\n"
    out = ds_call("dsGatewayBase::corDS('b', 'z')", setup=setup)
    assert not out["ok"] and "binary" in out["error"]
    out = ds_call("dsGatewayBase::covDS('b', 'z', 'casewise.complete')", setup=setup)
    assert out["ok"]
    assert "binary" in out["value"]["errorMessage"]
    assert out["value"]["sums.of.products"] == [[None, None], [None, None]]
    out = ds_call("dsGatewayBase::corDS('small', NULL)", setup=setup)
    assert not out["ok"] and "ratio of the number of variables" in out["error"]


# ---------------------------------------------------------------------------
# Phase 2: glm


GLM_DATA_SETUP = """
set.seed(3)
n <- 120
G <- data.frame(x1 = rnorm(n), x2 = rnorm(n), g = factor(sample(c("u", "v", "w"), n, TRUE)),
                w = runif(n, 0.5, 2), t = runif(n, 1, 3))
G$y <- 1 + 0.5 * G$x1 - 0.3 * G$x2 + rnorm(n)
G$b <- rbinom(n, 1, plogis(-0.2 + 0.8 * G$x1))
G$cnt <- rpois(n, exp(0.3 + 0.2 * G$x2) * G$t)
G$x1[c(4, 8)] <- NA
G$lt <- log(G$t)
fit_ds <- function(formula_text, family, weights = "NULL", offset = "NULL", data = "NULL") {
  s1 <- eval(parse(text = sprintf("dsGatewayBase::glmDS1(%s, '%s', %s, %s, %s)",
                                  formula_text, family, weights, offset, data)),
             envir = globalenv())
  beta <- rep(0, s1$dimX[2])
  for (i in 1:30) {
    s2 <- eval(parse(text = sprintf("dsGatewayBase::glmDS2(%s, '%s', '%s', %s, %s, %s)",
                                    formula_text, family, paste(beta, collapse = ","),
                                    offset, weights, data)), envir = globalenv())
    step <- solve(s2$info.matrix, s2$score.vect)
    beta <- beta + as.vector(step)
    if (max(abs(step)) < 1e-10) break
  }
  list(s1 = s1, s2 = s2, beta = beta)
}
"""


def test_glm_irls_matches_r_glm():
    code = (
        GLM_DATA_SETUP
        + """
    ga <- fit_ds("y ~ x1 + x2 + g", "gaussian", data = "'G'")
    bi <- fit_ds("G$b ~ G$x1 + G$x2", "binomial", weights = "'G$w'")
    po <- fit_ds("cnt ~ x2", "poisson", offset = "'G$lt'", data = "'G'")
    rga <- glm(y ~ x1 + x2 + g, gaussian, data = G)
    rbi <- suppressWarnings(glm(b ~ x1 + x2, binomial, data = G, weights = w))
    rpo <- glm(cnt ~ x2 + offset(lt), poisson, data = G)
    ds_out(list(ga = ga$beta, rga = unname(coef(rga)), bi = bi$beta, rbi = unname(coef(rbi)),
                po = po$beta, rpo = unname(coef(rpo)),
                dev_ga = ga$s2$dev, rdev_ga = deviance(rga),
                dev_po = po$s2$dev, rdev_po = deviance(rpo),
                s1 = ga$s1, s2_names = names(ga$s2),
                counts = ga$s2[c("numsubs", "Nvalid", "Nmissing", "Ntotal", "disclosure.risk",
                                 "errorMessage2")]))
    """
    )
    out = run_r(code)
    for ours, ref in (("ga", "rga"), ("bi", "rbi"), ("po", "rpo")):
        assert np.allclose(out[ours], out[ref], rtol=1e-7, atol=1e-9), ours
    assert _close(out["dev_ga"], out["rdev_ga"], 1e-7)
    assert _close(out["dev_po"], out["rdev_po"], 1e-7)
    s1 = out["s1"]
    assert s1["dimX"] == [118, 5]
    assert s1["coef.names"] == ["(Intercept)", "x1", "x2", "gv", "gw"]
    assert s1["errorMessage"] == "No errors"
    assert s1["Xpar.invalid"] == [0, 0, 0, 0, 0]
    assert out["s2_names"] == [
        "family",
        "info.matrix",
        "score.vect",
        "numsubs",
        "dev",
        "Nvalid",
        "Nmissing",
        "Ntotal",
        "disclosure.risk",
        "errorMessage2",
    ]
    assert out["counts"] == {
        "numsubs": 118,
        "Nvalid": 118,
        "Nmissing": 2,
        "Ntotal": 120,
        "disclosure.risk": 0,
        "errorMessage2": "No errors",
    }


def test_glm_disclosure_traps():
    code = (
        GLM_DATA_SETUP
        + """
    G$rare <- c(1, 1, rep(0, n - 2))
    s1 <- ds_eval("dsGatewayBase::glmDS1(rare ~ x2, 'binomial', NULL, NULL, 'G')")$value
    s2 <- ds_eval("dsGatewayBase::glmDS2(rare ~ x2, 'binomial', '0,0', NULL, NULL, 'G')")$value
    sx <- ds_eval("dsGatewayBase::glmDS1(y ~ rare, 'gaussian', NULL, NULL, 'G')")$value
    H <- G[1:6, ]
    sat <- ds_eval("dsGatewayBase::glmDS1(y ~ x2 + x1 + g, 'gaussian', NULL, NULL, 'H')")$value
    bad_family <- ds_eval("dsGatewayBase::glmDS1(y ~ x2, 'quit', NULL, NULL, 'G')")
    ds_out(list(s1 = s1[c("y.invalid", "errorMessage")],
                s2 = s2[c("info.matrix", "score.vect", "disclosure.risk", "errorMessage2")],
                sx = sx[c("Xpar.invalid", "errorMessage")],
                sat = sat[c("glm.saturation.invalid", "errorMessage")],
                bad_family = bad_family))
    """
    )
    out = run_r(code)
    assert out["s1"] == {
        "y.invalid": 1,
        "errorMessage": "STUDY DATA OR APPLIED MODEL INVALID FOR THIS SOURCE",
    }
    s2 = out["s2"]
    assert s2["info.matrix"] is None and s2["score.vect"] is None  # both destroyed
    assert s2["disclosure.risk"] == 1
    assert s2["errorMessage2"][0].startswith("ERROR: y vector is binary")
    assert s2["errorMessage2"][-1].startswith("MODEL FAILED")
    assert out["sx"]["Xpar.invalid"] == [0, 1]
    assert out["sat"]["glm.saturation.invalid"] == 1
    assert not out["bad_family"]["ok"]
    assert "family" in out["bad_family"]["error"]


GLM_REFERENCE = r"""
# dsBase's construction, written out: glm() with one iteration builds X and y, then
# the iteration's quantities are computed from them with t(X) %*% ... (dsBase 6.3.3's
# glmDS2 does exactly this). Our glmDS1/glmDS2 build the model without fitting it.
ref_model <- function(f, family, data) {
  fit <- suppressWarnings(glm(f, family = family, x = TRUE, control = glm.control(maxit = 1),
                              contrasts = NULL, data = data))
  list(X = as.matrix(fit$x), y = as.vector(fit$y), f = fit$family,
       coef.names = names(fit$coefficients))
}
ref_step <- function(f, family, beta, w = NULL, o = NULL, data = NULL) {
  m <- ref_model(f, family, data)
  cc <- complete.cases(model.frame(f, data = data, na.action = na.pass))
  ww <- if (is.null(w)) rep(1, length(m$y)) else w[cc]
  oo <- if (is.null(o)) rep(0, length(m$y)) else o[cc]
  keep <- complete.cases(cbind(ww, oo))
  X <- m$X[keep, , drop = FALSE]; y <- m$y[keep]; ww <- ww[keep]; oo <- oo[keep]
  lp <- X %*% beta + oo
  mu <- m$f$linkinv(lp); me <- m$f$mu.eta(lp)
  W <- as.vector(me^2 / m$f$variance(mu)) * ww
  list(info = t(X) %*% (W * X), score = t(X) %*% matrix(W * (y - mu) / me),
       dev = sum(m$f$dev.resids(y, mu, rep(1, length(y))) * ww), numsubs = length(y),
       Nvalid = sum(cc), Ntotal = length(cc), dimX = dim(m$X), coef.names = m$coef.names)
}
"""


def test_glm_steps_equal_the_one_iteration_glm_construction():
    """glmDS1/glmDS2 build X and y without calling glm(); every quantity must equal
    what dsBase's glm(maxit = 1, x = TRUE) construction gives, names and dimnames
    included: missing values, unused factor levels after dropping rows, a factor
    response, interactions, no intercept, weights and offsets with missing values,
    other families."""
    code = (
        GLM_DATA_SETUP
        + GLM_REFERENCE
        + """
    G$y <- abs(G$y) + 0.1
    G$s <- G$x2 > 0
    G$bf <- factor(ifelse(G$b == 1, "yes", "no"))
    G$w[c(10, 11)] <- NA
    G$lt[20] <- NA
    G$g2 <- factor(as.character(G$g), levels = c("u", "v", "w", "z"))
    G$g2[G$g == "w"] <- NA       # level w only where g2 is NA, z never: both dropped
    cases <- list(
      list("y ~ x1 + x2 + g", "gaussian", NULL, NULL, "G"),
      list("y ~ x1 * g + s", "gaussian", "G$w", NULL, "G"),
      list("y ~ x1 + g2", "gaussian", NULL, NULL, "G"),
      list("G$b ~ G$x1 + G$x2", "binomial", "G$w", NULL, NULL),
      list("G$bf ~ G$x1 + G$g", "binomial", NULL, NULL, NULL),
      list("cnt ~ x2", "poisson", NULL, "G$lt", "G"),
      list("cnt ~ x2 + g", "poisson", "G$w", "G$lt", "G"),
      list("cnt ~ 1", "poisson", NULL, NULL, "G"),
      list("cnt ~ x2 - 1", "quasipoisson", NULL, NULL, "G"),
      list("y ~ x1", "Gamma", NULL, NULL, "G"))
    q <- function(x) if (is.null(x)) "NULL" else sprintf("'%s'", x)
    out <- lapply(cases, function(cs) {
      f <- as.formula(cs[[1]], env = globalenv())
      data <- if (is.null(cs[[5]])) NULL else get(cs[[5]])
      w <- if (is.null(cs[[3]])) NULL else eval(parse(text = cs[[3]]))
      o <- if (is.null(cs[[4]])) NULL else eval(parse(text = cs[[4]]))
      s1 <- eval(parse(text = sprintf("dsGatewayBase::glmDS1(%s, '%s', %s, %s, %s)",
                                      cs[[1]], cs[[2]], q(cs[[3]]), q(cs[[4]]), q(cs[[5]]))))
      beta <- round(seq(0.3, -0.2, length.out = s1$dimX[2]), 3)
      s2 <- eval(parse(text = sprintf("dsGatewayBase::glmDS2(%s, '%s', '%s', %s, %s, %s)",
                                      cs[[1]], cs[[2]], paste(beta, collapse = ","),
                                      q(cs[[4]]), q(cs[[3]]), q(cs[[5]]))))
      ref <- ref_step(f, cs[[2]], beta, w, o, data)
      list(case = cs[[1]],
           dims = identical(s1$dimX, ref$dimX), names = identical(s1$coef.names, ref$coef.names),
           info = isTRUE(all.equal(s2$info.matrix, ref$info, tolerance = 1e-13)),
           score = isTRUE(all.equal(s2$score.vect, ref$score, tolerance = 1e-13)),
           dimnames = identical(dimnames(s2$info.matrix), dimnames(ref$info)) &&
             identical(dimnames(s2$score.vect), dimnames(ref$score)),
           dev = isTRUE(all.equal(s2$dev, ref$dev, tolerance = 1e-13)),
           counts = identical(c(s2$numsubs, s2$Nvalid, s2$Ntotal),
                              c(ref$numsubs, ref$Nvalid, ref$Ntotal)),
           family = identical(s2$family$family, cs[[2]]) && is.function(s2$family$linkinv))
    })
    bad_y <- ds_eval("dsGatewayBase::glmDS2(cnt ~ x2, 'binomial', '0,0', NULL, NULL, 'G')")
    ref_bad <- tryCatch(glm(cnt ~ x2, binomial, data = G), error = function(e) conditionMessage(e))
    ds_out(list(cases = out, bad_y = bad_y$error, ref_bad = ref_bad))
    """
    )
    out = run_r(code)
    for case in out["cases"]:
        failed = [k for k, v in case.items() if v is False]
        assert not failed, (case["case"], failed)
    # an invalid response stops with glm's own message
    assert out["bad_y"].endswith(out["ref_bad"])
    assert out["ref_bad"] == "y values must be 0 <= y <= 1"


# ---------------------------------------------------------------------------
# Phase 2: data frame subsets


def test_data_frame_subset(tmp_path):
    code = """
    r1 <- ds_eval('dsGatewayBase::dataFrameSubsetDS1("D", "D$age", "50", 5, NULL, NULL, FALSE)')
    S <- eval(parse(text = 'dsGatewayBase::dataFrameSubsetDS2("D", "D$age", "50", 5, NULL, NULL,
                                                              FALSE)'), envir = globalenv())
    SN <- eval(parse(text = 'dsGatewayBase::dataFrameSubsetDS2("D", "D$age", "50", 5, NULL, NULL,
                                                               TRUE)'), envir = globalenv())
    K <- eval(parse(text = 'dsGatewayBase::dataFrameSubsetDS2("D", "D$sex", "D$sex", 1, "1,2",
                                                              NULL, FALSE)'), envir = globalenv())
    R <- eval(parse(text = 'dsGatewayBase::dataFrameSubsetDS2("D", "ONES", "ONES", 1, NULL, "3",
                                                              FALSE)'), envir = globalenv())
    small <- ds_eval('dsGatewayBase::dataFrameSubsetDS2("D", "D$age", "1000", 5, NULL, NULL,
                                                        FALSE)')
    both <- ds_eval('dsGatewayBase::dataFrameSubsetDS2("D", "D$age", "0", 5, "1", "2", FALSE)')
    ds_out(list(r1 = r1$value, n = nrow(S), ages = S$age, nn = nrow(SN), kcols = names(K),
                krows = nrow(K), rcols = names(R), small = small, both = both))
    """
    out = run_r(code, data=DATA, tmp=tmp_path)
    valid = _valid(AGE)
    assert out["r1"] == "Subsetting undertaken without problems"
    assert out["n"] == int((valid > 50).sum())
    assert sorted(out["ages"]) == sorted(valid[valid > 50].tolist())
    assert out["nn"] == int((valid > 50).sum()) + 3  # NAs kept
    assert out["kcols"] == ["age", "bmi"] and out["krows"] == N
    assert out["rcols"] == ["age", "bmi", "grp"]
    assert not out["small"]["ok"]
    assert out["small"]["error"] == "Subset to be created is too small (<nfilter.subset)"
    assert not out["both"]["ok"]
    assert out["both"]["error"] == "You can either specify keep.cols or rm.cols, not both"


def test_data_frame_subset_difference_warning_and_bad_columns(tmp_path):
    # dropping only the 3 rows with missing age: difference 3 is not < nfilter.subset 3
    out = ds_call(
        "dsGatewayBase::dataFrameSubsetDS1('D', 'D$age', '-1000', 5, NULL, NULL, FALSE)",
        data=DATA,
        tmp=tmp_path,
    )
    assert out["value"] == "Subsetting undertaken without problems"
    out = ds_call(
        "dsGatewayBase::dataFrameSubsetDS1('D', 'D$age', '-1000', 5, NULL, NULL, FALSE)",
        setup="options(nfilter.subset = 4)\n",
        data=DATA,
        tmp=tmp_path,
    )
    assert isinstance(out["value"], list) and len(out["value"]) == 10
    assert out["value"][0].startswith("Warning: DataSHIELD monitors every session")
    out = ds_call(
        "dsGatewayBase::dataFrameSubsetDS2('D', 'D$age', '0', 5, '1,x', NULL, FALSE)",
        data=DATA,
        tmp=tmp_path,
    )
    assert not out["ok"]
    assert out["error"] == "FAILED: keep.cols argument contains non-numerics (disclosure risk)"
    out = ds_call(
        "dsGatewayBase::dataFrameSubsetDS2('D', 'D$age', '0', 9, NULL, NULL, FALSE)",
        data=DATA,
        tmp=tmp_path,
    )
    assert not out["ok"] and out["error"].startswith("FAILED: Boolean.operator must be")


# ---------------------------------------------------------------------------
# Contract with the gateway: the expressions dsBaseClient sends pass the DataSHIELD
# grammar with this package's declared methods, and the rewritten R code runs.

CLIENT_ASSIGNS = [
    (
        "T1",
        'tableDS.assign(rvar.transmit = "D$grp", cvar.transmit = "D$sex", stvar.transmit = NULL, '
        'rvar.all.unique.levels.transmit = "a,b,c", cvar.all.unique.levels.transmit = "f,m", '
        "stvar.all.unique.levels.transmit = NULL, exclude.transmit = NULL, "
        'useNA.transmit = "always")',
    ),
    ("N1", 'asNumericDS("D$sex")'),
    ("F1", 'asFactorDS2("D$grp", "a,b,c", FALSE, 1)'),
    ("S1", 'dataFrameSubsetDS2("D", "D$age", "50", 5, NULL, NULL, FALSE)'),
    ("V1", "c(1,2,3)"),
    ("L1", "list(D$age, D$bmi)"),
]
CLIENT_AGGREGATES = [
    "meanDS(D$age)",
    "varDS(D$age)",
    'dimDS("D")',
    'colnamesDS("D")',
    'classDS("D$sex")',
    'lengthDS("D$age")',
    'exists("D")',
    "numNaDS(D$age)",
    "isValidDS(D$age)",
    "quantileMeanDS(D$age)",
    'namesDS("D")',
    "levelsDS(D$grp)",
    'lsDS(search.filter = "_:A:_", 1L)',
    "listDisclosureSettingsDS()",
    'asFactorDS1("D$grp")',
    "table1DDS(D$grp)",
    'tableDS(rvar.transmit = "D$grp", cvar.transmit = "D$sex", stvar.transmit = NULL, '
    'rvar.all.unique.levels.transmit = "a,b,c", cvar.all.unique.levels.transmit = "f,m", '
    "stvar.all.unique.levels.transmit = NULL, exclude.transmit = NULL, "
    'useNA.transmit = "always", force.nfilter.transmit = NULL)',
    'tableDS2(newobj = "T1", rvar.transmit = "D$grp", cvar.transmit = "D$sex", '
    "stvar.transmit = NULL)",
    "histogramDS1(D$age,1,3,0.25)",
    "histogramDS2(D$age,8,10.5,90.25,1,3,0.25)",
    'corDS("D$age", "D$bmi")',
    'covDS("D$age", "D$bmi", "pairwise.complete")',
    'glmDS1(D$bmi ~ D$age + D$sex, "gaussian", NULL, NULL, NULL)',
    'glmDS2(D$bmi ~ D$age + D$sex, "gaussian", "20,-0.01,1.5e-05", NULL, NULL, NULL)',
    'glmDS1(bmi ~ age * sex, "gaussian", NULL, NULL, "D")',
    'dataFrameSubsetDS1("D", "D$age", "50", 5, NULL, NULL, FALSE)',
    'testObjExistsDS("T1")',
    'messageDS("T1")',
    "isNaDS(D$age)",
    "checkNegValueDS(D$bmi)",
]


def test_client_expressions_pass_gateway_grammar_and_run(tmp_path):
    expression = pytest.importorskip("gateway.node.expression")
    methods = pytest.importorskip("gateway.node.methods")
    fields = run_r(
        f"""
        d <- read.dcf({json.dumps(str(PKG_SRC / "DESCRIPTION"))},
                      fields = c("AggregateMethods", "AssignMethods"))
        ds_out(list(agg = d[1, 1], ass = d[1, 2]))
        """
    )
    agg = dict(methods.parse_methods("dsGatewayBase", fields["agg"]))
    ass = dict(methods.parse_methods("dsGatewayBase", fields["ass"]))
    lines = ["options(datashield.seed = 1)", "res <- list()"]
    for symbol, expr in CLIENT_ASSIGNS:
        code = expression.check_assign(expr, ass)
        assert "dsGatewayBase::" in code or "base::" in code
        lines.append(f"res[[{json.dumps(symbol)}]] <- ds_eval({json.dumps(code)})")
        lines.append(
            f"if (res[[{json.dumps(symbol)}]]$ok) "
            f"assign({json.dumps(symbol)}, res[[{json.dumps(symbol)}]]$value, envir = globalenv())"
        )
    for i, expr in enumerate(CLIENT_AGGREGATES):
        code = expression.check_aggregate(expr, agg)
        lines.append(f"res[[{json.dumps(str(i))}]] <- ds_eval({json.dumps(code)})")
    lines.append("ds_out(lapply(res, function(r) if (r$ok) 'ok' else r$error))")
    out = run_r("\n".join(lines), data=DATA, tmp=tmp_path)
    failed = {k: v for k, v in out.items() if v != "ok"}
    assert not failed, failed
    assert len(out) == len(CLIENT_ASSIGNS) + len(CLIENT_AGGREGATES)
