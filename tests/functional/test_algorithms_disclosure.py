"""Disclosure controls of dsGatewayBase, at the node, through both HTTP faces.

Each case sends raw DataSHIELD expressions, as a modified client could (no client-side
check in the way: second steps without their first, thresholds "forced" lower, bins or
subsets drawn around one person), once through the Armadillo face (our
`gateway.client.ArmadilloConnection`, R's serialize() results) and once through the
Opal face (`datashield-opal`, JSON results). Both must refuse with the same clear
message, and the numbers in it (the setting and what the data has) must be right:

- a too-long string argument (nfilter.string 80, nfilter.stringShort 20);
- too many factor levels (nfilter.levels.max 40, nfilter.levels.density 0.33);
- reading row-level values with allowed functions: a subset of one or two rows, a
  histogram with bins of one row (too many breaks, or a bin drawn around one value),
  a table of a unique id, a mean or correlation of a few rows, a glm with one
  parameter per row, anonymised histograms with too little blurring.

The data is the example study (500 rows, seed 1) of the shared test gateway.
"""

from __future__ import annotations

import re

import pandas as pd
import pyarrow.parquet as pq
import pytest
from datashield.interface import DSLoginInfo
from datashield_opal import OpalDriver

import gateway.client as client
from algorithms._calls import node_message
from algorithms._rvalues import decode
from tests.functional.conftest import PASSWORDS

pytestmark = [pytest.mark.r, pytest.mark.slow]


class Face:
    """One DataSHIELD connection to the node, with raw expressions."""

    def __init__(self, name: str, conn):
        self.name, self.conn = name, conn

    def aggregate(self, expr: str):
        """("value", decoded value) or ("refused", the node's message)."""
        try:
            value = self.conn.aggregate(expr, asynchronous=False).fetch()
        except Exception as error:  # each driver raises its own DSError
            return "refused", node_message(error)
        return "value", decode(value)

    def assign(self, symbol: str, expr: str):
        try:
            self.conn.assign_expr(symbol, expr, asynchronous=False).fetch()
        except Exception as error:
            return "refused", node_message(error)
        return "value", None

    def symbols(self) -> list[str]:
        return list(self.conn.list_symbols())


@pytest.fixture(scope="module")
def faces(gateway):
    armadillo = client.ArmadilloConnection(
        "node", gateway.url, user="alice", password=PASSWORDS["alice"]
    )
    opal = OpalDriver.new_connection(
        DSLoginInfo(name="node", url=gateway.url, user="alice", password=PASSWORDS["alice"])
    )
    faces = [Face("armadillo", armadillo), Face("opal", opal)]
    armadillo.assign_table("D", "demo/cohort/patients", asynchronous=False)
    opal.assign_table("D", "demo.cohort.patients", asynchronous=False)
    yield faces
    for face in faces:
        face.conn.disconnect()


@pytest.fixture(scope="module")
def patients(gateway) -> pd.DataFrame:
    return pq.read_table(gateway.data_dir / "demo" / "cohort" / "patients.parquet").to_pandas()


def refused(faces, expr: str, message: str | re.Pattern, assign: str | None = None) -> str:
    """Both faces refuse `expr` with the same message, which must equal `message` (or
    match it, for a pattern); returns the message."""
    seen = {}
    for face in faces:
        kind, value = face.assign(assign, expr) if assign else face.aggregate(expr)
        assert kind == "refused", (face.name, expr, value)
        seen[face.name] = value
    assert len(set(seen.values())) == 1, seen
    text = seen["armadillo"]
    if isinstance(message, re.Pattern):
        assert message.fullmatch(text), text
    else:
        assert text == message
    return text


def answered(faces, expr: str, assign: str | None = None):
    """Both faces accept `expr`; the value (decoded, from the Armadillo face)."""
    values = {}
    for face in faces:
        kind, value = face.assign(assign, expr) if assign else face.aggregate(expr)
        assert kind == "value", (face.name, expr, value)
        values[face.name] = value
    return values["armadillo"]


# ---------------------------------------------------------------- strings


def test_too_long_strings_are_refused(faces):
    # nfilter.string = 80: a data frame name of 81 characters is refused before any
    # lookup; one of 80 characters is only not found
    name80, name81 = "D$" + "a" * 78, "D$" + "a" * 79
    expr = 'dataFrameSubsetDS1("{}", "ONES", "ONES", 1, NULL, NULL, FALSE)'
    refused(
        faces, expr.format(name81), "FAILED: df.name argument > nfilter.string - please shorten"
    )
    text = refused(faces, expr.format(name80), re.compile(r".+"))
    assert "nfilter.string" not in text
    # the same for the variables compared
    refused(
        faces,
        f'dataFrameSubsetDS1("D", "{name81}", "1", 1, NULL, NULL, FALSE)',
        "FAILED: V[i].name argument > nfilter.string - please shorten",
    )
    refused(
        faces,
        f'dataFrameSubsetDS2("D", "D$id", "{name81}", 1, NULL, NULL, FALSE)',
        "FAILED: V[ii].name argument > nfilter.string - please shorten",
        assign="S81",
    )
    # an ls() search pattern of 81 characters; 80 is answered
    refused(
        faces,
        f'lsDS("{"x" * 81}", 1)',
        "FAILED: search.filter is longer than nfilter.string - please shorten",
    )
    assert answered(faces, f'lsDS("{"x" * 80}", 1)')["objects.found"] == []
    # nfilter.stringShort = 20 for namesDS; 20 characters pass the check
    refused(
        faces,
        f'namesDS("D${"b" * 20}")',
        re.compile(r"FAILED: the character string denoting the argument <xname> is too long.*"),
    )
    text = refused(faces, f'namesDS("D${"b" * 18}")', re.compile(r".+"))
    assert "too long" not in text


def test_a_client_cannot_change_the_settings(faces):
    for expr in ("options(nfilter.string = 1000)", 'Sys.setenv(R_X = "1")'):
        function = expr.split("(")[0]
        refused(faces, expr, f"No such DataSHIELD 'AGGREGATE' method with name: {function}")
    settings = answered(faces, "listDisclosureSettingsDS()")
    assert (settings["nfilter.string"], settings["nfilter.stringShort"]) == (80, 20)
    assert (settings["nfilter.levels.max"], settings["nfilter.levels.density"]) == (40, 0.33)


# ---------------------------------------------------------------- factor levels


def test_too_many_factor_levels_are_refused(faces, patients):
    n = len(patients)
    assert n == 500 and patients["id"].is_unique
    # nfilter.levels.max = 40: a factor of the id would have 500 levels
    refused(
        faces,
        'asFactorDS1("D$id")',
        "FAILED: this variable has too many levels and may be disclosive. It exceeds the max "
        "number of levels allowed by nfilter.levels.max: that is 40. In this study this "
        f"variable has {n} factor levels",
    )
    # nfilter.levels.density = 0.33: in 30 rows, 30 distinct ids are too dense (the
    # limit is 9.9), though fewer than 40
    answered(faces, 'dataFrameSubsetDS2("D", "D$id", "30", 4, NULL, NULL, FALSE)', assign="S30")
    refused(
        faces,
        'asFactorDS1("S30$id")',
        "FAILED: this variable has too many levels and may be disclosive. The number of "
        "factor levels must not exceed 33% of the length of the variable being converted to "
        "a factor. The max number of levels in this study is therefore 9.9 but this variable "
        "has 30 factor levels",
    )
    # 5 regions in 12 rows: more than 0.33 x 12 = 3.96
    answered(faces, 'dataFrameSubsetDS2("D", "D$id", "12", 4, NULL, NULL, FALSE)', assign="S12")
    assert patients.loc[patients["id"] <= 12, "region"].nunique() == 5
    refused(
        faces,
        "levelsDS(S12$region)",
        "FAILED: Result length less than nfilter.levels.density of input length.",
    )
    # the whole frame's regions pass both limits
    assert answered(faces, "levelsDS(D$region)")["Levels"] == sorted(patients["region"].unique())


# ---------------------------------------------------------------- row-level values


def test_subsets_of_one_or_two_rows_are_refused(faces):
    small = "Subset to be created is too small (<nfilter.subset)"
    for rows in (1, 2):  # nfilter.subset = 3
        for op, value in ((1, "1"), (4, str(rows))):  # id == 1, id <= rows
            expr = f'dataFrameSubsetDS1("D", "D$id", "{value}", {op}, NULL, NULL, FALSE)'
            refused(faces, expr, small)
            # the assign, sent without its check, is refused the same way
            refused(faces, expr.replace("DS1", "DS2"), small, assign="Row")
    for face in faces:
        assert "Row" not in face.symbols()
    # three rows are a subset
    assert answered(faces, 'dataFrameSubsetDS1("D", "D$id", "3", 4, NULL, NULL, FALSE)') == (
        "Subsetting undertaken without problems"
    )


def test_histograms_do_not_show_single_rows(faces, patients):
    age = patients["age"]
    lo, hi = float(age.min()) - 0.5, float(age.max()) + 0.5
    # at most nfilter.levels.density x 500 = 165 breaks
    refused(
        faces,
        f"histogramDS2(D$age, 166, {lo}, {hi}, 1, 3, 0.25)",
        "FAILED: Number of breaks is too big. It may be disclosive - please shorten",
    )
    h = answered(faces, f"histogramDS2(D$age, 165, {lo}, {hi}, 1, 3, 0.25)")
    counts = h["histobject"]["counts"]
    assert len(counts) == 165 and h["invalidcells"] > 0
    assert not any(0 < c < 3 for c in counts)  # bins of 1 or 2 rows are zeroed
    assert sum(counts) < len(age)
    # a single bin drawn around one person's age: hist() needs breaks that span all
    # the values, so a window on one value is refused
    one = float(age.iloc[0])
    refused(
        faces,
        f"histogramDS2(D$age, 1, {one - 0.01}, {one + 0.01}, 1, 3, 0.25)",
        re.compile(r".*some 'x' not counted; maybe 'breaks' do not span range of 'x'"),
    )
    # the anonymised methods need enough blurring: k >= nfilter.kNN, noise >= nfilter.noise
    refused(
        faces,
        f"histogramDS2(D$age, 10, {lo}, {hi}, 2, 1, 0.25)",
        "k must be greater than or equal to 3 and less than or equal to 497.",
    )
    refused(
        faces,
        "histogramDS1(D$age, 3, 3, 0.01)",
        "'noise' must be greater than or equal to 0.25",
    )


def test_tables_of_a_unique_id_are_refused(faces, patients):
    ids = ",".join(str(i) for i in patients["id"])
    expr = (
        'tableDS(rvar.transmit = "D$id", cvar.transmit = NULL, stvar.transmit = NULL, '
        f'rvar.all.unique.levels.transmit = "{ids}", cvar.all.unique.levels.transmit = NULL, '
        "stvar.all.unique.levels.transmit = NULL, exclude.transmit = NULL, "
        'useNA.transmit = "no", force.nfilter.transmit = {force})'
    )
    # ds.table's refusal is a returned message (dsBase's contract), not an R error
    assert answered(faces, expr.format(force="NULL")) == (
        "Failed: at least one cell has a non-zero count less than nfilter.tab i.e. 3"
    )
    # forcing a smaller threshold is refused; a larger one only refuses more
    refused(
        faces,
        expr.format(force='"1"'),
        "Failed: if force.nfilter is non-null it must be >= to nfilter.tab i.e.3",
    )
    assert answered(faces, expr.format(force='"10"')).endswith("nfilter.tab i.e. 10")
    refused(faces, "table1DDS(D$id)", "invalid table - invalid counts present")
    # crossing the id with a binary variable does not help
    two = expr.replace("cvar.transmit = NULL", 'cvar.transmit = "D$sex"').replace(
        "cvar.all.unique.levels.transmit = NULL", 'cvar.all.unique.levels.transmit = "female,male"'
    )
    assert answered(faces, two.format(force="NULL")).startswith("Failed: at least one cell")


def test_statistics_of_a_few_rows_are_refused(faces, patients):
    # three consecutive rows, one of them without bmi: a mean of 2 values
    missing = patients.loc[patients["bmi"].isna(), "id"]
    j = int(
        next(
            i for i in missing if 1 < i < 500 and patients["bmi"].notna()[i - 2 : i + 1].sum() == 2
        )
    )
    answered(faces, f'dataFrameSubsetDS2("D", "D$id", "{j - 1}", 6, NULL, NULL, FALSE)', assign="A")
    answered(faces, f'dataFrameSubsetDS2("A", "A$id", "{j + 1}", 4, NULL, NULL, FALSE)', assign="B")
    assert answered(faces, 'dimDS("B")') == [3, 11]
    refused(faces, "meanDS(B$bmi)", "FAILED: Nvalid less than nfilter.tab")
    refused(faces, "varDS(B$bmi)", "FAILED: Nvalid less than nfilter.tab")
    # two variables on three rows: more than nfilter.glm (0.33) x rows
    refused(
        faces,
        'corDS("B$age", "B$height")',
        re.compile(
            r"ERROR: The ratio of the number of variables over the number of "
            r"individual-level\s+records exceeds the allowed threshold, there is a "
            r"possible risk of disclosure"
        ),
    )
    # a glm with one parameter per row: glmDS1 says invalid, and glmDS2 sent without it
    # destroys the information matrix and the score vector
    s1 = answered(faces, 'glmDS1(B$age ~ B$height + B$weight, "gaussian", NULL, NULL, NULL)')
    assert s1["dimX"] == [3, 3] and s1["glm.saturation.invalid"] == 1
    assert s1["errorMessage"] == "STUDY DATA OR APPLIED MODEL INVALID FOR THIS SOURCE"
    s2 = answered(
        faces, 'glmDS2(B$age ~ B$height + B$weight, "gaussian", "0,0,0", NULL, NULL, NULL)'
    )
    assert s2["info.matrix"] is None and s2["score.vect"] is None
    assert s2["disclosure.risk"] == 1
    assert s2["errorMessage2"][0].startswith("ERROR: Model has too many parameters")
    # quantiles of the two values would be the values: NA (dsBase counts the missing
    # one as a row and releases them)
    assert answered(faces, "quantileMeanDS(B$bmi)") is None
    assert answered(faces, "quantileMeanDS(B$age)") is not None  # three values
