"""Building expressions: values are checked before anything is sent, and what is built
passes the gateway's DataSHIELD grammar."""

import pytest

from algorithms import _rexpr as rx
from algorithms._calls import node_message
from algorithms.regression import saturated_term_expression
from gateway.node import expression as grammar
from tests.unit.algorithms.test_combine import AGGREGATE, ASSIGN


def test_names():
    assert rx.name("D") == "D"
    assert rx.name("D$age") == "D$age"
    assert rx.name("L$D$bmi.2") == "L$D$bmi.2"
    for bad in ["", "1D", "D$", "$D", "D age", "D$age-1", "D;q()", "D$_x", "TRUE", "D$function"]:
        with pytest.raises(ValueError):
            rx.name(bad)
    with pytest.raises(ValueError):
        rx.name(None)


def test_strings_carry_only_the_grammar_characters():
    assert rx.string("D$age") == '"D$age"'
    assert rx.string("a,b;c:d+e-f.g_h") == '"a,b;c:d+e-f.g_h"'
    for bad in ["", "a b", "x'", 'x"', "é", "a\nb", "a(b)"]:
        with pytest.raises(ValueError, match="cannot be sent"):
            rx.string(bad)


def test_numbers_round_trip():
    assert rx.number(3) == "3"
    assert rx.number(-2.5) == "-2.5"
    assert rx.number(1e-05) == "1e-05"
    assert float(rx.number(0.1 + 0.2)) == 0.1 + 0.2
    for bad in [float("nan"), float("inf"), "1", True, None]:
        with pytest.raises(ValueError):
            rx.number(bad)
    assert rx.number_list([0, -1.5, 2e-300]) == '"0,-1.5,2e-300"'
    assert rx.logical(True) == "TRUE" and rx.logical(False) == "FALSE"


def test_string_lists():
    assert rx.string_list(["female", "male"]) == '"female,male"'
    with pytest.raises(ValueError, match="commas"):
        rx.string_list(["a,b"])
    with pytest.raises(ValueError):
        rx.string_list(["New York"])


def test_formulas_are_normalised_and_checked():
    assert rx.formula("D$y~D$x+D$z") == "D$y ~ D$x + D$z"
    assert rx.formula(" y ~ a * (b + c) - 1 ") == "y ~ a * (b + c) - 1"
    assert rx.formula("y ~ a:b + a %in% c") == "y ~ a : b + a %in% c"
    for bad in ["y", "y ~", "~ x", "y ~ x ~ z", "y ~ log(x)", "y ~ x; q()", "y z ~ x", "y ~ x$"]:
        with pytest.raises(ValueError):
            rx.formula(bad)


def test_built_expressions_pass_the_grammar():
    f = rx.formula("D$outcome ~ D$age * D$sex - 1")
    aggregates = [
        rx.call("glmDS1", f, rx.string("binomial"), rx.NULL, rx.NULL, rx.NULL),
        rx.call(
            "glmDS2",
            f,
            rx.string("poisson"),
            rx.number_list([-6.1, 2e-05, 0]),
            rx.NULL,
            rx.string("D$w"),
            rx.string("D"),
        ),
        rx.call(
            "histogramDS2",
            "D$age",
            rx.number(10),
            rx.number(-3.25),
            rx.number(90.5),
            rx.number(1),
            rx.number(3),
            rx.number(0.25),
        ),
        rx.call(
            "tableDS",
            rx.named("rvar.transmit", rx.string("D$sex")),
            rx.named("rvar.all.unique.levels.transmit", rx.string_list(["0", "1.5", "-2"])),
        ),
    ]
    for expr in aggregates:
        grammar.check_aggregate(expr, AGGREGATE)
    grammar.check_assign(
        rx.call(
            "dataFrameSubsetDS2",
            rx.string("D"),
            rx.string("D$age"),
            rx.string("65.5"),
            rx.number(6),
            rx.number_list([1, 3]),
            rx.NULL,
            rx.logical(False),
        ),
        ASSIGN,
    )
    code = grammar.check_assign(saturated_term_expression("D$visits"), ASSIGN)
    assert "base::log" in code


class OpalLike(Exception):
    def __init__(self, detail):
        super().__init__("HTTP Error: 400")
        self.detail = detail

    def get_error(self):
        return self.detail


def test_node_messages_are_unwrapped():
    assert node_message(OpalLike({"message": "Error : FAILED: Nvalid less than nfilter.tab"})) == (
        "FAILED: Nvalid less than nfilter.tab"
    )
    assert node_message(OpalLike({"arguments": ["No such DataSHIELD 'AGGREGATE' method"]})) == (
        "No such DataSHIELD 'AGGREGATE' method"
    )
    assert (
        node_message(ValueError("Command 12 failed on n1: Error : invalid table"))
        == "invalid table"
    )
    assert node_message(RuntimeError("Error in f(x) : boom")) == "boom"
    assert (
        node_message(RuntimeError("Error in dsGatewayBase::meanDS(N$x) : object 'N' not found"))
        == "object 'N' not found"
    )
    assert node_message(RuntimeError()) == "RuntimeError"
