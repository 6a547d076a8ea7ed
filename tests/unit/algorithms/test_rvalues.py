"""Reading results in every spelling the drivers deliver: jsonlite's toJSON (unboxed or
not) and its serializeJSON fallback."""

import json
import math

import numpy as np
import pytest

from algorithms import _rvalues as rv

# jsonlite::serializeJSON(list(a = matrix(c(1/3, NA, 3, 4), 2, dimnames = ...), b = NA_character_,
#   c = NULL, d = c(u = 1L, v = NA), e = TRUE, f = NaN, g = Inf, h = factor(c("a", "b")),
#   i = function(x) x))
SERIALIZED = json.loads(
    '{"type":"list","attributes":{"names":{"type":"character","attributes":{},"value":'
    '["a","b","c","d","e","f","g","h","i"]}},"value":[{"type":"double","attributes":{"dim":'
    '{"type":"integer","attributes":{},"value":[2,2]},"dimnames":{"type":"list","attributes":{},'
    '"value":[{"type":"character","attributes":{},"value":["x","y"]},{"type":"NULL"}]}},'
    '"value":[0.33333333,"NA",3,4]},{"type":"character","attributes":{},"value":[null]},'
    '{"type":"NULL"},{"type":"integer","attributes":{"names":{"type":"character","attributes":'
    '{},"value":["u","v"]}},"value":[1,"NA"]},{"type":"logical","attributes":{},"value":[true]},'
    '{"type":"double","attributes":{},"value":["NaN"]},{"type":"double","attributes":{},"value":'
    '["Inf"]},{"type":"integer","attributes":{"levels":{"type":"character","attributes":{},'
    '"value":["a","b"]},"class":{"type":"character","attributes":{},"value":["factor"]}},'
    '"value":[1,2]},{"type":"closure","attributes":{},"value":[]}]}'
)

# a 1-D table as the gateway's Opal face sends it (serializeJSON fallback)
TABLE_1D = {
    "type": "integer",
    "attributes": {
        "dim": {"type": "integer", "attributes": {}, "value": [3]},
        "dimnames": {
            "type": "list",
            "attributes": {"names": {"type": "character", "attributes": {}, "value": ["rvar"]}},
            "value": [{"type": "character", "attributes": {}, "value": ["female", "male", None]}],
        },
        "class": {"type": "character", "attributes": {}, "value": ["table"]},
    },
    "value": [203, 197, 0],
}


def test_decode_serialized_values_like_tojson():
    out = rv.decode(SERIALIZED)
    assert list(out) == ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
    # column-major values become rows, NA None
    assert out["a"] == [[0.33333333, 3], [None, 4]]
    assert out["b"] is None
    assert out["c"] is None
    assert out["d"] == [1, None]  # names of atomic vectors dropped, as toJSON does
    assert out["e"] is True
    assert math.isnan(out["f"])
    assert out["g"] == math.inf
    assert out["h"] == ["a", "b"]
    assert out["i"] is None
    assert rv.decode(TABLE_1D) == [203, 197, 0]


def test_decode_data_frame_as_records():
    frame = {
        "type": "list",
        "attributes": {
            "names": {"type": "character", "attributes": {}, "value": ["a", "Total"]},
            "class": {"type": "character", "attributes": {}, "value": ["data.frame"]},
            "row.names": {"type": "integer", "attributes": {}, "value": [1]},
        },
        "value": [
            {"type": "double", "attributes": {}, "value": [2]},
            {"type": "double", "attributes": {}, "value": [5]},
        ],
    }
    assert rv.decode(frame) == [{"a": 2, "Total": 5}]


def test_decode_leaves_plain_json_alone():
    plain = {"EstimatedMean": 1.5, "type": "x", "ValidityMessage": "VALID ANALYSIS"}
    assert rv.decode(plain) == plain
    assert rv.decode({"type": "list", "value": [1], "other": 2}) == {
        "type": "list",
        "value": [1],
        "other": 2,
    }
    assert rv.decode([[1, 2], [3, 4]]) == [[1, 2], [3, 4]]


@pytest.mark.parametrize("value", [5, [5], [[5]], {"n": 5}])
def test_scalars_boxed_or_not(value):
    assert rv.number(value) == 5.0
    assert rv.integer(value) == 5


def test_numbers_and_missing():
    assert math.isnan(rv.number(None))
    assert math.isnan(rv.number([None]))
    np.testing.assert_array_equal(rv.numbers([1, None, 3]), [1, np.nan, 3])
    np.testing.assert_array_equal(rv.numbers(7), [7.0])
    np.testing.assert_array_equal(rv.numbers({"5%": 1, "Mean": 2}), [1.0, 2.0])
    with pytest.raises(ValueError, match="count"):
        rv.integer(None)
    with pytest.raises(ValueError, match="one number"):
        rv.number([1, 2])


def test_matrices_in_every_shape():
    np.testing.assert_array_equal(rv.matrix([[1, 2], [3, 4]], 2, 2), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(rv.matrix(5, 1, 1), [[5]])  # an unboxed 1 x 1 matrix
    np.testing.assert_array_equal(rv.matrix([1, 2, 3], 1, 3), [[1, 2, 3]])
    np.testing.assert_array_equal(rv.matrix([[1], [2]], 2, 1), [[1], [2]])
    with pytest.raises(ValueError, match="2 x 2"):
        rv.matrix([[1, 2, 3]], 2, 2)


def test_strings_and_text():
    assert rv.strings("a") == ["a"]
    assert rv.strings(["a", None]) == ["a", None]
    assert rv.strings(None) == []
    assert rv.text(["No errors"]) == "No errors"
    assert rv.text(None) is None
    assert rv.text([]) is None
