"""Filling ${sub} / ${claims.NAME} templates: filled values are data, never syntax."""

from __future__ import annotations

import copy

import pytest

from issuer.constraints import (
    ConstraintError,
    TemplateError,
    TemplateSyntaxError,
    evaluate,
    fill_templates,
    validate_constraints,
)

CLAIMS = {
    "groups": ["eng", "ops"],
    "tenant": "acme",
    "uid": 1000,
    "admin": True,
    "ratio": 0.5,
    "nothing": None,
    "profile": {"team": "eng"},
    "empty": [],
    "https://example.com/projects": ["apollo"],
}
ALLOWED = frozenset(CLAIMS)


def fill(
    constraints: dict, sub: str = "alice", claims: dict | None = None, allowed: object = ALLOWED
) -> dict:
    return fill_templates(
        constraints,
        sub=sub,
        claims=CLAIMS if claims is None else claims,
        allowed_claims=allowed,  # type: ignore[arg-type]
    )


def admitted(constraints: dict, arguments: dict) -> bool:
    return evaluate(constraints, arguments) == []


# --------------------------------------------------------------------------- prefix

HOME = {"path": {"prefix": "/home/${sub}/"}}


def test_prefix_fill() -> None:
    filled = fill(HOME)
    assert filled == {"path": {"prefix": "/home/alice/"}}
    assert admitted(filled, {"path": "/home/alice"})
    assert admitted(filled, {"path": "/home/alice/notes.txt"})
    assert not admitted(filled, {"path": "/home/bob/notes.txt"})
    assert not admitted(filled, {"path": "/home/alicex"})
    assert not admitted(filled, {"path": "/home/alice/../bob"})


def test_prefix_template_without_trailing_slash_still_has_a_boundary() -> None:
    filled = fill({"path": {"prefix": "/home/${sub}"}}, sub="al")
    assert filled == {"path": {"prefix": "/home/al/"}}
    assert not admitted(filled, {"path": "/home/alice/x"})


@pytest.mark.parametrize(
    "sub",
    [
        "*",
        "../bob",
        "..",
        ".",
        "a/../../etc",
        "a/b",
        "/",
        "a*b",
        "a?b",
        "[x]",
        "a]b",
        "",
        "ali\nce",
        "alice\n",
        "alice\r",
        "a\tb",
        "a\x00",
        "a\x7f",
        "a\\b",
        "..\\bob",
        "\uff0e\uff0e",  # NFKC '..'
        "\u2025",  # TWO DOT LEADER, NFKC '..'
        "a\uff0fb",  # NFKC 'a/b'
        "\uff0a",  # FULLWIDTH ASTERISK, NFKC '*'
        "al\u200bice",  # zero-width space (format character)
        "\u202ealice",  # RIGHT-TO-LEFT OVERRIDE
        "ali\u2028ce",  # LINE SEPARATOR
        "${sub}",
        "${claims.tenant}",
    ],
)
def test_prefix_refuses_unsafe_subs(sub: str) -> None:
    with pytest.raises(TemplateError) as info:
        fill(HOME, sub=sub)
    assert info.value.key == "path" and info.value.operator == "prefix"
    message = str(info.value)
    assert message.isascii() and "\n" not in message


@pytest.mark.parametrize(
    "sub", ["alice", "a.b", "...", "al ice", "%2e%2e", "\u00e9lise", "alice-1_2", "-rf", "~"]
)
def test_prefix_accepts_safe_subs_literally(sub: str) -> None:
    filled = fill(HOME, sub=sub)
    assert filled == {"path": {"prefix": f"/home/{sub}/"}}
    assert admitted(filled, {"path": f"/home/{sub}/file"})
    assert not admitted(filled, {"path": "/home/other/file"})
    assert not admitted(filled, {"path": "/home/file"})


def test_percent_encoded_sub_is_literal_not_decoded() -> None:
    filled = fill(HOME, sub="%2e%2e")
    assert admitted(filled, {"path": "/home/%2e%2e/x"})
    assert not admitted(filled, {"path": "/home/../x"})
    assert not admitted(filled, {"path": "/home/x"})


def test_prefix_with_several_templates() -> None:
    filled = fill({"p": {"prefix": "/srv/${claims.tenant}/users/${sub}"}})
    assert filled == {"p": {"prefix": "/srv/acme/users/alice/"}}


def test_prefix_template_embedded_in_a_segment() -> None:
    filled = fill({"p": {"prefix": "/home/user-${sub}/"}})
    assert admitted(filled, {"p": "/home/user-alice/x"})
    assert not admitted(filled, {"p": "/home/user-alicex/x"})
    with pytest.raises(TemplateError):
        fill({"p": {"prefix": "/home/user-${sub}/"}}, sub="x/../../etc")


def test_prefix_from_an_integer_claim() -> None:
    assert fill({"p": {"prefix": "/uid/${claims.uid}"}}) == {"p": {"prefix": "/uid/1000/"}}


# --------------------------------------------------------------------------- glob

REPORTS = {"name": {"glob": "reports-${sub}-*.csv"}}


@pytest.mark.parametrize(
    ("sub", "literal", "imposter"),
    [
        ("a*b", "reports-a*b-1.csv", "reports-aXb-1.csv"),
        ("*", "reports-*-1.csv", "reports-bob-1.csv"),
        ("?", "reports-?-1.csv", "reports-Z-1.csv"),
        ("[x]", "reports-[x]-1.csv", "reports-x-1.csv"),
        ("[!a]", "reports-[!a]-1.csv", "reports-b-1.csv"),
        ("a]b", "reports-a]b-1.csv", "reports-ab-1.csv"),
        ("[", "reports-[-1.csv", "reports--1.csv"),
        (".", "reports-.-1.csv", "reports-x-1.csv"),
        ("..", "reports-..-1.csv", "reports-xx-1.csv"),
        ("alice", "reports-alice-2024.csv", "reports-bob-2024.csv"),
    ],
)
def test_glob_fill_matches_only_the_literal_value(sub: str, literal: str, imposter: str) -> None:
    filled = fill(REPORTS, sub=sub)
    assert admitted(filled, {"name": literal})
    assert not admitted(filled, {"name": imposter})


def test_glob_escaping_is_bracket_style() -> None:
    assert fill(REPORTS, sub="a*b?[c]") == {"name": {"glob": "reports-a[*]b[?][[]c[]]-*.csv"}}


@pytest.mark.parametrize(
    "sub", ["a/b", "../bob", "a/../../etc", "/", "a\\b", "a\uff0fb", "", "a\nb", "a\x00", "\u202ex"]
)
def test_glob_refuses_separators_and_controls(sub: str) -> None:
    with pytest.raises(TemplateError) as info:
        fill(REPORTS, sub=sub)
    assert info.value.operator == "glob"


def test_glob_template_inside_brackets_is_a_schema_error() -> None:
    for pattern in ("[${sub}]", "x[!${sub}]", "[]${sub}]", "a[${sub}"):
        with pytest.raises(ConstraintError):
            validate_constraints({"g": {"glob": pattern}})


def test_glob_case_insensitive_fill_still_escapes() -> None:
    filled = fill({"g": {"glob": "${sub}/*", "case_insensitive": True}}, sub="A*")
    assert admitted(filled, {"g": "a*/x"})
    assert not admitted(filled, {"g": "aX/x"})


# --------------------------------------------------------------------------- eq


def test_eq_whole_operand_and_embedded() -> None:
    filled = fill({"owner": {"eq": "${sub}"}, "label": {"eq": "team:${claims.tenant}:${sub}"}})
    assert filled == {"owner": {"eq": "alice"}, "label": {"eq": "team:acme:alice"}}


@pytest.mark.parametrize("sub", ["*", "../bob", "a*b", "[x]", ".", "a/b", "O'Brien"])
def test_eq_is_literal(sub: str) -> None:
    filled = fill({"owner": {"eq": "${sub}"}}, sub=sub)
    assert admitted(filled, {"owner": sub})
    assert not admitted(filled, {"owner": "bob"})
    assert not admitted(filled, {"owner": "x" + sub})


@pytest.mark.parametrize("sub", ["", "a\nb", "a\x00", "a\u2028b", "${sub}", "x${claims.tenant}"])
def test_eq_refuses_empty_and_control_values(sub: str) -> None:
    with pytest.raises(TemplateError):
        fill({"owner": {"eq": "${sub}"}}, sub=sub)


def test_integer_claim_fills_as_string() -> None:
    filled = fill({"uid": {"eq": "${claims.uid}"}})
    assert filled == {"uid": {"eq": "1000"}}
    assert admitted(filled, {"uid": "1000"})
    assert not admitted(filled, {"uid": 1000})


@pytest.mark.parametrize("claim", ["admin", "ratio", "nothing", "profile"])
def test_non_string_claims_are_refused(claim: str) -> None:
    with pytest.raises(TemplateError):
        fill({"x": {"eq": "${claims." + claim + "}"}})


# --------------------------------------------------------------------------- in / list claims


def test_list_claim_expands_as_whole_in_item() -> None:
    filled = fill({"group": {"in": ["${claims.groups}", "public"]}})
    assert filled == {"group": {"in": ["eng", "ops", "public"]}}
    assert admitted(filled, {"group": "ops"})
    assert not admitted(filled, {"group": "${claims.groups}"})
    assert not admitted(filled, {"group": "finance"})


def test_list_claim_items_are_strings_and_checked() -> None:
    assert fill({"g": {"in": ["${claims.ids}"]}}, claims={"ids": [1, "b"]}, allowed={"ids"}) == {
        "g": {"in": ["1", "b"]}
    }
    for bad in ([["nested"]], [{"a": 1}], [True], [None], [""], ["ok", "a\nb"], ["${sub}"]):
        with pytest.raises(TemplateError):
            fill({"g": {"in": ["${claims.ids}"]}}, claims={"ids": bad}, allowed={"ids"})


def test_list_item_values_with_glob_characters_stay_literal() -> None:
    filled = fill({"g": {"in": ["${claims.ids}"]}}, claims={"ids": ["*", "a?"]}, allowed={"ids"})
    assert admitted(filled, {"g": "*"})
    assert not admitted(filled, {"g": "anything"})
    assert not admitted(filled, {"g": "ab"})


def test_scalar_claim_as_in_item() -> None:
    assert fill({"t": {"in": ["${claims.tenant}", "x-${sub}"]}}) == {"t": {"in": ["acme", "x-alice"]}}


def test_duplicate_expanded_items_are_deduplicated() -> None:
    assert fill({"g": {"in": ["${claims.groups}", "eng"]}}) == {"g": {"in": ["eng", "ops"]}}


@pytest.mark.parametrize(
    "constraints",
    [
        {"g": {"in": ["team-${claims.groups}"]}},
        {"g": {"in": ["${claims.groups}${sub}"]}},
        {"g": {"eq": "${claims.groups}"}},
        {"g": {"prefix": "/g/${claims.groups}/"}},
        {"g": {"glob": "${claims.groups}*"}},
    ],
)
def test_list_claims_anywhere_else_are_refused(constraints: dict) -> None:
    with pytest.raises(TemplateError, match="array"):
        fill(constraints)


def test_empty_list_claim() -> None:
    with pytest.raises(TemplateError):
        fill({"g": {"in": ["${claims.empty}"]}})
    assert fill({"g": {"in": ["${claims.empty}", "public"]}}) == {"g": {"in": ["public"]}}


def test_case_insensitive_in_with_list_claim() -> None:
    filled = fill({"g": {"in": ["${claims.groups}"], "case_insensitive": True}})
    assert admitted(filled, {"g": "ENG"})


# --------------------------------------------------------------------------- claims access


def test_claim_must_be_allowed() -> None:
    with pytest.raises(TemplateError, match="not an allowed claim"):
        fill({"t": {"eq": "${claims.tenant}"}}, allowed={"groups"})
    with pytest.raises(TemplateError):
        fill({"t": {"eq": "${claims.tenant}"}}, allowed=())


def test_sub_needs_no_allowance() -> None:
    assert fill({"o": {"eq": "${sub}"}}, allowed=()) == {"o": {"eq": "alice"}}


def test_missing_claim() -> None:
    with pytest.raises(TemplateError, match="missing"):
        fill({"t": {"eq": "${claims.team}"}}, allowed={"team"})


def test_uri_claim_names() -> None:
    filled = fill({"p": {"in": ["${claims.https://example.com/projects}"]}})
    assert filled == {"p": {"in": ["apollo"]}}


def test_allowed_claims_must_not_be_a_string() -> None:
    # "tenant" in "tenants" would be a substring test, not membership.
    with pytest.raises(TypeError):
        fill({"t": {"eq": "${claims.tenant}"}}, allowed="tenants")


def test_sub_must_be_a_string() -> None:
    with pytest.raises(TemplateError):
        fill({"o": {"eq": "${sub}"}}, sub=123)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- syntax and result


@pytest.mark.parametrize(
    "bad", ["${foo}", "${claims.}", "${sub", "/home/${", "${claims}", "${ sub}", "$${x}"]
)
def test_malformed_templates(bad: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        validate_constraints({"o": {"eq": bad}})
    with pytest.raises(TemplateError):
        fill({"o": {"eq": bad}})


def test_dollar_without_brace_is_literal() -> None:
    assert fill({"o": {"eq": "$sub {sub} $"}}) == {"o": {"eq": "$sub {sub} $"}}


def test_filled_values_are_not_expanded_again() -> None:
    # A claim that looks like a template must not read another claim.
    with pytest.raises(TemplateError):
        fill({"o": {"eq": "${claims.tenant}"}}, claims={"tenant": "${claims.secret}", "secret": "s"})


def test_other_operators_pass_through() -> None:
    c = {"n": {"min": 1, "max": 5}, "s": {"max_length": 3, "eq": "${sub}"}, "b": {"in": [1, True, None]}}
    assert fill(c) == {
        "n": {"max": 5, "min": 1},
        "s": {"eq": "alice", "max_length": 3},
        "b": {"in": [1, True, None]},
    }


def test_result_is_validated_and_evaluable() -> None:
    # max_length 3 with eq "alice" is fine schema-wise; evaluation refuses.
    filled = fill({"s": {"eq": "${sub}", "max_length": 3}})
    assert evaluate(filled, {"s": "alice"})[0].operator == "max_length"
    # Everything filled is free of template syntax, so a verifier accepts it.
    validate_constraints(filled)


def test_fill_does_not_mutate_input() -> None:
    c = {"path": {"prefix": "/home/${sub}"}, "g": {"in": ["${claims.groups}"]}}
    before = copy.deepcopy(c)
    fill(c)
    assert c == before


def test_schema_errors_surface_before_filling() -> None:
    with pytest.raises(ConstraintError):
        fill({"p": {"bogus": "${sub}"}})


def test_unfilled_constraints_are_refused_by_evaluate() -> None:
    violations = evaluate(HOME, {"path": "/home/${sub}/x"})
    assert violations and "template" in violations[0].reason
