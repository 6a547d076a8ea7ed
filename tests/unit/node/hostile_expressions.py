"""Expressions a DataSHIELD server must refuse, each with a substring of the refusal's
message that names the problem. Shared by the expression unit tests and the HTTP security
battery: import it as `tests.unit.node.hostile_expressions` (repository root on sys.path,
e.g. `python -m pytest`) or as `hostile_expressions` from a test in this directory.

Every entry is refused by both `check_aggregate` and `check_assign` of
gateway/node/expression.py. The expected substring holds for `check_aggregate` with a
dsBase-compatible AGGREGATE table (dsBase or dsGatewayBase: `meanDS`, `glmDS1` allowed,
no base R function beyond the few dsBase maps, such as `exists`). Entries refused for the
grammar give the same message for assign; entries refused for a non-whitelisted function
nested inside `meanDS` may, on the assign side, name `meanDS` instead (it is an aggregate
method only), so check for "method with name: " there.
"""

_DEEP_CALLS = "meanDS(" * 100 + "D" + ")" * 100
_DEEP_PARENS = "(" * 1000 + "D" + ")" * 1000
_DEEP_FORMULA = "meanDS(y ~ " + "(" * 100 + "x" + ")" * 100 + ")"
_TOO_LONG_ARGS = "meanDS(" + "D, " * 4000 + "D)"

_STRINGS = "Strings may only contain"
_NOT_ASCII = "Only ASCII characters are allowed."
_CONTROL = "Control characters are not allowed."
_DOT = "names starting with '.' are not allowed"
_QUALIFIED = "Package-qualified names (:: and :::) are not allowed"
_ONE = "Only one expression is allowed"
_EQUALS = "'=' is only allowed to name a function argument"
_IN_FORMULA = "Function calls are not allowed in formulas."
_DEEP = "nested too deeply (more than 64 levels"
_LONG = "The expression is too long"

HOSTILE_EXPRESSIONS: list[tuple[str, str]] = [
    # functions that are not whitelisted, at the root
    ('system("ls")', "method with name: system"),
    ('system2("ls")', "method with name: system2"),
    ('eval(parse(text="x"))', "method with name: eval"),
    ("evalq(D)", "method with name: evalq"),
    ('parse(text="D")', "method with name: parse"),
    ('str2lang("D")', "method with name: str2lang"),
    ('get("system")', "method with name: get"),
    ('do.call("system", list("ls"))', "method with name: do.call"),
    ('match.fun("system")', "method with name: match.fun"),
    ('Sys.setenv(R_LIBS="x")', "method with name: Sys.setenv"),
    ("Sys.getenv()", "method with name: Sys.getenv"),
    ("q()", "method with name: q"),
    ('quit("no")', "method with name: quit"),
    ("library(parallel)", "method with name: library"),
    ("require(parallel)", "method with name: require"),
    ('source("x.R")', "method with name: source"),
    ('readRDS("x.rds")', "method with name: readRDS"),
    ('unlink("x")', "method with name: unlink"),
    ('setwd("x")', "method with name: setwd"),
    ('assign("D", 1)', "method with name: assign"),
    ("options(nfilter.tab=0)", "method with name: options"),
    ("rm(list = ls())", "method with name: rm"),
    ("environment()", "method with name: environment"),
    ("body(meanDS)", "method with name: body"),
    ('dyn.load("x.so")', "method with name: dyn.load"),
    ('download.file("a", "b")', "method with name: download.file"),
    # not whitelisted, nested in an allowed call: positional, named, in an operand
    ('meanDS(system("ls"))', "method with name: system"),
    ('meanDS(D$age, type = system("ls"))', "method with name: system"),
    ("meanDS(x = eval(D))", "method with name: eval"),
    ('meanDS(meanDS(get("D")))', "method with name: get"),
    ('meanDS((system("ls")))', "method with name: system"),
    ('meanDS(D$age + system("ls"))', "method with name: system"),
    ('meanDS(1e5L, D, x = D, z = do.call("q", list()))', "method with name: do.call"),
    # calls inside formulas
    ('glmDS1(y ~ system("x"), "gaussian", NULL, NULL, D)', _IN_FORMULA),
    ('y ~ system("x")', _IN_FORMULA),
    ("meanDS(y ~ x + eval(z))", _IN_FORMULA),
    ("meanDS(y ~ x + I(x^2))", _IN_FORMULA),
    # package-qualified names
    ('base::system("ls")', _QUALIFIED),
    ('base:::system("ls")', _QUALIFIED),
    ('meanDS(base::get("D"))', _QUALIFIED),
    ("dsBase::meanDS(D$age)", _QUALIFIED),
    ("meanDS(y ~ base::x)", _QUALIFIED),
    # subsetting
    ("D[1, ]", 'Encountered: "["'),
    ("D[[1]]", 'Encountered: "["'),
    ('meanDS(D[D$age, "age"])', 'Encountered: "["'),
    ("meanDS(D$age)[1]", 'Encountered: "["'),
    # assignment
    ('x <- system("ls")', 'Encountered: "<"'),
    ("x <<- 1", 'Encountered: "<"'),
    ("1 -> x", 'Encountered: ">"'),
    ("meanDS(x <- 1)", 'Encountered: "<"'),
    ("x = 1", _EQUALS),
    ("meanDS(D$age) = 1", _EQUALS),
    ("meanDS((x = 1))", _EQUALS),
    ("meanDS(a = b = 1)", _EQUALS),
    # comparison and logic
    ("a == b", "Comparison operators (==, !=, <, >) are not allowed."),
    ("meanDS(a != b)", "Comparison operators (==, !=, <, >) are not allowed."),
    ("a < b", 'Encountered: "<"'),
    ("a > b", 'Encountered: ">"'),
    ("a & b", 'Encountered: "&"'),
    ("a && b", 'Encountered: "&"'),
    ("a | b", 'Encountered: "|"'),
    ("y ~ x | z", 'Encountered: "|"'),
    # braces, backticks, slots, R keywords
    ('{system("ls")}', 'Encountered: "{"'),
    ('`system`("ls")', "Backticks are not allowed."),
    ("meanDS(`D`)", "Backticks are not allowed."),
    ("D@data", "Slot access with @ is not allowed."),
    ("function(x) x", "'function' is a reserved word of R"),
    ('(function() system("ls"))()', "'function' is a reserved word of R"),
    ("if (TRUE) meanDS(D)", "'if' is a reserved word of R"),
    ("while(TRUE) D", "'while' is a reserved word of R"),
    ("meanDS(D$if)", "'if' is a reserved word of R"),
    # strings: only [A-Za-z0-9_.+-;:,$], at least one, no escapes
    ('meanDS("a b")', _STRINGS),
    ('exists("D\\"); system(\\"ls")', _STRINGS),
    ("exists('D\")", _STRINGS),
    ('exists("it\'s")', _STRINGS),
    ('exists("a\\nb")', _STRINGS),
    ('exists("a(b)")', _STRINGS),
    ('exists("a[1]")', _STRINGS),
    ('exists("x<-1")', _STRINGS),
    ('exists("a=b")', _STRINGS),
    ('exists("")', "Strings may not be empty."),
    ('exists("abc', "The string is not closed."),
    ('meanDS("D\u00a0")', _STRINGS),
    # names must start with a letter
    (".GlobalEnv", _DOT),
    ("meanDS(.Machine)", _DOT),
    ('.Call("x")', _DOT),
    ('.Internal(system("x"))', _DOT),
    ("meanDS(...)", _DOT),
    ("meanDS(D$.secret)", _DOT),
    ("meanDS(a-.b)", _DOT),
    ("meanDS(D$1)", "is not a valid name"),
    ("meanDS(D$age)$x", "Names must start with a letter."),
    ("_x", "Names must start with a letter."),
    # one expression only
    ('meanDS(D); system("ls")', _ONE),
    ('meanDS(D)\nsystem("ls")', _ONE),
    ("meanDS(D)\r\nq()", _ONE),
    ('meanDS(D)\t;\tsystem("x")', _ONE),
    ('meanDS(D) system("ls")', _ONE),
    ("meanDS(D);;", _ONE),
    (";meanDS(D)", 'Encountered " ";" "; "" at line 1, column 1.'),
    ("meanDS(D))", 'Encountered " ")" ") "" at line 1, column 10.'),
    # look-alike and invisible characters, control characters
    ("meanDS(D$\u0430ge)", _NOT_ASCII),  # Cyrillic a
    ('\u0455ystem("ls")', _NOT_ASCII),  # Cyrillic dze
    ('\uff53ystem("ls")', _NOT_ASCII),  # fullwidth s
    ('meanDS(D)\u037e system("ls")', _NOT_ASCII),  # Greek question mark
    ("meanDS(D$age\u200b)", _NOT_ASCII),  # zero-width space
    ('meanDS(D)\u2028system("x")', _NOT_ASCII),  # line separator
    ("meanDS(D\U0001d5bd)", _NOT_ASCII),  # mathematical sans-serif D
    ('meanDS(D)\x00system("ls")', _CONTROL),
    ("meanDS(\x1bD)", _CONTROL),
    ("meanDS(D)\x0c", _CONTROL),
    ("meanDS(D)\x7f", _CONTROL),
    # other operators and syntax
    ("meanDS(D) # comment", 'Encountered: "#"'),
    ("?system", 'Encountered: "?"'),
    ("meanDS(D %% 2)", "The only %-operators allowed are %*% and %in%."),
    ("meanDS(D %o% D)", "The only %-operators allowed are %*% and %in%."),
    ("meanDS(D %in% D)", 'Encountered " <F_OPERATOR> "%in% ""'),
    ("meanDS(-D)", 'Encountered " <COMMON_OPERATOR> "- ""'),
    ("meanDS(!D)", 'Encountered " <R_OPERATOR> "! ""'),
    ("meanDS(D\\x)", "Backslashes are not allowed."),
    # empty, unfinished, huge, deep
    ("", "The expression is empty."),
    ("  \n\t ", "The expression is empty."),
    ("meanDS(", "The expression is incomplete."),
    ("meanDS(D", "The expression is incomplete."),
    (_DEEP_CALLS, _DEEP),
    (_DEEP_PARENS, _DEEP),
    (_DEEP_FORMULA, _DEEP),
    (_TOO_LONG_ARGS, _LONG),
    ("D" * 10_001, _LONG),
]
