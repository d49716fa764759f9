"""The strict decoder: each rule with the input it stops, and a property against the standard library."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from issuer.kernel.strictjson import MAX_DEPTH, StrictJSONError, check_text, check_value, loads


@pytest.mark.parametrize("text, rule", [
    ('{"iat": 1, "iat": 2}', "duplicate"),
    ('{"a": {"b": 1, "b": 1}}', "duplicate"),
    ('{"iat": NaN}', "NaN"),
    ('{"iat": -Infinity}', "NaN"),
    ('{"iat": 1e400}', "range"),
    ('["\\ud800"]', "surrogate"),
    ('["\\udc00\\ud800"]', "surrogate"),
    ('{"\\ud800": 1}', "surrogate"),
    ('["a\\u0000b"]', "NUL"),
    ('{"\\u0000": 1}', "NUL"),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested"),
    ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested"),
    ("[1] [2]", "extra data"),
    ("\ufeff[1]", "byte order mark"),
    ("", "not JSON"),
    ("[1e5000000000]", "range"),
    ("1" * 5000, "not JSON"),  # beyond Python's int digit limit: a ValueError, not a crash
])
def test_refused(text: str, rule: str) -> None:
    with pytest.raises(StrictJSONError, match=rule):
        loads(text)
    with pytest.raises(StrictJSONError):
        loads(text.encode("utf-8", "surrogatepass"))


def test_bytes_must_be_utf8() -> None:
    with pytest.raises(StrictJSONError, match="UTF-8"):
        loads(b'["\xed\xa0\x80"]')  # a surrogate encoded as UTF-8 is not UTF-8
    with pytest.raises(StrictJSONError, match="UTF-8"):
        loads(b'["\xff"]')


def test_raw_surrogate_in_a_str_is_refused() -> None:
    with pytest.raises(StrictJSONError, match="surrogate"):
        loads('["\ud800"]')


def test_accepted() -> None:
    assert loads(' {"a": [1, 2.5, "\\ud83d\\ude00", "[{", null, true]} \n') == {
        "a": [1, 2.5, "\U0001F600", "[{", None, True]}
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert loads('"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["') == "[" * 42


def test_check_text_and_value() -> None:
    check_text("plain ünïcode \U0001F600")
    for bad in ("a\x00", "\udfff"):
        with pytest.raises(StrictJSONError, match="field"):
            check_text(bad, "field")
        with pytest.raises(StrictJSONError):
            check_value({"k": [1, {"x": bad}]})
        with pytest.raises(StrictJSONError):
            check_value({bad: 1})


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_json)
def test_same_value_as_the_standard_decoder_or_a_refusal(value: Any) -> None:
    """Whatever it accepts reads exactly as json.loads reads it; it never raises anything else."""
    text = json.dumps(value)
    try:
        got = loads(text)
    except StrictJSONError:
        text.encode("utf-8")  # refused: must be for a rule, i.e. the value holds NUL or a surrogate
        assert "\\u0000" in text or "\\ud" in text
        return
    assert got == json.loads(text)


@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_any_bytes_are_a_value_or_a_strict_refusal(data: bytes) -> None:
    with contextlib.suppress(StrictJSONError):
        loads(data)
