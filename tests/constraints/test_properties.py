"""Property tests: admitted values really satisfy each constraint, checked against independent oracles."""

from __future__ import annotations

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.constraints import (
    ConstraintError,
    TemplateError,
    evaluate,
    fill_templates,
    merge,
    validate_constraints,
)

MODEST = settings(max_examples=200, deadline=None)

# Segments chosen so that near-misses are common: shared prefixes, dots, separators, NUL, metacharacters.
SEGMENT_PARTS = [
    "a",
    "b",
    "al",
    "alice",
    ".",
    "..",
    "",
    "%2e",
    "\\",
    "\x00",
    "\n",
    "*",
    "/",
    "\uff0e",
    "\uff0f",
    "x",
]
segment = st.lists(st.sampled_from(SEGMENT_PARTS), min_size=0, max_size=3).map("".join)
clean_segment = st.lists(
    st.sampled_from(["a", "b", "al", "alice", "x", ".x", "..."]), min_size=1, max_size=2
).map("".join)

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
listable_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([0.0, -0.0, 1.0, 2.5, 1e300]),
    st.sampled_from(["", "a", "A", "1", "true", "null", "0"]),
)
json_value = st.recursive(
    json_scalar,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "c", "a.b", "p", ""]) | st.text(max_size=3), children, max_size=4
        )
    ),
    max_leaves=20,
)


def same_scalar(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def path_segments(path: str) -> list[str] | None:
    """Independent oracle: the segments of a clean absolute path, or None when it is not clean."""
    if not path.startswith("/") or "\\" in path or re.search(r"[\x00-\x1f\x7f-\x9f]", path):
        return None
    body = path[1:]
    if body.endswith("/"):
        body = body[:-1]
    if body == "":
        return []
    parts = body.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return parts


# --------------------------------------------------------------------------- prefix


@MODEST
@given(
    prefix=st.lists(clean_segment, max_size=3),
    trailing=st.booleans(),
    argument=st.lists(segment, max_size=5),
    arg_trailing=st.booleans(),
    absolute=st.booleans(),
)
def test_admitted_paths_lie_under_the_prefix(
    prefix: list[str], trailing: bool, argument: list[str], arg_trailing: bool, absolute: bool
) -> None:
    prefix_text = "/" + "/".join(prefix) + ("/" if trailing and prefix else "")
    path = ("/" if absolute else "") + "/".join(argument) + ("/" if arg_trailing else "")
    if evaluate({"p": {"prefix": prefix_text}}, {"p": path}) == []:
        segments = path_segments(path)
        assert segments is not None, path
        assert segments[: len(prefix)] == prefix, (prefix_text, path)
        assert len(segments) >= len(prefix)


@MODEST
@given(
    prefix=st.lists(clean_segment, max_size=3),
    rest=st.lists(clean_segment, max_size=3),
    trailing=st.booleans(),
)
def test_clean_paths_under_the_prefix_are_admitted(
    prefix: list[str], rest: list[str], trailing: bool
) -> None:
    prefix_text = "/" + "/".join(prefix)
    path = "/" + "/".join(prefix + rest) + ("/" if trailing and (prefix or rest) else "")
    assert evaluate({"p": {"prefix": prefix_text}}, {"p": path}) == []


@MODEST
@given(
    sub=st.text(max_size=6) | segment, other=st.text(max_size=6) | segment, tail=st.lists(segment, max_size=3)
)
def test_filled_prefix_confines_to_that_users_directory(sub: str, other: str, tail: list[str]) -> None:
    try:
        filled = fill_templates({"p": {"prefix": "/home/${sub}/"}}, sub=sub, claims={}, allowed_claims=())
    except TemplateError:
        return
    # A fill that succeeded produced a single, clean segment.
    assert path_segments(f"/home/{sub}") == ["home", sub]
    for who in (sub, other):
        path = "/" + "/".join(["home", who, *tail])
        if evaluate(filled, {"p": path}) == []:
            segments = path_segments(path)
            assert segments is not None and segments[:2] == ["home", sub], (sub, path)


# --------------------------------------------------------------------------- glob


@MODEST
@given(
    sub=st.text(alphabet="ab*?[]!-./\\\n", max_size=6), candidate=st.text(alphabet="ab*?[]!-.", max_size=8)
)
def test_filled_glob_matches_the_value_literally(sub: str, candidate: str) -> None:
    try:
        exact = fill_templates({"g": {"glob": "${sub}"}}, sub=sub, claims={}, allowed_claims=())
        starred = fill_templates({"g": {"glob": "r-${sub}-*"}}, sub=sub, claims={}, allowed_claims=())
    except TemplateError:
        assert sub == "" or "/" in sub or "\\" in sub or "\n" in sub
        return
    assert evaluate(exact, {"g": sub}) == []
    assert evaluate(starred, {"g": f"r-{sub}-anything"}) == []
    if evaluate(exact, {"g": candidate}) == []:
        assert candidate == sub
    if evaluate(starred, {"g": "r-" + candidate}) == []:
        assert ("r-" + candidate).startswith(f"r-{sub}-")


# --------------------------------------------------------------------------- eq / in


@MODEST
@given(allowed=st.lists(listable_scalar, min_size=1, max_size=5), value=listable_scalar | json_scalar)
def test_in_never_admits_an_unlisted_value(allowed: list[object], value: object) -> None:
    admitted = evaluate({"v": {"in": allowed}}, {"v": value}) == []
    assert admitted == any(same_scalar(item, value) for item in allowed)


@MODEST
@given(expected=listable_scalar, value=listable_scalar | json_value)
def test_eq_admits_exactly_the_same_json_scalar(expected: object, value: object) -> None:
    admitted = evaluate({"v": {"eq": expected}}, {"v": value}) == []
    assert admitted == same_scalar(expected, value)


@MODEST
@given(
    allowed=st.lists(st.text(alphabet="aAbBkK\u212a\u017fsS", max_size=3), min_size=1, max_size=4),
    value=st.text(alphabet="aAbBkK\u212a\u017fsS", max_size=3),
)
def test_case_insensitive_in_differs_only_in_ascii_case(allowed: list[str], value: str) -> None:
    if evaluate({"v": {"in": allowed, "case_insensitive": True}}, {"v": value}) == []:
        assert any(len(item) == len(value) and item.lower() == value.lower() for item in allowed)
        assert any(
            all(
                x == y or (x.isascii() and y.isascii() and x.lower() == y.lower())
                for x, y in zip(item, value, strict=True)
            )
            for item in allowed
            if len(item) == len(value)
        )


# --------------------------------------------------------------------------- numbers


@MODEST
@given(
    low=st.integers(-5, 5) | st.floats(-5, 5),
    high=st.integers(-5, 5) | st.floats(-5, 5),
    value=st.integers(-7, 7) | st.floats(allow_nan=True) | st.booleans(),
)
def test_min_max_admit_only_finite_numbers_in_range(low: float, high: float, value: object) -> None:
    try:
        constraints = validate_constraints({"n": {"min": low, "max": high}})
    except ConstraintError:
        assert low > high
        return
    if evaluate(constraints, {"n": value}) == []:
        assert type(value) in (int, float)
        assert math.isfinite(value)  # type: ignore[arg-type]
        assert low <= value <= high  # type: ignore[operator]


@MODEST
@given(
    a=st.tuples(st.integers(-5, 5), st.integers(-5, 5)),
    b=st.tuples(st.integers(-5, 5), st.integers(-5, 5)),
    value=st.integers(-7, 7),
)
def test_merge_admits_exactly_the_intersection(a: tuple[int, int], b: tuple[int, int], value: int) -> None:
    ca = {"n": {"min": min(a), "max": max(a)}}
    cb = {"n": {"min": min(b), "max": max(b)}}
    both = evaluate(ca, {"n": value}) == [] and evaluate(cb, {"n": value}) == []
    try:
        merged = merge(ca, cb)
    except ConstraintError:
        assert max(min(a), min(b)) > min(max(a), max(b))  # the ranges really are disjoint
        assert not both
        return
    assert (evaluate(merged, {"n": value}) == []) == both


# --------------------------------------------------------------------------- robustness

WIDE = {
    "a": {"eq": "x"},
    "b": {"in": [1, "1", None]},
    "p": {"prefix": "/home/alice/", "max_length": 64},
    "g": {"glob": "*.t?t", "case_insensitive": True},
    "n": {"min": 0, "max": 10.5},
    "a.b": {"max_length": 2},
    "c.d.e": {"eq": None},
}


@MODEST
@given(
    arguments=st.dictionaries(
        st.sampled_from(["a", "b", "p", "g", "n", "c", "a.b"]) | st.text(max_size=3), json_value
    )
)
def test_evaluate_never_raises_on_arbitrary_arguments(arguments: dict[str, object]) -> None:
    violations = evaluate(WIDE, arguments)
    for v in violations:
        assert v.reason.isascii() and "\n" not in v.reason


@MODEST
@given(constraints=json_value, arguments=json_value)
def test_evaluate_never_raises_on_arbitrary_constraint_sets(constraints: object, arguments: object) -> None:
    violations = evaluate(constraints, arguments)  # type: ignore[arg-type]
    try:
        valid = validate_constraints(constraints) is not None
    except ConstraintError:
        valid = False
    if not valid:
        assert violations, "an invalid constraint set must never admit"


@MODEST
@given(
    constraints=st.dictionaries(
        st.text(max_size=4),
        st.dictionaries(
            st.sampled_from(["eq", "in", "prefix", "glob", "min", "max", "max_length", "case_insensitive"]),
            json_value,
            max_size=3,
        ),
        max_size=3,
    )
)
def test_validate_is_idempotent_or_raises_constraint_error(constraints: dict[str, dict[str, object]]) -> None:
    try:
        once = validate_constraints(constraints)
    except ConstraintError as exc:
        assert "\n" not in str(exc) and str(exc).isascii()
        return
    assert validate_constraints(once) == once
