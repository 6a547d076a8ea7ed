"""The DataSHIELD expression check (gateway/node/expression.py): grammar, rewriting,
refusals and their messages, limits."""

import random
import shutil
import subprocess

import pytest

from gateway.node import expression
from gateway.node.errors import ExpressionRefused, GatewayError
from gateway.node.expression import MAX_DEPTH, MAX_LENGTH, check_aggregate, check_assign

try:
    from tests.unit.node.hostile_expressions import HOSTILE_EXPRESSIONS
except ImportError:  # the repository root is not on sys.path (plain `pytest`)
    from hostile_expressions import HOSTILE_EXPRESSIONS

# The shape of dsBase's tables (dsBase 6.3.3 inst/DATASHIELD), cut down.
AGGREGATE = {
    "meanDS": "dsBase::meanDS",
    "glmDS1": "dsBase::glmDS1",
    "asListDS": "dsBase::asListDS",
    "tableDS": "dsBase::tableDS",
    "exists": "base::exists",
    "is.null": "base::is.null",
    "t.test": "stats::t.test",
    "glmPredictDS.ag": "dsBase::glmPredictDS.ag",
}
ASSIGN = {
    "asListDS": "dsBase::asListDS",
    "dataFrameSubsetDS2": "dsBase::dataFrameSubsetDS2",
    "c": "dsBase::vectorDS",
    "list": "base::list",
    "exp": "base::exp",
    "log": "base::log",
}
# Every name maps to dsBase::name, as in the datashield4j grammar tests.
ANY = {name: f"dsBase::{name}" for name in "ABCDEFGHf"}


def refusal(func, expr, methods) -> str:
    with pytest.raises(ExpressionRefused) as info:
        func(expr, methods)
    assert info.value.status == 400
    return info.value.message


# ----------------------------------------------------------------- accepted, rewritten

REWRITES = [
    # (expression, method table, rewritten R source) for check_assign; calls work in both
    ("meanDS(D$age)", AGGREGATE, "dsBase::meanDS(D$age)"),
    ("exists('D')", AGGREGATE, 'base::exists("D")'),
    ('exists("D")', AGGREGATE, 'base::exists("D")'),
    ("is.null(D)", AGGREGATE, "base::is.null(D)"),
    ("glmPredictDS.ag(x)", AGGREGATE, "dsBase::glmPredictDS.ag(x)"),
    (
        'glmDS1(y ~ x + z, "binomial", NULL, NULL, D)',
        AGGREGATE,
        'dsBase::glmDS1(y ~ x + z, "binomial", NULL, NULL, D)',
    ),
    (
        "glmDS1(D$y~D$x:D$z,'poisson',NULL,NULL,D)",
        AGGREGATE,
        'dsBase::glmDS1(D$y ~ D$x:D$z, "poisson", NULL, NULL, D)',
    ),
    ("c(1, 2, 3)", ASSIGN, "dsBase::vectorDS(1, 2, 3)"),
    ("c(1,2,3)", ASSIGN, "dsBase::vectorDS(1, 2, 3)"),
    (
        'dataFrameSubsetDS2(df.name = "D", V1.name = "D$age", V2.name = "18", '
        "Boolean.operator.n = 4, keep.cols = NULL, rm.cols = NULL, keep.NAs = FALSE)",
        ASSIGN,
        'dsBase::dataFrameSubsetDS2(df.name = "D", V1.name = "D$age", V2.name = "18", '
        "Boolean.operator.n = 4, keep.cols = NULL, rm.cols = NULL, keep.NAs = FALSE)",
    ),
    ("asListDS('D', 'newobj')", ASSIGN, 'dsBase::asListDS("D", "newobj")'),
    (
        "list(a = exp(D$x), 'b' = log(D$y))",
        ASSIGN,
        'base::list(a = base::exp(D$x), "b" = base::log(D$y))',
    ),
    ("1:10", ASSIGN, "1:10"),
    ("c(1:10)", ASSIGN, "dsBase::vectorDS(1:10)"),
    ("D", ASSIGN, "D"),
    ("D$age", ASSIGN, "D$age"),
    ("A$B$C.D", ASSIGN, "A$B$C.D"),
    ("TRUE", ASSIGN, "TRUE"),
    ("NULL", ASSIGN, "NULL"),
    ("'abc'", ASSIGN, '"abc"'),
    ("-0.43151402098822", ASSIGN, "-0.43151402098822"),
    ("5L", ASSIGN, "5L"),
    (
        "c(1.0e-03, -1.0E+03, 1.0E3, .5, 1e5L)",
        ASSIGN,
        "dsBase::vectorDS(1.0e-03, -1.0E+03, 1.0E3, .5, 1e5L)",
    ),
    # a name and a difference are one identifier token; R reads them as a difference
    ("D$LAB_TSC-D$LAB_HDL", ASSIGN, "D$LAB_TSC-D$LAB_HDL"),
    ("c(D$age-1, a--b)", ASSIGN, "dsBase::vectorDS(D$age-1, a--b)"),
    # binary operators group to the right without precedence, as in Opal and Armadillo
    ("A + B", ANY, "base::'+'(A, B)"),
    ("A + B * C", ANY, "base::'+'(A, base::'*'(B, C))"),
    ("D$a * 2 + 1", ASSIGN, "base::'*'(D$a, base::'+'(2, 1))"),
    ("(D$a * 2) + 1", ASSIGN, "base::'+'(base::'*'(D$a, 2), 1)"),
    ("(A + B) * (C - D)", ANY, "base::'*'(base::'+'(A, B), base::'-'(C, D))"),
    ("A() + B * C", ANY, "base::'+'(dsBase::A(), base::'*'(B, C))"),
    ("A %*% B / C ^ 2", ANY, "base::'%*%'(A, base::'/'(B, base::'^'(C, 2)))"),
    ("1 - -1", ANY, "base::'-'(1, -1)"),
    (
        "A(B, C(), D, E(F(G/H)), A + B * C())",
        ANY,
        "dsBase::A(B, dsBase::C(), D, dsBase::E(dsBase::F(base::'/'(G, H))), "
        "base::'+'(A, base::'*'(B, dsBase::C())))",
    ),
    # formulas
    ("A ~ B", ANY, "A ~ B"),
    ("A ~ B + (C * D)^4 : E %in% F", ANY, "A ~ B + (C * D)^4:E %in% F"),
    ("f(y ~ x - 1)", ANY, "dsBase::f(y ~ x - 1)"),
    ("f(y ~ 0 + x*z)", ANY, "dsBase::f(y ~ 0 + x * z)"),
    ("f(formula = y ~ x, data = D)", ANY, "dsBase::f(formula = y ~ x, data = D)"),
    ("(y ~ x) + 1", ANY, "base::'+'(y ~ x, 1)"),
    # strings: both quotes, the allowed special characters, always regenerated with "
    ("f('this1_that.this-that1')", ANY, 'dsBase::f("this1_that.this-that1")'),
    (
        "f('1.2:1.3:-8.5', \"1.2,1.3,-8.5\", '1.2;1.3;-8.5')",
        ANY,
        'dsBase::f("1.2:1.3:-8.5", "1.2,1.3,-8.5", "1.2;1.3;-8.5")',
    ),
    ("f('D$abc', 'a+b')", ANY, 'dsBase::f("D$abc", "a+b")'),
    # named arguments, nesting, layout, trailing ;
    ("f(arg=x,another=y)", ANY, "dsBase::f(arg = x, another = y)"),
    ("f(a = B(C(1)))", ANY, "dsBase::f(a = dsBase::B(dsBase::C(1)))"),
    ("f()", ANY, "dsBase::f()"),
    ("  meanDS (\n\tD$age\r\n) ", AGGREGATE, "dsBase::meanDS(D$age)"),
    ("meanDS(D$age);", AGGREGATE, "dsBase::meanDS(D$age)"),
    ("meanDS(D$age) ;\n", AGGREGATE, "dsBase::meanDS(D$age)"),
    ("(meanDS(D$age))", AGGREGATE, "dsBase::meanDS(D$age)"),
]


@pytest.mark.parametrize(("expr", "methods", "expected"), REWRITES)
def test_assign_rewrites(expr, methods, expected):
    assert check_assign(expr, methods) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("meanDS(D$age)", "dsBase::meanDS(D$age)"),
        ("exists('D')", 'base::exists("D")'),
        ("(meanDS(D$age));", "dsBase::meanDS(D$age)"),
        (
            "tableDS(rvar.transmit = 'D$sex', cvar.transmit = NULL, stvar.transmit = NULL, "
            "rvar.all.unique.levels.transmit = 'male,female', cvar.all.unique.levels.transmit"
            " = NULL, stvar.all.unique.levels.transmit = NULL, exclude.transmit = 'NULL', "
            "useNA.transmit = 'always', force.nfilter.transmit = NULL)",
            'dsBase::tableDS(rvar.transmit = "D$sex", cvar.transmit = NULL, stvar.transmit = '
            'NULL, rvar.all.unique.levels.transmit = "male,female", '
            "cvar.all.unique.levels.transmit = NULL, stvar.all.unique.levels.transmit = NULL, "
            'exclude.transmit = "NULL", useNA.transmit = "always", '
            "force.nfilter.transmit = NULL)",
        ),
        ("t.test(D$age, D$bmi)", "stats::t.test(D$age, D$bmi)"),
    ],
)
def test_aggregate_rewrites(expr, expected):
    assert check_aggregate(expr, AGGREGATE) == expected


# ------------------------------------------------------------------------- refused


@pytest.mark.parametrize(("expr", "expected"), HOSTILE_EXPRESSIONS)
def test_hostile_expressions_are_refused(expr, expected):
    message = refusal(check_aggregate, expr, AGGREGATE)
    assert expected in message
    message = refusal(check_assign, expr, ASSIGN)
    if "method with name: " in expected:
        assert message.startswith("No such DataSHIELD 'ASSIGN' method with name: ")
    else:
        assert expected in message  # a grammar refusal does not depend on the table


def test_the_hostile_battery_is_large_and_distinct():
    exprs = [e for e, _ in HOSTILE_EXPRESSIONS]
    assert len(exprs) >= 70
    assert len(set(exprs)) == len(exprs)


def test_unknown_methods_are_named_as_the_real_servers_name_them():
    assert refusal(check_aggregate, "foo(D)", AGGREGATE) == (
        "No such DataSHIELD 'AGGREGATE' method with name: foo"
    )
    assert refusal(check_assign, "foo(D)", ASSIGN) == (
        "No such DataSHIELD 'ASSIGN' method with name: foo"
    )
    # the outermost unknown name is reported, arguments in order after it
    assert refusal(check_assign, "f(g(1), h(2))", {"f": "a::f"}).endswith("name: g")
    assert refusal(check_assign, "f(g(1), h(2))", {"f": "a::f", "g": "a::g"}).endswith("name: h")


def test_methods_are_checked_against_the_table_of_the_right_kind():
    # meanDS is an aggregate method: an assign may not call it, even nested
    assert refusal(check_assign, "meanDS(D)", ASSIGN).endswith("ASSIGN' method with name: meanDS")
    assert refusal(check_aggregate, "c(1)", AGGREGATE).endswith("method with name: c")
    assert refusal(check_aggregate, "meanDS(c(1))", AGGREGATE).endswith("method with name: c")


def test_an_aggregate_must_be_a_single_call_at_its_root():
    for expr in ["D", "D$age", "1:10", "'D'", "asListDS(D) + 1", "y ~ x", "(D)", "-1"]:
        message = refusal(check_aggregate, expr, AGGREGATE)
        assert message == f"Error parsing expression '{expr}':\nmust invoke a function."
        check_assign(expr, ASSIGN)  # all fine as assignments


def test_parse_errors_are_worded_as_armadillo_and_javacc_word_them():
    assert refusal(check_assign, "D[1]", ASSIGN) == (
        "Error parsing expression 'D[1]':\n"
        'Lexical error at line 1, column 2.  Encountered: "[" (91), after : ""\n'
        "Subsetting with [ ] or [[ ]] is not allowed."
    )
    assert refusal(check_assign, "a b", ASSIGN) == (
        "Error parsing expression 'a b':\n"
        'Encountered " <R_IDENTIFIER> "b "" at line 1, column 3.\n'
        "Was expecting one of:\n"
        "    <R_OPERATOR> ...\n"
        "    <COMMON_OPERATOR> ...\n"
        '    ";" ...\n'
        "    <EOF> \n"
        "Only one expression is allowed (a single trailing ';' is accepted)."
    )
    assert refusal(check_assign, "f('a b')", ANY).startswith(
        "Error parsing expression 'f('a b')':\n"
        'Lexical error at line 1, column 5.  Encountered: " " (32), after : "\\\'a"\n'
    )
    message = refusal(check_assign, "f(x)\n  g(y)", ANY)
    assert 'Encountered " <R_IDENTIFIER> "g "" at line 2, column 3.' in message


def test_grammar_errors_come_before_method_errors():
    # like the real servers: parse everything, then look the methods up
    assert "Encountered" in refusal(check_aggregate, "system('x')[1]", AGGREGATE)
    assert "must invoke" in refusal(check_aggregate, "system('x') + 1", AGGREGATE)


def test_a_lexical_error_is_reported_where_the_parser_reaches_it():
    # JavaCC reads tokens lazily: an earlier parse error wins over a later bad character
    message = refusal(check_assign, "f(x) g [", ANY)
    assert 'Encountered " <R_IDENTIFIER> "g ""' in message


def test_minus_before_a_digit_is_a_negative_number_as_in_the_real_lexer():
    message = refusal(check_assign, "D$age -1", ASSIGN)
    assert 'Encountered " <NUMBER> "-1 ""' in message
    assert "write a space after '-' to subtract" in message
    assert check_assign("D$age - 1", ASSIGN) == "base::'-'(D$age, 1)"


def test_equals_only_names_arguments():
    assert check_assign("f(a = 1)", ANY) == "dsBase::f(a = 1)"
    assert check_assign("f('a' = 1)", ANY) == 'dsBase::f("a" = 1)'
    for expr in ["f(D$a = 1)", "f(a-b = 1)", "f(TRUE = 1)", "f(g() = 1)", "f(1 = 1)"]:
        assert "must be a plain name or a string" in refusal(check_assign, expr, ANY), expr
    for expr in ["a = 1", "f(a + b = 1)", "f(a = b = 1)", "f((a = 1))", "(a = 1)"]:
        assert _EQUALS_HINT in refusal(check_assign, expr, ANY), expr


_EQUALS_HINT = "'=' is only allowed to name a function argument"


def test_names_are_checked_piece_by_piece():
    for expr, problem in [
        ("a-", "may not end with '-'"),
        ("a-1x", "'1x' in 'a-1x' is neither a name nor a number"),
        ("D$", "'(nothing)' in 'D$' is not a valid name"),
        ("D$$a", "'(nothing)' in 'D$$a' is not a valid name"),
        ("D$_a", "'_a' in 'D$_a' is not a valid name"),
        ("D$NULL", "'NULL' is a reserved word of R and cannot follow '$'"),
        ("in", "'in' is a reserved word of R"),
        ("a-function", "'function' is a reserved word of R"),
    ]:
        assert problem in refusal(check_assign, expr, ASSIGN), expr


def test_echo_of_the_expression_is_escaped_and_cut():
    message = refusal(check_assign, "a\x00b", ASSIGN)
    assert message.startswith("Error parsing expression 'a\\u0000b':\n")
    assert "\x00" not in message
    long_bad = "c(" + "1, " * 1000 + "[)"
    message = refusal(check_assign, long_bad, ASSIGN)
    assert message.startswith("Error parsing expression '" + long_bad[:200] + "...':\n")
    assert len(message) < 600
    assert all(
        0x20 <= ord(ch) < 0x7F or ch == "\n" for ch in refusal(check_assign, "\u0430", ASSIGN)
    )


def test_limits():
    nested = "f(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH
    assert check_assign(nested, ANY).count("dsBase::f(") == MAX_DEPTH
    for deeper in [
        "f(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1),
        "(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1),
        "y ~ " + "(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1),
        "f(" * 3000 + ")" * 3000,
    ]:
        message = refusal(check_assign, deeper, ANY)
        assert message.endswith(
            f"The expression is nested too deeply (more than {MAX_DEPTH} levels of calls or "
            "parentheses)."
        )
    at_limit = "f(" + "x" * (MAX_LENGTH - 3) + ")"
    assert len(at_limit) == MAX_LENGTH
    check_assign(at_limit, ANY)
    message = refusal(check_assign, at_limit + " ", ANY)
    assert message.endswith(
        f"The expression is too long ({MAX_LENGTH + 1} characters; the limit is {MAX_LENGTH})."
    )


def test_long_operator_chains_are_not_limited_by_depth():
    chain = "+".join(["D$x"] * 2000)
    out = check_assign(chain, ASSIGN)
    assert out.startswith("base::'+'(D$x, base::'+'(D$x, ")
    assert out.endswith("D$x" + ")" * 1999)
    formula = "f(y ~ " + " + ".join(f"x{i}" for i in range(1000)) + ")"
    assert check_assign(formula, ANY).endswith(" + x999)")


def test_a_badly_configured_method_table_is_a_server_error_not_injection():
    for function in ["system('ls')", "base::system; q", "meanDS", "base::`system`", ""]:
        with pytest.raises(GatewayError) as info:
            check_aggregate("meanDS(D)", {"meanDS": function})
        assert not isinstance(info.value, ExpressionRefused)
        assert info.value.status == 500


def test_only_text_is_accepted():
    with pytest.raises(TypeError):
        check_assign(b"meanDS(D)", ASSIGN)  # type: ignore[arg-type]


def test_parse_gives_the_ast():
    node = expression.parse("f(a, b = 'x', y ~ z + 1)")
    assert isinstance(node, expression.Call)
    assert node.name == "f"
    assert node.args[0] == expression.Arg(None, expression.Symbol("a"))
    assert node.args[1] == expression.Arg(expression.Symbol("b"), expression.String("x"))
    assert node.args[2].value == expression.Formula(
        expression.Symbol("y"),
        expression.FormulaTerm((expression.Symbol("z"), expression.Number("1")), ("+",)),
    )
    assert expression.parse("a * b + c") == expression.BinaryChain(
        (expression.Symbol("a"), expression.Symbol("b"), expression.Symbol("c")), ("*", "+")
    )


# ---------------------------------------------------------------- robustness (fuzz)

_ALPHABET = "abDxy_$.-+*/^!=~:;,()[]{}<>&|'\"`@#%\\ \t\n01239eEL\x00\u0430"


def test_random_input_is_refused_or_rewritten_never_crashes():
    rng = random.Random(20240501)
    methods = {"f": "dsBase::f", "g": "dsBase::g", "meanDS": "dsBase::meanDS"}
    for _ in range(5000):
        expr = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 30)))
        for check in (check_assign, check_aggregate):
            try:
                out = check(expr, methods)
            except ExpressionRefused as e:
                assert e.message
            else:
                assert isinstance(out, str)
                assert out.isascii()


def _random_expression(rng: random.Random, depth: int = 0) -> str:
    """A random expression of the grammar."""
    choice = rng.randrange(10 if depth < 4 else 5)
    if choice == 0:
        return rng.choice(["D", "D$age", "TRUE", "NULL", "a.b_c", "x-y", "D$a-1"])
    if choice == 1:
        return rng.choice(["1", "-2.5", "1e-3", "7L", ".5", "3:9"])
    if choice == 2:
        return rng.choice(["'a'", '"D$x"', "'1,2;3:4'", '"a+b-c.d_e"'])
    if choice == 3:
        terms = " + ".join(rng.choice(["x", "z", "x:z", "(x * z)", "1", "x^2"]) for _ in "ab")
        return f"y ~ {terms}"
    if choice == 4:
        return "g()"
    if choice in (5, 6):
        args = []
        for _ in range(rng.randint(1, 3)):
            arg = _random_expression(rng, depth + 1)
            args.append(f"n{len(args)} = {arg}" if rng.random() < 0.3 else arg)
        return f"{rng.choice(['f', 'g'])}({', '.join(args)})"
    if choice == 7:
        return f"({_random_expression(rng, depth + 1)})"
    left = rng.choice(["D$x", "f(D)", "2", "(D$y)"])
    op = rng.choice(["+", "-", "*", "/", "^", "%*%"])
    return f"{left} {op} {_random_expression(rng, depth + 1)}"


_R_CHECK = r"""
allowed <- c("~", "$", "-", ":", "+", "*", "^", "%in%", "(")
check <- function(e) {
  if (!is.call(e)) return(invisible())
  head <- e[[1]]
  if (is.call(head)) {
    if (!identical(head[[1]], as.name("::")) || length(head) != 3) stop("bad head")
  } else if (!(is.name(head) && as.character(head) %in% allowed)) {
    stop(paste("calls", deparse(head)))
  }
  for (a in as.list(e)[-1]) check(a)
}
con <- file("stdin")
lines <- readLines(con)
close(con)
for (line in lines) {
  res <- tryCatch({
    p <- parse(text = line, keep.source = FALSE)
    if (length(p) != 1) stop("not one expression")
    check(p[[1]])
    "OK"
  }, error = function(e) paste("ERR", conditionMessage(e)))
  cat(res, "\n", sep = "")
}
"""


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="needs Rscript")
def test_every_rewrite_is_one_r_expression_calling_only_pkg_functions():
    """R parses each output as exactly one expression, and every call in it is either
    `pkg::fun(...)` or one of the operators the rewriter writes itself."""
    rng = random.Random(7)
    methods = {"f": "dsBase::f", "g": "base::g"}
    outputs = [check_assign(expr, methods) for expr, methods in ((e, m) for e, m, _ in REWRITES)]
    outputs += [check_assign(_random_expression(rng), methods) for _ in range(400)]
    result = subprocess.run(
        ["Rscript", "--vanilla", "-e", _R_CHECK],
        input="\n".join(outputs) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    verdicts = result.stdout.splitlines()
    assert len(verdicts) == len(outputs)
    bad = [(o, v) for o, v in zip(outputs, verdicts, strict=True) if v != "OK"]
    assert bad == []
