"""Methods and options from DataSHIELD package declarations, per profile
(gateway/node/methods.py)."""

import logging

import pytest

from gateway.node.errors import NotFound
from gateway.node.expression import check_aggregate, check_assign
from gateway.node.methods import (
    Method,
    MethodRegistry,
    PackageInfo,
    Profile,
    discover_methods,
    parse_methods,
    parse_options,
)

# An excerpt of dsBase's declarations as the package ships them: the method lists of
# dsBase 6.3.3 (inst/DATASHIELD) and the Options field of dsBase 6.3.1's DESCRIPTION.
DSBASE_DCF = """\
Package: dsBase
Version: 6.3.3
AggregateMethods:
    asListDS,
    colnamesDS,
    glmDS1,
    glmPredictDS.ag,
    meanDS,
    tableDS,
    exists=base::exists,
    is.null=base::is.null,
    NROW=base::NROW,
    t.test=stats::t.test
AssignMethods:
    asListDS,
    BooleDS,
    dataFrameSubsetDS2,
    glmSLMADS.assign,
    tableDS.assign,
    as.character=base::as.character,
    c=dsBase::vectorDS,
    complete.cases=stats::complete.cases,
    list=base::list,
    unlist=base::unlist
Options:
    datashield.privacyLevel=5,
    default.datashield.privacyControlLevel="banana",
    default.nfilter.glm=0.33,
    default.nfilter.kNN=3,
    default.nfilter.string=80,
    default.nfilter.subset=3,
    default.nfilter.stringShort=20,
    default.nfilter.tab=3,
    default.nfilter.noise=0.25,
    default.nfilter.levels.density=0.33,
    default.nfilter.levels.max=40
"""


def read_dcf(text: str) -> dict[str, str]:
    """Fields of a DCF record as R's read.dcf gives them: continuation lines are joined
    with a newline, leading white space removed."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key is not None:
            fields[key] = (fields[key] + "\n" + line.strip()).strip()
        elif line.strip():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def package_from_dcf(text: str) -> PackageInfo:
    f = read_dcf(text)
    return PackageInfo(
        f["Package"],
        f["Version"],
        f.get("AggregateMethods"),
        f.get("AssignMethods"),
        f.get("Options"),
    )


DSBASE = package_from_dcf(DSBASE_DCF)


def pkg(name, aggregate=None, assign=None, options=None, version="1.0"):
    return PackageInfo(name, version, aggregate, assign, options)


# ------------------------------------------------------------------------- parsing


def test_the_real_dsbase_declarations():
    methods, options = discover_methods([DSBASE])
    aggregate = {m.name: m for m in methods if m.kind == "aggregate"}
    assign = {m.name: m for m in methods if m.kind == "assign"}
    assert list(aggregate) == [
        "asListDS",
        "colnamesDS",
        "glmDS1",
        "glmPredictDS.ag",
        "meanDS",
        "tableDS",
        "exists",
        "is.null",
        "NROW",
        "t.test",
    ]
    assert aggregate["meanDS"] == Method("meanDS", "dsBase::meanDS", "dsBase", "6.3.3", "aggregate")
    assert aggregate["exists"] == Method("exists", "base::exists", "dsBase", "6.3.3", "aggregate")
    assert aggregate["t.test"].function == "stats::t.test"
    assert aggregate["glmPredictDS.ag"].function == "dsBase::glmPredictDS.ag"
    assert len(assign) == 10
    assert assign["c"] == Method("c", "dsBase::vectorDS", "dsBase", "6.3.3", "assign")
    assert assign["tableDS.assign"].function == "dsBase::tableDS.assign"
    assert options == {
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


def test_the_fields_as_r_keeps_their_white_space_parse_the_same():
    # read.dcf(keep.white = ...) keeps the indentation and the leading newline
    kept = PackageInfo(
        "dsBase",
        "6.3.3",
        "\n    meanDS,\n    exists=base::exists\n",
        "\n\tc=dsBase::vectorDS ,\r\n  list = base :: list,\n",
        "\n    datashield.privacyLevel=5,\n    default.nfilter.tab = 3\n",
    )
    methods, options = discover_methods([kept])
    assert [(m.name, m.function, m.kind) for m in methods] == [
        ("meanDS", "dsBase::meanDS", "aggregate"),
        ("exists", "base::exists", "aggregate"),
        ("c", "dsBase::vectorDS", "assign"),
        ("list", "base::list", "assign"),
    ]
    assert options == {"datashield.privacyLevel": "5", "default.nfilter.tab": "3"}


def test_parse_methods_like_opal():
    # Opal's own test case: empty entries are skipped
    assert parse_methods("dsBase", ",colnames, ls=base::ls, ") == [
        ("colnames", "dsBase::colnames"),
        ("ls", "base::ls"),
    ]
    assert parse_methods("p", None) == []
    assert parse_methods("p", "") == []
    # a missing comma between lines (dsBase 1.4 shipped one) still separates entries
    assert parse_methods("dsbase", "NROW=base::NROW\n    MinMax.ds,\n") == [
        ("NROW", "base::NROW"),
        ("MinMax.ds", "dsbase::MinMax.ds"),
    ]
    # within a package, a later entry for the same name wins (seen by discover_methods)
    methods, _ = discover_methods([pkg("p", aggregate="f, g, f=base::f")])
    assert [(m.name, m.function) for m in methods] == [("g", "p::g"), ("f", "base::f")]


def test_unusable_method_entries_are_skipped_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="gateway.node.methods")
    value = (
        "ok, =base::x, a=b=c, x=system, y=base::system('ls'), z=base:::f, .hidden, "
        "w=base::.f, 1f, v=::f, good=stats::var"
    )
    assert parse_methods("p", value) == [("ok", "p::ok"), ("good", "stats::var")]
    assert caplog.text.count("skipping the unusable method entry") == 9


def test_parse_options_like_opal():
    assert parse_options("zorro=5") == {"zorro": "5"}
    assert parse_options("zorro0=TRUE,zorro1=T,zorro2=FALSE,zorro3=F") == {
        "zorro0": "TRUE",
        "zorro1": "T",
        "zorro2": "FALSE",
        "zorro3": "F",
    }
    # entries without '=' are skipped, the others kept
    assert parse_options("zorro=5,toto,tutu=4") == {"zorro": "5", "tutu": "4"}
    assert parse_options("zorro") == {}
    assert parse_options(None) == {}
    # commas inside parentheses or quotes do not split; values stay R source
    assert parse_options(
        '\n\t a = c("hey", "ho"),\nb="x,y", c = list(p = 1, q = c(2, 3)),  d = \'it,s\'\n'
    ) == {
        "a": 'c("hey", "ho")',
        "b": '"x,y"',
        "c": "list(p = 1, q = c(2, 3))",
        "d": "'it,s'",
    }
    assert parse_options('s="a \\" , b", t=1') == {"s": '"a \\" , b"', "t": "1"}


def test_unusable_options_are_skipped(caplog):
    caplog.set_level(logging.WARNING, logger="gateway.node.methods")
    # white space inside a key is dropped, as Opal does
    assert parse_options("=1, a b=2, ok=3, empty=, 9x=1, .x=1", "p") == {"ab": "2", "ok": "3"}
    assert caplog.text.count("skipping the unusable option entry") == 4


def test_discover_methods_keeps_every_package_and_merges_options_in_order():
    a = pkg("a", aggregate="f", options="x=1, y=2", version="1.0")
    b = pkg("b", aggregate="f, g", assign="h", options="y=3", version="2.0")
    methods, options = discover_methods([a, b])
    assert methods == [
        Method("f", "a::f", "a", "1.0", "aggregate"),
        Method("f", "b::f", "b", "2.0", "aggregate"),
        Method("g", "b::g", "b", "2.0", "aggregate"),
        Method("h", "b::h", "b", "2.0", "assign"),
    ]
    assert options == {"x": "1", "y": "3"}


# ------------------------------------------------------------------------ registry


def registry(**profiles):
    packages = [
        DSBASE,
        pkg(
            "dsGatewayBase",
            aggregate="meanDS, dimDS",
            assign="c=dsGatewayBase::vectorDS",
            options="default.nfilter.tab=5, gw.only=TRUE",
            version="0.1.0",
        ),
        pkg("dsExtra", assign="extraDS"),
        pkg("ggplot2"),  # not a DataSHIELD package: no DataSHIELD fields
    ]
    return MethodRegistry(packages, profiles or {"default": Profile("default")})


def test_profiles_are_listed_in_order():
    reg = registry(default=Profile("default"), strict=Profile("strict", packages=["dsBase"]))
    assert reg.profiles == ["default", "strict"]


def test_every_datashield_package_counts_when_the_profile_names_none():
    reg = registry()
    assert [p.name for p in reg.packages("default")] == ["dsBase", "dsExtra", "dsGatewayBase"]
    table = reg.table("default", "aggregate")
    assert table["exists"] == "base::exists"
    assert table["dimDS"] == "dsGatewayBase::dimDS"
    assert "extraDS" in reg.table("default", "assign")


def test_a_later_package_overrides_an_earlier_one():
    # no list in the profile: by package name, so dsGatewayBase comes after dsBase
    reg = registry()
    assert reg.table("default", "aggregate")["meanDS"] == "dsGatewayBase::meanDS"
    assert reg.table("default", "assign")["c"] == "dsGatewayBase::vectorDS"
    meanDS = next(m for m in reg.methods("default", "aggregate") if m.name == "meanDS")
    assert (meanDS.package, meanDS.version) == ("dsGatewayBase", "0.1.0")
    assert reg.options("default")["default.nfilter.tab"] == "5"
    # the profile's list gives the order
    reg = registry(p=Profile("p", packages=["dsGatewayBase", "dsBase"]))
    assert reg.table("p", "aggregate")["meanDS"] == "dsBase::meanDS"
    assert reg.table("p", "aggregate")["dimDS"] == "dsGatewayBase::dimDS"
    assert reg.options("p")["default.nfilter.tab"] == "3"
    assert reg.options("p")["gw.only"] == "TRUE"


def test_the_package_whitelist_limits_methods_and_options():
    reg = registry(p=Profile("p", packages=["dsGatewayBase", "missing"]))
    assert [p.name for p in reg.packages("p")] == ["dsGatewayBase"]
    assert reg.table("p", "aggregate") == {
        "dimDS": "dsGatewayBase::dimDS",
        "meanDS": "dsGatewayBase::meanDS",
    }
    assert reg.options("p") == {"default.nfilter.tab": "5", "gw.only": "TRUE"}
    empty = registry(p=Profile("p", packages=[]))
    assert empty.table("p", "aggregate") == {}
    assert empty.options("p") == {}


def test_the_blacklist_removes_methods_by_name_or_function():
    reg = registry(
        p=Profile("p", packages=["dsBase"], blacklist=["exists", "stats::complete.cases"])
    )
    aggregate = reg.table("p", "aggregate")
    assert "exists" not in aggregate
    assert "meanDS" in aggregate
    assert "complete.cases" not in reg.table("p", "assign")
    assert "list" in reg.table("p", "assign")


def test_profile_options_override_package_defaults():
    reg = registry(
        p=Profile(
            "p", packages=["dsBase"], options={"default.nfilter.tab": "10", "nfilter.glm": "0.5"}
        )
    )
    options = reg.options("p")
    assert options["default.nfilter.tab"] == "10"
    assert options["nfilter.glm"] == "0.5"
    assert options["datashield.privacyLevel"] == "5"


def test_methods_are_sorted_by_name_and_of_one_kind():
    reg = registry()
    aggregate = reg.methods("default", "aggregate")
    assert [m.name for m in aggregate] == sorted(m.name for m in aggregate)
    assert {m.kind for m in aggregate} == {"aggregate"}
    assert {m.kind for m in reg.methods("default", "ASSIGN")} == {"assign"}


def test_results_are_copies():
    reg = registry()
    reg.table("default", "aggregate")["system"] = "base::system"
    reg.options("default")["x"] = "1"
    reg.methods("default", "aggregate").clear()
    assert "system" not in reg.table("default", "aggregate")
    assert "x" not in reg.options("default")
    assert reg.methods("default", "aggregate")


def test_unknown_profile_and_kind():
    reg = registry()
    with pytest.raises(NotFound) as info:
        reg.table("nope", "aggregate")
    assert info.value.message == "Profile 'nope' not found"
    with pytest.raises(ValueError):
        reg.table("default", "execute")


def test_conflicts_are_logged(caplog):
    caplog.set_level(logging.WARNING, logger="gateway.node.methods")
    registry()
    assert "aggregate method meanDS of dsGatewayBase overrides the one of dsBase" in caplog.text


def test_the_tables_drive_the_expression_check():
    reg = registry(p=Profile("p", packages=["dsBase"]))
    assert check_aggregate("meanDS(D$age)", reg.table("p", "aggregate")) == "dsBase::meanDS(D$age)"
    assert check_aggregate("exists('D')", reg.table("p", "aggregate")) == 'base::exists("D")'
    assert check_assign("c(1, 2)", reg.table("p", "assign")) == "dsBase::vectorDS(1, 2)"
