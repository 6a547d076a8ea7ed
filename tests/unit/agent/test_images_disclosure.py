"""The disclosure checks on image output (gateway/agent/images/disclosure.py), rule by
rule, with the numbers at each limit."""

from __future__ import annotations

import json

import pytest

from gateway.agent.images.contract import OutputFile
from gateway.agent.images.disclosure import (
    DisclosureRefused,
    DisclosureRules,
    check_output,
    check_outputs,
)

RULES = DisclosureRules()  # min_count 5, max_rows 100


def csv_check(text: str, rules: DisclosureRules = RULES) -> str | None:
    return check_output("t.csv", "text/csv", text, rules)


def json_check(value, rules: DisclosureRules = RULES) -> str | None:
    return check_output("t.json", "application/json", json.dumps(value).encode(), rules)


def test_counts_are_zero_or_at_least_the_minimum():
    assert csv_check("sex,n\nfemale,5\nmale,0\n") is None  # 5 and 0 are fine
    reason = csv_check("sex,n\nfemale,12\nmale,4\n")
    assert reason.startswith("t.csv: the table, column 'n' holds the count 4")
    assert "under the minimum of 5" in reason and "Merge small groups" in reason
    # Names that say "count", any case; a float that is a count; a count under a JSON key.
    assert "count 1" in csv_check("group,Count\na,1\n")
    assert "count 2" in csv_check("group,n_cases\na,2.0\n")
    assert "count 3" in json_check({"smokers": {"count": 3, "mean_age": 50.5}})
    assert "count 4" in json_check([{"level": "a", "freq": 4}, {"level": "b", "freq": 40}])
    assert "count 2" in json_check({"levels": ["a", "b"], "counts": [20, 2]})
    # Other numbers are not counts, whatever their size.
    assert csv_check("variable,mean,sd\nage,3,1.5\n") is None
    assert json_check({"EstimatedMean": 2, "Nvalid": 2}) is None
    # A stricter minimum.
    assert "minimum of 10" in csv_check("g,n\na,9\n", DisclosureRules(min_count=10))


def test_more_rows_than_the_limit_look_row_level():
    header = "age,bmi\n"
    assert csv_check(header + "40,22.5\n" * 100) is None
    reason = csv_check(header + "40,22.5\n" * 101)
    assert "has 101 rows, more than the limit of 100" in reason
    assert "row-level" in reason
    assert json_check(list(range(100))) is None
    assert "101 rows" in json_check(list(range(101)))
    assert "150 rows" in json_check({"model": {"residuals": [0.1] * 150}})
    # pandas' split form: data rows, and the index
    frame = {"columns": ["age"], "index": list(range(101)), "data": [[1]] * 101}
    assert "101 rows" in json_check(frame)
    assert "3 rows" in json_check({"a": [1, 2, 3], "b": [4, 5, 6]}, DisclosureRules(max_rows=2))


def test_columns_named_like_identifiers_are_refused():
    reason = csv_check("patient_id,age\n1,40\n2,50\n")
    assert "column 'patient_id', named like an identifier" in reason
    assert "identifier" in csv_check("ID,age\nx,40\n")
    assert "identifier" in json_check([{"subject": "s1", "mean": 1.5}])
    assert "identifier" in json_check({"ids": [1, 2, 3]})
    # A single value under such a key is no column of identifiers; names that only
    # contain the letters are not identifiers either.
    assert json_check({"subject_age_mean": 51.2}) is None
    assert csv_check("valid,width\n1,2\n") is None
    # The operator's own patterns.
    rules = DisclosureRules(identifiers=("^postcode$",))
    assert "identifier" in csv_check("postcode,mean\n1234,5.5\n", rules)
    assert csv_check("patient_id,mean\n1,5.5\n", rules) is None


def test_pictures_leave_only_if_allowed():
    png = b"\x89PNG..."
    assert check_output("p.png", "image/png", png, RULES) is None
    reason = check_output("p.png", "image/png", png, DisclosureRules(allow_png=False))
    assert "pictures may not leave here" in reason


def test_rules_from_settings_and_the_stricter_of_two():
    node = DisclosureRules.from_dict({"min_count": 3, "max_rows": 500})
    coordinator = DisclosureRules.from_dict(
        {"min_count": 10, "max_rows": 1000, "allow_png": False, "identifiers": "^nhs"}
    )
    both = node.strictest(coordinator)
    assert (both.min_count, both.max_rows, both.allow_png) == (10, 500, False)
    assert "^nhs" in both.identifiers and both.identifiers[0] == node.identifiers[0]
    assert DisclosureRules.from_dict(both.to_dict()) == both
    for bad in [{"min_count": 0}, {"max_rows": "many"}, {"colour": 1}, {"identifiers": ["("]}]:
        with pytest.raises(ValueError):
            DisclosureRules.from_dict(bad)


def test_check_outputs_takes_node_files_and_coordinator_dicts():
    good = OutputFile("mean.json", "application/json", b'{"mean": 41.5}')
    bad = OutputFile("tab.csv", "text/csv", b"g,n\na,2\n")
    check_outputs([good], RULES)
    expected = r"tab\.csv: the table, column 'n' holds the count 2"
    with pytest.raises(DisclosureRefused, match=expected):
        check_outputs([good, bad], RULES)
    as_sent = [bad.to_dict()]  # what the coordinator receives: CSV as text
    with pytest.raises(DisclosureRefused, match="count 2"):
        check_outputs(as_sent, RULES)
    unreadable = check_output("x.json", "application/json", b"{", RULES)
    assert "could not be read for the disclosure check" in unreadable
