"""Schema, evaluation and merge of argument constraints (issuer.constraints)."""

from __future__ import annotations

import math

import pytest

from issuer.constraints import (
    MODIFIERS,
    OPERATORS,
    ConstraintError,
    ConstraintViolation,
    ConstraintViolationError,
    TemplateError,
    TemplateSyntaxError,
    check,
    evaluate,
    merge,
    validate_constraints,
)


def admitted(constraints: dict, arguments: dict) -> bool:
    return evaluate(constraints, arguments) == []


def one(op: str, operand: object, value: object, **extra: object) -> bool:
    """Is ``value`` admitted as argument ``a`` under ``{op: operand}``?"""
    return admitted({"a": {op: operand, **extra}}, {"a": value})


# --------------------------------------------------------------------------- API surface


def test_operator_set_is_closed() -> None:
    assert frozenset({"eq", "in", "prefix", "glob", "min", "max", "max_length"}) == OPERATORS
    assert frozenset({"case_insensitive"}) == MODIFIERS


def test_empty_set_admits_anything() -> None:
    assert evaluate({}, {"anything": [1, 2]}) == []
    assert validate_constraints({}) == {}


def test_unconstrained_arguments_are_not_bounded() -> None:
    assert admitted({"a": {"eq": 1}}, {"a": 1, "b": "whatever"})


# --------------------------------------------------------------------------- eq


@pytest.mark.parametrize(
    ("operand", "value", "ok"),
    [
        ("read", "read", True),
        ("read", "write", False),
        ("read", "Read", False),
        ("read", "read ", False),
        (1, 1, True),
        (1, 2, False),
        (True, True, True),
        (False, False, True),
        (None, None, True),
        (1.5, 1.5, True),
        (0.0, -0.0, True),
    ],
)
def test_eq(operand: object, value: object, ok: bool) -> None:
    assert one("eq", operand, value) is ok


@pytest.mark.parametrize(
    ("operand", "value"),
    [
        (1, True),
        (True, 1),
        (0, False),
        (False, 0),
        (1, 1.0),
        (1.0, 1),
        (1, "1"),
        ("1", 1),
        (None, "null"),
        (None, 0),
        (None, False),
        ("", None),
        ("a", ["a"]),
        ("a", {"a": 1}),
    ],
)
def test_eq_is_type_strict(operand: object, value: object) -> None:
    violations = evaluate({"a": {"eq": operand}}, {"a": value})
    assert len(violations) == 1
    assert violations[0].operator == "eq"


def test_eq_nan_argument_never_equal() -> None:
    assert not one("eq", 1.0, math.nan)


# --------------------------------------------------------------------------- in


def test_in() -> None:
    allowed = ["alpha", "beta", 3, None]
    assert one("in", allowed, "alpha")
    assert one("in", allowed, 3)
    assert one("in", allowed, None)
    assert not one("in", allowed, "gamma")
    assert not one("in", allowed, "ALPHA")
    assert not one("in", allowed, "alph")
    assert not one("in", allowed, 4)


@pytest.mark.parametrize("value", [True, 1.0, "3", ["alpha"], {"alpha": 1}])
def test_in_is_type_strict(value: object) -> None:
    assert not one("in", ["alpha", 1, 3], value)


def test_in_false_is_not_zero() -> None:
    assert not one("in", [0], False)
    assert not one("in", [False], 0)
    assert one("in", [False], False)


# --------------------------------------------------------------------------- glob


@pytest.mark.parametrize(
    ("pattern", "value", "ok"),
    [
        ("report-*.csv", "report-2024.csv", True),
        ("report-*.csv", "report-.csv", True),
        ("report-*.csv", "report-2024.csv.exe", False),
        ("report-*.csv", "xreport-1.csv", False),
        ("report-*.csv", "Report-1.csv", False),
        ("file?.txt", "file1.txt", True),
        ("file?.txt", "file10.txt", False),
        ("[abc]-x", "b-x", True),
        ("[abc]-x", "d-x", False),
        ("[!abc]-x", "d-x", True),
        ("[[]x]", "[x]", True),
        ("a[*]b", "a*b", True),
        ("a[*]b", "aXb", False),
        # '*' crosses '/': a glob is a string pattern, not a path pattern.
        ("docs/*", "docs/a/b/c", True),
        ("docs/*", "docs/../../etc/passwd", True),
        ("", "", True),
        ("", "x", False),
        ("*", "line1\nline2", True),
    ],
)
def test_glob(pattern: str, value: str, ok: bool) -> None:
    assert one("glob", pattern, value) is ok


@pytest.mark.parametrize("value", [1, 1.5, True, None, ["a"], {"a": "b"}])
def test_glob_on_non_string_fails(value: object) -> None:
    assert not one("glob", "*", value)


def test_glob_backslash_is_literal() -> None:
    assert one("glob", "a\\*", "a\\xyz")
    assert not one("glob", "a\\*", "a*")


# --------------------------------------------------------------------------- case_insensitive


def test_case_insensitive_eq_in_glob() -> None:
    assert one("eq", "Main", "mAIN", case_insensitive=True)
    assert one("in", ["Main", "dev"], "DEV", case_insensitive=True)
    assert one("glob", "feature/*", "FEATURE/X", case_insensitive=True)
    assert not one("eq", "main", "mainx", case_insensitive=True)
    assert one("eq", "main", "main", case_insensitive=False)
    assert not one("eq", "main", "MAIN", case_insensitive=False)


def test_case_insensitive_folds_ascii_only() -> None:
    # KELVIN SIGN and LONG S fold to 'k'/'s' under Unicode rules; a tool need not agree.
    assert not one("eq", "key", "\u212aey", case_insensitive=True)
    assert not one("glob", "k*", "\u212aey", case_insensitive=True)
    assert not one("in", ["ss"], "\u017fs", case_insensitive=True)
    assert not one("glob", "[a-z]", "\u017f", case_insensitive=True)


def test_case_insensitive_does_not_apply_to_prefix() -> None:
    c = {"a": {"prefix": "/home/alice/", "glob": "*", "case_insensitive": True}}
    assert not admitted(c, {"a": "/HOME/alice/x"})


def test_case_insensitive_false_is_normalised_away() -> None:
    assert validate_constraints({"a": {"eq": "x", "case_insensitive": False}}) == {"a": {"eq": "x"}}


# --------------------------------------------------------------------------- min / max


@pytest.mark.parametrize(
    ("ops", "value", "ok"),
    [
        ({"min": 1, "max": 10}, 1, True),
        ({"min": 1, "max": 10}, 10, True),
        ({"min": 1, "max": 10}, 5.5, True),
        ({"min": 1, "max": 10}, 0, False),
        ({"min": 1, "max": 10}, 11, False),
        ({"min": 1, "max": 10}, 10.000001, False),
        ({"min": 0.5}, 0.5, True),
        ({"min": 0.5}, 0, False),
        ({"max": -1}, -2, True),
        ({"max": -1}, 10**100, False),
        ({"min": -1}, 10**100, True),
    ],
)
def test_min_max(ops: dict, value: object, ok: bool) -> None:
    assert admitted({"a": ops}, {"a": value}) is ok


@pytest.mark.parametrize("value", [True, False, "5", None, [5], {"v": 5}, math.nan, math.inf, -math.inf])
def test_min_max_refuse_non_numbers(value: object) -> None:
    violations = evaluate({"a": {"min": 0, "max": 10}}, {"a": value})
    assert {v.operator for v in violations} == {"min", "max"}


def test_nan_is_refused_even_with_only_max() -> None:
    # NaN compares false with everything; a naive "value > max" check would admit it.
    assert not one("max", 10, math.nan)
    assert not one("min", 0, math.nan)


# --------------------------------------------------------------------------- max_length


def test_max_length() -> None:
    assert one("max_length", 3, "abc")
    assert not one("max_length", 3, "abcd")
    assert one("max_length", 3, "\u00e9\u00e9\u00e9")  # characters, not UTF-8 bytes
    assert one("max_length", 0, "")
    assert one("max_length", 2, [1, 2])
    assert not one("max_length", 2, [1, 2, 3])
    for value in (12, None, True, {"a": 1}, 1.5):
        assert not one("max_length", 100, value)


# --------------------------------------------------------------------------- several operators


def test_operators_combine_with_and() -> None:
    c = {"a": {"prefix": "/srv/", "glob": "*.txt", "max_length": 12}}
    assert admitted(c, {"a": "/srv/a.txt"})
    assert {v.operator for v in evaluate(c, {"a": "/srv/a.csv"})} == {"glob"}
    assert {v.operator for v in evaluate(c, {"a": "/etc/a.txt"})} == {"prefix"}
    assert {v.operator for v in evaluate(c, {"a": "/srv/abcdefgh.txt"})} == {"max_length"}
    assert {v.operator for v in evaluate(c, {"a": "/etc/abcdefgh.csv"})} == {"prefix", "glob", "max_length"}


def test_every_key_is_checked() -> None:
    c = {"a": {"eq": 1}, "b": {"eq": 2}}
    assert admitted(c, {"a": 1, "b": 2})
    assert [v.argument for v in evaluate(c, {"a": 0, "b": 0})] == ["a", "b"]


# --------------------------------------------------------------------------- missing / nested


def test_missing_argument_fails() -> None:
    violations = evaluate({"a": {"eq": 1, "max": 4}}, {"b": 1})
    assert {(v.argument, v.operator) for v in violations} == {("a", "eq"), ("a", "max")}
    assert all(v.reason.startswith("missing") for v in violations)


def test_null_is_not_missing() -> None:
    assert one("eq", None, None)
    assert not one("eq", "x", None)


def test_nested_dotted_key() -> None:
    c = {"filter.project": {"eq": "apollo"}}
    assert admitted(c, {"filter": {"project": "apollo", "other": 1}})
    assert not admitted(c, {"filter": {"project": "gemini"}})
    assert not admitted(c, {"filter": {}})
    assert not admitted(c, {})


@pytest.mark.parametrize("parent", ["apollo", 1, None, True, ["project"], [{"project": "apollo"}]])
def test_dotted_key_through_non_object_fails(parent: object) -> None:
    violations = evaluate({"filter.project": {"eq": "apollo"}}, {"filter": parent})
    assert len(violations) == 1
    assert "not an object" in violations[0].reason


def test_deeply_nested_key() -> None:
    c = {"a.b.c.d": {"in": [1]}}
    assert admitted(c, {"a": {"b": {"c": {"d": 1}}}})
    assert not admitted(c, {"a": {"b": {"c": {"d": 2}}}})
    assert not admitted(c, {"a": {"b": "c"}})


@pytest.mark.parametrize(
    "arguments",
    [
        {"filter.project": "evil", "filter": {"project": "apollo"}},
        {"a.b": "evil", "a": {"b": "apollo"}},
    ],
)
def test_literal_dotted_key_makes_the_path_ambiguous(arguments: dict) -> None:
    key = next(iter(k for k in arguments if "." in k))
    c = {key: {"eq": "apollo"}}
    violations = evaluate(c, arguments)
    assert violations
    assert violations[0].reason.startswith("ambiguous")


def test_ambiguity_is_checked_at_every_level() -> None:
    c = {"a.b.c": {"eq": 1}}
    assert admitted(c, {"a": {"b": {"c": 1}}})
    assert not admitted(c, {"a": {"b": {"c": 1}, "b.c": 2}})
    assert not admitted(c, {"a": {"b": {"c": 1}}, "a.b": {"c": 2}})
    assert not admitted(c, {"a": {"b": {"c": 1}}, "a.b.c": 1})


def test_non_mapping_arguments_fail_closed() -> None:
    for arguments in (None, [], "a", 1):
        violations = evaluate({"a": {"eq": 1}}, arguments)  # type: ignore[arg-type]
        assert violations and violations[0].reason.startswith("missing")


# --------------------------------------------------------------------------- prefix


HOME = {"path": {"prefix": "/home/alice/"}}


@pytest.mark.parametrize(
    "path",
    [
        "/home/alice",
        "/home/alice/",
        "/home/alice/x",
        "/home/alice/x/",
        "/home/alice/a/b/c.txt",
        "/home/alice/...",
        "/home/alice/.hidden",
        "/home/alice/..x",
        "/home/alice/x..",
        "/home/alice/%2e%2e/bob",  # not decoded: three literal characters
        "/home/alice/ ",
        "/home/alice/\u00e9t\u00e9",
        "/home/alice/\ufb01le",  # NFKC 'file', still inside
    ],
)
def test_prefix_admits_inside(path: str) -> None:
    assert admitted(HOME, {"path": path}), evaluate(HOME, {"path": path})


@pytest.mark.parametrize(
    ("path", "reason_part"),
    [
        ("/home/alice/../bob", "'..' segment"),
        ("/home/alice/..", "'..' segment"),
        ("/home/alice/../alice/x", "'..' segment"),  # would normalise inside; still refused
        ("/home/alice/./x", "'..' segment"),
        ("/home/alice/.", "'..' segment"),
        ("/home/alice//x", "'//'"),
        ("//home/alice/x", "'//'"),
        ("/home/alice\\..\\bob", "backslash"),
        ("/home/alice/x\\y", "backslash"),
        ("/home/alice/x\x00", "control"),
        ("/home/alice/x\x00/../../bob", "control"),
        ("/home/alice/x\ny", "control"),
        ("/home/alice/x\x7f", "control"),
        ("/home/alice/x\x85", "control"),
        ("/home/alicex", "not under"),
        ("/home/alicex/y", "not under"),
        ("/home/alic", "not under"),
        ("/home/", "not under"),
        ("/home", "not under"),
        ("/", "not under"),
        ("/etc/passwd", "not under"),
        ("home/alice/x", "absolute"),
        ("./home/alice/x", "absolute"),
        ("", "absolute"),
        ("~/x", "absolute"),
        ("/home/alice/\uff0e\uff0e/bob", "NFKC"),  # fullwidth full stops
        ("/home/alice/\u2025/bob", "NFKC"),  # TWO DOT LEADER
        ("/home/alice\uff0fx", "not under"),  # fullwidth solidus: one segment 'alice/x'
        ("/home/alice/x\uff0f..\uff0f..\uff0fbob", "NFKC"),  # inside raw, escapes after NFKC
    ],
)
def test_prefix_attacks_are_refused(path: str, reason_part: str) -> None:
    violations = evaluate(HOME, {"path": path})
    assert len(violations) == 1
    assert reason_part in violations[0].reason


def test_prefix_without_trailing_slash_keeps_the_boundary() -> None:
    c = {"path": {"prefix": "/home/al"}}
    assert not admitted(c, {"path": "/home/alice"})
    assert not admitted(c, {"path": "/home/alice/x"})
    assert admitted(c, {"path": "/home/al"})
    assert admitted(c, {"path": "/home/al/x"})
    assert validate_constraints(c) == {"path": {"prefix": "/home/al/"}}


def test_prefix_root_admits_any_clean_absolute_path() -> None:
    c = {"p": {"prefix": "/"}}
    assert admitted(c, {"p": "/"})
    assert admitted(c, {"p": "/etc/passwd"})
    assert not admitted(c, {"p": "/etc/../x"})
    assert not admitted(c, {"p": "relative"})


@pytest.mark.parametrize(
    "value", [1, None, True, ["/home/alice/x"], {"p": "/home/alice/x"}, b"/home/alice/x"]
)
def test_prefix_on_non_string_fails(value: object) -> None:
    violations = evaluate(HOME, {"path": value})
    assert len(violations) == 1 and "wrong type" in violations[0].reason


def test_prefix_is_case_sensitive() -> None:
    assert not admitted(HOME, {"path": "/home/Alice/x"})


def test_prefix_on_str_subclass_fails_closed() -> None:
    class Sneaky(str):
        def startswith(self, *args: object, **kwargs: object) -> bool:  # type: ignore[override]
            return True

    assert not admitted(HOME, {"path": Sneaky("/etc/passwd")})


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("obj", "key", "operator"),
    [
        ([], "", ""),
        ("x", "", ""),
        ({1: {"eq": 1}}, "", ""),
        ({"": {"eq": 1}}, "", ""),
        ({"a..b": {"eq": 1}}, "a..b", ""),
        ({".a": {"eq": 1}}, ".a", ""),
        ({"a.": {"eq": 1}}, "a.", ""),
        ({"a": {}}, "a", ""),
        ({"a": []}, "a", ""),
        ({"a": "eq"}, "a", ""),
        ({"a": {"equals": 1}}, "a", "equals"),
        ({"a": {"regex": ".*"}}, "a", "regex"),
        ({"a": {"eq": [1]}}, "a", "eq"),
        ({"a": {"eq": {"x": 1}}}, "a", "eq"),
        ({"a": {"eq": math.nan}}, "a", "eq"),
        ({"a": {"eq": math.inf}}, "a", "eq"),
        ({"a": {"in": []}}, "a", "in"),
        ({"a": {"in": "abc"}}, "a", "in"),
        ({"a": {"in": [[1]]}}, "a", "in"),
        ({"a": {"in": [{"x": 1}]}}, "a", "in"),
        ({"a": {"in": [math.nan]}}, "a", "in"),
        ({"a": {"prefix": 1}}, "a", "prefix"),
        ({"a": {"prefix": "home/alice"}}, "a", "prefix"),
        ({"a": {"prefix": ""}}, "a", "prefix"),
        ({"a": {"prefix": "/home/../etc"}}, "a", "prefix"),
        ({"a": {"prefix": "/home/./x"}}, "a", "prefix"),
        ({"a": {"prefix": "/home//x"}}, "a", "prefix"),
        ({"a": {"prefix": "/home\\x"}}, "a", "prefix"),
        ({"a": {"prefix": "/home/\x00"}}, "a", "prefix"),
        ({"a": {"glob": 1}}, "a", "glob"),
        ({"a": {"glob": "file[1"}}, "a", "glob"),
        ({"a": {"glob": "[!"}}, "a", "glob"),
        ({"a": {"min": "1"}}, "a", "min"),
        ({"a": {"min": True}}, "a", "min"),
        ({"a": {"max": None}}, "a", "max"),
        ({"a": {"max": math.inf}}, "a", "max"),
        ({"a": {"min": math.nan}}, "a", "min"),
        ({"a": {"min": 5, "max": 1}}, "a", "min"),
        ({"a": {"max_length": -1}}, "a", "max_length"),
        ({"a": {"max_length": 1.0}}, "a", "max_length"),
        ({"a": {"max_length": True}}, "a", "max_length"),
        ({"a": {"max_length": "3"}}, "a", "max_length"),
        ({"a": {"eq": "x", "case_insensitive": "yes"}}, "a", "case_insensitive"),
        ({"a": {"eq": "x", "case_insensitive": 1}}, "a", "case_insensitive"),
        ({"a": {"max_length": 3, "case_insensitive": True}}, "a", "case_insensitive"),
        ({"a": {"prefix": "/x/", "case_insensitive": True}}, "a", "case_insensitive"),
        ({"a": {"eq": 1, "case_insensitive": True}}, "a", "case_insensitive"),
        ({"a": {"in": ["x", 1], "case_insensitive": True}}, "a", "case_insensitive"),
        ({"a": {"case_insensitive": True}}, "a", ""),
    ],
)
def test_schema_errors(obj: object, key: str, operator: str) -> None:
    with pytest.raises(ConstraintError) as info:
        validate_constraints(obj)
    assert info.value.key == key
    assert info.value.operator == operator
    message = str(info.value)
    assert "\n" not in message and message.isascii()
    if operator:
        assert operator in message


@pytest.mark.parametrize(
    "ops",
    [
        {"prefix": "/x/", "min": 1},
        {"glob": "*", "max": 1},
        {"eq": 1, "prefix": "/x/"},
        {"eq": "a", "min": 0},
        {"in": [1, 2], "glob": "*"},
        {"max_length": 3, "min": 0},
        {"eq": True, "max_length": 1},
    ],
)
def test_operators_that_can_never_all_hold_are_schema_errors(ops: dict) -> None:
    with pytest.raises(ConstraintError, match="never all hold"):
        validate_constraints({"a": ops})


def test_schema_error_message_is_one_ascii_line_even_for_hostile_keys() -> None:
    key = "\u202e\n" + "k" * 500
    with pytest.raises(ConstraintError) as info:
        validate_constraints({key: {"nope": 1}})
    message = str(info.value)
    assert "\n" not in message and message.isascii() and len(message) < 200


def test_validate_returns_normalised_deep_copy() -> None:
    original = {
        "b": {"in": ["x", "y", "x"], "max_length": 3},
        "a": {"prefix": "/srv", "case_insensitive": False},
    }
    snapshot = {
        "b": {"in": ["x", "y", "x"], "max_length": 3},
        "a": {"prefix": "/srv", "case_insensitive": False},
    }
    result = validate_constraints(original)
    assert result == {"a": {"prefix": "/srv/"}, "b": {"in": ["x", "y"], "max_length": 3}}
    assert list(result) == ["a", "b"]
    assert original == snapshot
    result["b"]["in"].append("z")  # type: ignore[attr-defined]
    assert original["b"]["in"] == ["x", "y", "x"]


def test_validate_is_idempotent() -> None:
    c = {"p": {"prefix": "/home/${sub}", "glob": "*.md"}, "n": {"min": 1, "max": 2.5}}
    once = validate_constraints(c)
    assert validate_constraints(once) == once


def test_in_deduplication_is_type_strict() -> None:
    assert validate_constraints({"a": {"in": [1, True, 1.0, "1", 1]}}) == {"a": {"in": [1, True, 1.0, "1"]}}


def test_validate_accepts_templates_but_rejects_malformed_ones() -> None:
    validate_constraints({"a": {"eq": "${sub}"}, "b": {"in": ["${claims.team}"]}})
    for bad in ("${foo}", "${claims.}", "${sub", "x${", "${ sub }", "${claims.a b}", "${SUB}"):
        with pytest.raises(TemplateSyntaxError) as info:
            validate_constraints({"a": {"eq": bad}})
        assert isinstance(info.value, ConstraintError)
        assert isinstance(info.value, TemplateError)


# --------------------------------------------------------------------------- evaluate on bad sets


@pytest.mark.parametrize(
    "constraints",
    [
        {"a": {"regex": ".*"}},
        {"a": {"eq": "${sub}"}},  # unfilled template reaching a verifier
        {"a": {"prefix": "relative"}},
        {"a": {}},
        {"a": None},
        None,
        [],
        {"": {"eq": 1}},
    ],
)
def test_evaluate_fails_closed_on_invalid_sets(constraints: object) -> None:
    violations = evaluate(constraints, {"a": "anything"})  # type: ignore[arg-type]
    assert len(violations) == 1
    assert violations[0].reason.startswith("invalid constraint set")


def test_reasons_are_short_ascii_and_echo_little_of_the_value() -> None:
    hostile = "\u202e" + "A" * 10_000 + "\n"
    constraints = {
        "a": {"eq": "x"},
        "b": {"prefix": "/home/alice/"},
        "c": {"glob": "x*"},
        "d": {"in": ["x"]},
        "e": {"max_length": 1},
        "f": {"min": 0},
    }
    violations = evaluate(constraints, dict.fromkeys("abcdef", hostile))
    assert len(violations) == 6
    for v in violations:
        assert v.reason.isascii() and "\n" not in v.reason
        assert "A" * 61 not in v.reason
        assert len(v.reason) <= 120


def test_unknown_operator_reason_is_sanitised() -> None:
    violations = evaluate({"a": {"\u202eop\n" * 50: 1}}, {"a": 1})
    assert len(violations) == 1
    assert violations[0].operator.isascii() and "\n" not in violations[0].operator


def test_hostile_mapping_in_arguments_does_not_raise() -> None:
    class Exploding(dict):  # type: ignore[type-arg]
        def __contains__(self, key: object) -> bool:
            raise RuntimeError("boom")

    violations = evaluate({"a.b": {"eq": 1}}, {"a": Exploding(b=1)})
    assert len(violations) == 1 and violations[0].operator == "eq"


# --------------------------------------------------------------------------- check


def test_check() -> None:
    check({"a": {"eq": 1}}, {"a": 1})
    with pytest.raises(ConstraintViolationError) as info:
        check({"a": {"eq": 1}, "b": {"min": 0}}, {"a": 2, "b": -1})
    assert isinstance(info.value, ValueError)
    assert [(v.argument, v.operator) for v in info.value.violations] == [("a", "eq"), ("b", "min")]
    assert all(isinstance(v, ConstraintViolation) for v in info.value.violations)
    assert "a eq" in str(info.value)


def test_violation_is_frozen() -> None:
    v = ConstraintViolation("a", "eq", "x")
    with pytest.raises(AttributeError):
        v.reason = "y"  # type: ignore[misc]


# --------------------------------------------------------------------------- merge


def test_merge_union_of_keys() -> None:
    assert merge({"a": {"eq": 1}}, {"b": {"eq": 2}}) == {"a": {"eq": 1}, "b": {"eq": 2}}


def test_merge_tightens_numbers_and_lengths() -> None:
    a = {"n": {"min": 1, "max": 100}, "s": {"max_length": 50}}
    b = {"n": {"min": 5.5, "max": 10}, "s": {"max_length": 80}}
    assert merge(a, b) == {"n": {"min": 5.5, "max": 10}, "s": {"max_length": 50}}
    assert merge(b, a) == merge(a, b)


def test_merge_intersects_in_lists() -> None:
    merged = merge({"a": {"in": ["x", "y", 1]}}, {"a": {"in": ["y", 1.0, 1, "z"]}})
    assert merged == {"a": {"in": ["y", 1]}}


def test_merge_combines_different_operators_with_and() -> None:
    merged = merge({"a": {"prefix": "/srv"}}, {"a": {"glob": "*.txt", "max_length": 10}})
    assert merged == {"a": {"prefix": "/srv/", "glob": "*.txt", "max_length": 10}}


def test_merge_same_values_are_not_conflicts() -> None:
    assert merge({"a": {"prefix": "/srv"}}, {"a": {"prefix": "/srv/"}}) == {"a": {"prefix": "/srv/"}}


def test_merge_keeps_the_deeper_of_nested_prefixes() -> None:
    """A request narrows a session capability: /home/alice/ AND /home/alice/docs/ is /home/alice/docs/."""
    narrowed = {"a": {"prefix": "/home/alice/docs/"}}
    assert merge({"a": {"prefix": "/home/alice/"}}, narrowed) == narrowed
    assert merge(narrowed, {"a": {"prefix": "/home/alice/"}}) == narrowed
    with pytest.raises(ConstraintError):
        merge({"a": {"prefix": "/home/alice/"}}, {"a": {"prefix": "/home/alicex/"}})  # not a path-boundary child
    assert merge({"a": {"eq": "x"}}, {"a": {"eq": "x"}}) == {"a": {"eq": "x"}}
    assert merge({"a": {"glob": "*"}}, {"a": {"glob": "*"}}) == {"a": {"glob": "*"}}


@pytest.mark.parametrize(
    ("a", "b", "operator"),
    [
        ({"k": {"eq": "x"}}, {"k": {"eq": "y"}}, "eq"),
        ({"k": {"eq": 1}}, {"k": {"eq": True}}, "eq"),
        ({"k": {"eq": 1}}, {"k": {"eq": 1.0}}, "eq"),
        ({"k": {"prefix": "/a/"}}, {"k": {"prefix": "/b/"}}, "prefix"),
        ({"k": {"glob": "a*"}}, {"k": {"glob": "*a"}}, "glob"),
        ({"k": {"in": ["x"]}}, {"k": {"in": ["y"]}}, "in"),
        ({"k": {"min": 10}}, {"k": {"max": 5}}, "min"),
        ({"k": {"eq": "x", "case_insensitive": True}}, {"k": {"glob": "*"}}, "case_insensitive"),
    ],
)
def test_merge_conflicts(a: dict, b: dict, operator: str) -> None:
    with pytest.raises(ConstraintError) as info:
        merge(a, b)
    assert info.value.key == "k"
    assert info.value.operator == operator


def test_merge_incompatible_operator_kinds_is_a_schema_error() -> None:
    with pytest.raises(ConstraintError, match="never all hold"):
        merge({"k": {"prefix": "/a/"}}, {"k": {"min": 1}})


def test_merge_case_insensitive() -> None:
    a = {"k": {"eq": "Main", "case_insensitive": True}}
    assert merge(a, {"k": {"eq": "MAIN", "case_insensitive": True}}) == a
    assert merge(a, {"k": {"max_length": 4}}) == {
        "k": {"eq": "Main", "case_insensitive": True, "max_length": 4}
    }
    ci_in = merge(
        {"k": {"in": ["A", "b"], "case_insensitive": True}}, {"k": {"in": ["a"], "case_insensitive": True}}
    )
    assert ci_in == {"k": {"in": ["A"], "case_insensitive": True}}


def test_merge_validates_inputs_and_does_not_mutate_them() -> None:
    a = {"k": {"min": 1}}
    b = {"k": {"min": 2}}
    merge(a, b)
    assert a == {"k": {"min": 1}} and b == {"k": {"min": 2}}
    with pytest.raises(ConstraintError):
        merge({"k": {"bogus": 1}}, {})


def test_merged_set_admits_only_what_both_admit() -> None:
    a = {"n": {"min": 0, "max": 10}, "p": {"prefix": "/srv/"}}
    b = {"n": {"min": 5}, "q": {"in": ["x", "y"]}}
    m = merge(a, b)
    for n in (-1, 0, 4, 5, 10, 11):
        for q in ("x", "z"):
            args = {"n": n, "p": "/srv/f", "q": q}
            assert admitted(m, args) == (admitted(a, args) and admitted(b, args))
