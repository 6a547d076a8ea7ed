"""gateway.client.rds: R's serialize() bytes read in Python.

The values are serialized by real R (Rscript): general R objects, and what every
dsGatewayBase function returns. For each, the reader must give the same Python value
the gateway's Opal face gives for it (R's JSON, with the node's own R helper, decoded
as `algorithms` decodes it), up to the JSON's 15 significant digits; the faithful tree
(`unserialize`) must keep types, attributes, NA and NaN.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from algorithms._rvalues import decode
from gateway.client import rds
from gateway.client.errors import ProtocolError, RDSError
from gateway.node.rworker import _R_HELPERS
from tests.unit.client.json_shapes import mismatches

REPO = Path(__file__).resolve().parents[3]
R_LIB = os.environ.get("DSGATEWAY_R_LIB", str(REPO / ".rlib"))
RSCRIPT = shutil.which("Rscript")

needs_r = pytest.mark.skipif(RSCRIPT is None, reason="Rscript not found")

# Each case: name = R expression, evaluated in the global environment after SETUP.
GENERAL = {
    "double": "1/3",
    "doubles with NA, NaN, Inf": "c(1.5, NA, NaN, Inf, -Inf, -0, 1e-300, 2^60)",
    "integers with NA": "c(1L, NA, -2147483647L)",
    "compact sequence": "1:10",
    "compact real sequence": "as.numeric(1:5)",
    "logicals": "c(TRUE, FALSE, NA)",
    "one logical": "NA",
    "strings": 'c("a", NA, "\u00e9t\u00e9", "")',
    "latin1 string": 'iconv("caf\u00e9", "UTF-8", "latin1")',
    "deferred strings": "as.character(c(1:3, 10L))",
    "named vector": "c(a = 1, b = 2)",
    "factor": 'factor(c("x", NA, "y", "x"))',
    "ordered factor": 'factor(c("lo", "hi"), levels = c("lo", "hi"), ordered = TRUE)',
    "one-level factor": 'factor("only")',
    "matrix": 'matrix(c(1.5, NA, 3, 4, 5, 6), 2, dimnames = list(c("r1", "r2"), NULL))',
    "one-cell matrix": "matrix(5, 1, 1)",
    "logical matrix": "matrix(c(TRUE, NA), 2)",
    "array": "array(1:24, 2:4)",
    "1-d array": "array(1:3, 3)",
    "NULL": "NULL",
    "empty vector": "integer(0)",
    "empty list": "list()",
    "empty named list": "setNames(list(), character(0))",
    "list": 'list(1, "a", NULL, list())',
    "named list": 'list(a = 1, b = NULL, c = list(d = 1:2), e = "x")',
    "partly named list": "list(a = 1, 2, a = 3)",
    "data frame": (
        'data.frame(x = c(1, NA, 3), f = factor(c("u", NA, "v")), l = c(TRUE, NA, FALSE),'
        ' s = c("q", NA, "r"), stringsAsFactors = FALSE)'
    ),
    "data frame with row names": 'data.frame(x = 1:2, row.names = c("a", "b"))',
    "subset data frame": "data.frame(a = 1:5)[c(2, 4), , drop = FALSE]",
    "empty data frame": "data.frame(a = 1:5)[0, , drop = FALSE]",
    "date": 'as.Date(c("2020-01-02", NA))',
    "raw": "as.raw(c(1, 2, 255))",
    "table 1-d": 'table(c("a", "b", "a"))',
    "table 2-d with NA": "table(c(1, 2, 2, NA), c('x', 'y', 'y', 'x'), useNA = 'always')",
    "family": "binomial()",
    "histogram": "hist(c(1, 2, 2, 3, 5), plot = FALSE)",
    "htest": "t.test(c(1, 2, 3, 4, 9))",
    "formula": "y ~ x + z",
    "call": "quote(f(x, y = 2))",
    "symbol": "as.name('abc')",
    "environment": "new.env()",
    "function": "function(x, y = 2) x + y",
    "list with a function": "list(a = 1, f = mean)",
    "classed list": 'structure(list(a = 1), class = c("foo", "list"))',
    "unknown class": 'structure(list(a = 1), class = "foo")',
    "deep list": "Reduce(function(acc, i) list(acc), 1:50, 0)",
    "long vector": "seq(0, 1, length.out = 100000)",
}

# The one deliberate difference: (JSON value, ours).
FUNCTIONS = {
    "function": (["function (x, y = 2) ", "x + y"], None),
    "list with a function": (
        {"a": 1, "f": ["function (x, ...) ", 'UseMethod("mean")']},
        {"a": 1.0, "f": None},
    ),
}

# What dsGatewayBase returns, called as the gateway calls it.
SERVER = {
    "dimDS": "dsGatewayBase::dimDS('D')",
    "colnamesDS": "dsGatewayBase::colnamesDS('D')",
    "classDS": "dsGatewayBase::classDS('D$f')",
    "lengthDS": "dsGatewayBase::lengthDS('D$x')",
    "namesDS": "dsGatewayBase::namesDS('D')",
    "levelsDS": "dsGatewayBase::levelsDS(D$f)",
    "isValidDS": "dsGatewayBase::isValidDS(D$x)",
    "lsDS": "dsGatewayBase::lsDS(NULL, 1L)",
    "exists": "base::exists('D')",
    "numNaDS": "dsGatewayBase::numNaDS(D$x)",
    "meanDS": "dsGatewayBase::meanDS(D$x)",
    "varDS": "dsGatewayBase::varDS(D$x)",
    "quantileMeanDS": "dsGatewayBase::quantileMeanDS(D$x)",
    "table1DDS": "dsGatewayBase::table1DDS(D$f)",
    "asFactorDS1": "dsGatewayBase::asFactorDS1('D$g')",
    "asFactorDS2": "dsGatewayBase::asFactorDS2('D$g', '1,2,3', FALSE, 1)",
    "asFactorDS2 dummies": "dsGatewayBase::asFactorDS2('D$g', '1,2,3', TRUE, 1)",
    "tableDS": "dsGatewayBase::tableDS('D$f', 'D$l', NULL, NULL, NULL, NULL, NULL, 'always', NULL)",
    "tableDS 1-d": "dsGatewayBase::tableDS('D$f', NULL, NULL, NULL, NULL, NULL, NULL, 'no', NULL)",
    "tableDS refused": "dsGatewayBase::tableDS('D$g', 'D$f', NULL, NULL, NULL, NULL, NULL, 'no', "
    "50)",
    "tableDS.assign": "dsGatewayBase::tableDS.assign('D$f', 'D$l', NULL, NULL, NULL, NULL, NULL, "
    "'no')",
    "histogramDS1": "dsGatewayBase::histogramDS1(D$x, 1, 3, 0.25)",
    "histogramDS2": "dsGatewayBase::histogramDS2(D$x, 5, 0, 100, 1, 3, 0.25)",
    "corDS": "dsGatewayBase::corDS('D$x', 'D$y')",
    "covDS": "dsGatewayBase::covDS('D$x', 'D$y', 'pairwise.complete')",
    "glmDS1": "dsGatewayBase::glmDS1(D$y ~ D$x + D$f, 'gaussian', NULL, NULL, NULL)",
    "glmDS2": "dsGatewayBase::glmDS2(D$y ~ D$x + D$f, 'gaussian', '1,0.5,0,0', NULL, NULL, NULL)",
    "glmDS2 binomial": "dsGatewayBase::glmDS2(D$l ~ D$x, 'binomial', '0,0', NULL, NULL, NULL)",
    "dataFrameSubsetDS1": (
        "dsGatewayBase::dataFrameSubsetDS1('D', 'D$x', '50', 5, NULL, NULL, FALSE)"
    ),
    "dataFrameSubsetDS2": (
        "dsGatewayBase::dataFrameSubsetDS2('D', 'D$x', '50', 5, '1,2', NULL, FALSE)"
    ),
    "asNumericDS": "dsGatewayBase::asNumericDS('D$f')",
    "vectorDS": "dsGatewayBase::vectorDS(1, 2, 3)",
    "listDisclosureSettingsDS": "dsGatewayBase::listDisclosureSettingsDS()",
    "testObjExistsDS": "dsGatewayBase::testObjExistsDS('D')",
}

SETUP = """
set.seed(11)
rows <- 60
D <- data.frame(x = round(runif(rows, 0, 100), 3), y = rnorm(rows),
                f = factor(sample(c("a", "b", "c"), rows, TRUE)),
                l = sample(c(TRUE, FALSE), rows, TRUE), g = sample(1:3, rows, TRUE))
D$x[c(3, 9)] <- NA
options(datashield.seed = 99)
"""


def r_values(cases: dict[str, str]) -> dict[str, dict]:
    """{case: {"rds": bytes, "json": the node's JSON text or None, "error": ...}}."""
    code = f"""
    suppressPackageStartupMessages(library(jsonlite))
    helpers <- eval(parse(text = {json.dumps(_R_HELPERS)}))
    {SETUP}
    cases <- fromJSON({json.dumps(json.dumps(cases))})
    out <- lapply(cases, function(expr) tryCatch({{
      value <- suppressWarnings(eval(parse(text = expr), envir = globalenv()))
      list(rds = base64_enc(helpers$to_rds(value)),
           json = tryCatch(helpers$to_json(value), error = function(e) NULL))
    }}, error = function(e) list(error = conditionMessage(e))))
    cat(toJSON(out, auto_unbox = TRUE, null = "null"))
    """
    env = dict(os.environ, R_LIBS_USER=R_LIB, R_LIBS=R_LIB, LANG="C.UTF-8")
    done = subprocess.run(
        [RSCRIPT, "--vanilla", "-e", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for name, value in out.items():
        assert "error" not in value, (name, value)
        value["rds"] = base64.b64decode(value["rds"])
    return out


@pytest.fixture(scope="module")
def general():
    return r_values(GENERAL)


@pytest.fixture(scope="module")
def server_values():
    return r_values(SERVER)


@pytest.mark.r
@needs_r
@pytest.mark.parametrize("case", list(GENERAL))
def test_general_values_read_as_the_opal_face_gives_them(general, case):
    value = general[case]
    ours = rds.loads(value["rds"])
    if value["json"] is None:
        # R's JSON writers stop on it (complex numbers); nothing to compare with
        return
    theirs = decode(json.loads(value["json"]))
    if case in FUNCTIONS:
        # toJSON writes a function's deparsed source; the reader cannot: None
        assert theirs == FUNCTIONS[case][0] and ours == FUNCTIONS[case][1]
        return
    assert not mismatches(ours, theirs), (case, mismatches(ours, theirs)[:5])


@pytest.mark.r
@needs_r
@pytest.mark.parametrize("case", list(SERVER))
def test_every_server_function_reads_as_through_the_opal_face(server_values, case):
    value = server_values[case]
    ours = rds.loads(value["rds"])
    theirs = decode(json.loads(value["json"]))
    assert not mismatches(ours, theirs), (case, mismatches(ours, theirs)[:5])


@pytest.mark.r
@needs_r
def test_the_tree_keeps_types_attributes_and_missing_values(general, server_values):
    x = rds.unserialize(general["doubles with NA, NaN, Inf"]["rds"])
    assert x.type == "double"
    assert x.value[0] == 1.5 and x.value[1] is None and math.isnan(x.value[2])
    assert x.value[3:5] == [math.inf, -math.inf]
    assert math.copysign(1, x.value[5]) == -1
    assert x.value[7] == 2.0**60
    assert rds.unserialize(general["integers with NA"]["rds"]).value == [1, None, -2147483647]
    assert rds.unserialize(general["compact sequence"]["rds"]).value == list(range(1, 11))
    assert rds.unserialize(general["deferred strings"]["rds"]).value == ["1", "2", "3", "10"]
    strings = rds.unserialize(general["strings"]["rds"])
    assert strings.value == ["a", None, "\u00e9t\u00e9", ""]
    assert rds.unserialize(general["latin1 string"]["rds"]).value == ["caf\u00e9"]

    f = rds.unserialize(general["factor"]["rds"])
    assert f.type == "integer" and f.r_class == ["factor"]
    assert f.value == [1, None, 2, 1] and f.attr("levels") == ["x", "y"]

    m = rds.unserialize(general["matrix"]["rds"])
    assert m.attr("dim") == [2, 3]
    dimnames = m.attributes["dimnames"]
    assert dimnames.type == "list" and dimnames.value[0].value == ["r1", "r2"]
    assert dimnames.value[1] is None

    frame = rds.unserialize(general["data frame"]["rds"])
    assert frame.r_class == ["data.frame"] and frame.names == ["x", "f", "l", "s"]
    assert frame.attr("row.names") == [None, -3]  # R's compact 1:3

    table = rds.unserialize(server_values["tableDS"]["rds"])
    assert table.r_class == ["table"]
    assert table.attributes["dimnames"].names == ["rvar", "cvar"]

    family = rds.unserialize(general["family"]["rds"])
    assert family.r_class == ["family"]
    assert family.value[family.names.index("family")].value == ["binomial"]
    linkfun = family.value[family.names.index("linkfun")]
    assert linkfun.type == "closure" and isinstance(linkfun.value["env"], rds.REnvironment)

    call = rds.unserialize(general["call"]["rds"])
    assert call.type == "language"
    assert (call.value[0][0], call.value[0][1].value) == (None, "f")
    assert call.value[2][0] == "y"
    formula = rds.unserialize(general["formula"]["rds"])
    assert formula.type == "language" and formula.r_class == ["formula"]
    assert rds.unserialize(general["symbol"]["rds"]).value == "abc"
    assert rds.unserialize(general["NULL"]["rds"]) is None
    assert isinstance(rds.unserialize(general["environment"]["rds"]), rds.REnvironment)

    glm2 = rds.loads(server_values["glmDS2"]["rds"])
    assert list(glm2) == [
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
    assert glm2["family"]["linkfun"] is None  # functions are None, as decoded JSON has them
    assert len(glm2["info.matrix"]) == 4 and len(glm2["info.matrix"][0]) == 4


@pytest.mark.r
@needs_r
def test_saverds_files_and_long_vectors(general, tmp_path):
    data = general["long vector"]["rds"]
    values = rds.unserialize(gzip.compress(data)).value  # saveRDS compresses with gzip
    assert len(values) == 100_000 and values[-1] == 1.0
    assert rds.loads(data)[:2] == [0.0, 1 / 99999]


# ---------------------------------------------------------------- without R


def _xdr(*ints: int) -> bytes:
    return struct.pack(f">{len(ints)}i", *ints)


HEADER = b"X\n" + _xdr(2, 0x040300, 0x020300)


def test_hand_made_streams():
    assert rds.loads(HEADER + _xdr(254)) is None
    assert rds.loads(HEADER + _xdr(13, 2, 7, -(2**31))) == [7, None]
    assert rds.loads(HEADER + _xdr(10, 1, 1)) is True
    v3 = b"X\n" + _xdr(3, 0x040300, 0x030500, 5) + b"UTF-8" + _xdr(14, 1) + struct.pack(">d", 2.5)
    assert rds.loads(v3) == 2.5
    # a long-vector length prefix (-1, then two ints)
    assert rds.loads(HEADER + _xdr(13, -1, 0, 1, 9)) == 9


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not an R serialization"),
        (b"RDX3\n", "not an R serialization"),
        (b"A\n2\n", "only R's default XDR"),
        (HEADER[:-2], "corrupt or truncated"),
        (HEADER + _xdr(14, 3) + b"\0" * 8, "ends in the middle"),
        (HEADER + _xdr(99), "unknown R type code 99"),
        (b"X\n" + _xdr(4, 0, 0), "format version 4"),
        (HEADER + _xdr(255 + (5 << 8)), "reference 5"),
        (b"\x1f\x8b" + b"junk", "corrupt gzip"),
    ],
)
def test_bad_streams_raise_rds_errors(data, message):
    with pytest.raises(RDSError, match=message) as caught:
        rds.unserialize(data)
    assert isinstance(caught.value, ProtocolError)
