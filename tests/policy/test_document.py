"""Parsing and schema validation of policy documents: every error names its line."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest

from issuer.errors import ConfigurationError
from issuer.policy import (
    MAX_DOCUMENT_BYTES,
    PolicyDocument,
    PolicyError,
    canonical_json,
    parse_policy,
    validate_references,
)
from issuer.policy import document as document_module

FULL = """\
default: deny
rules:
  - id: support-tickets-read
    description: Support reads tickets
    idp: idp-a
    subjects: [alice, bob]
    groups: [support]
    claims: {tenant: acme, dept: [eng, ops], level: 3, verified: true}
    clients: [mcp-helpdesk, mcp-other]
    tool: tickets
    scopes: [tickets:read, tickets:write]
    default_scopes: [tickets:read]
    allow_narrowing: true
    max_lifetime: 300
    actions: [read, list]
    constraints: {path: {prefix: "/home/${sub}/", in: [a, b]}}
  - id: everyone-search
    everyone: true
    clients: [mcp-search]
    tool: search
    scopes: [search:query]
"""


def error_of(text: str, source: str = "policy") -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source)
    return info.value


def rule_text(*extra: str, base: bool = True) -> str:
    """A one-rule document; the rule starts on line 2 and ``extra`` lines start on line 6."""
    lines = ["rules:", "  - id: r1"]
    if base:
        lines += ["    groups: [g]", "    clients: [c]", "    tool: t"]
    lines += [f"    {line}" for line in extra]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- valid documents


def test_full_document_parses_every_field() -> None:
    doc = parse_policy(FULL)
    first, second = doc.rules
    assert first.id == "support-tickets-read"
    assert first.line == 3
    assert first.description == "Support reads tickets"
    assert first.idp == frozenset({"idp-a"})
    assert first.subjects == frozenset({"alice", "bob"})
    assert first.groups == frozenset({"support"})
    assert dict(first.claims or {}) == {
        "tenant": ("acme",),
        "dept": ("eng", "ops"),
        "level": (3,),
        "verified": (True,),
    }
    assert first.clients == frozenset({"mcp-helpdesk", "mcp-other"})
    assert first.tool == "tickets"
    assert first.scopes == frozenset({"tickets:read", "tickets:write"})
    assert first.default_scopes == frozenset({"tickets:read"})
    assert first.allow_narrowing is True
    assert first.max_lifetime == 300
    assert first.actions == frozenset({"read", "list"})
    assert first.constraints["path"]["prefix"] == "/home/${sub}/"
    assert first.everyone is False
    assert second.everyone is True
    assert second.idp is None and second.subjects is None and second.groups is None
    assert second.claims is None
    assert second.default_scopes == second.scopes == frozenset({"search:query"})
    assert second.allow_narrowing is False
    assert second.max_lifetime is None
    assert second.actions == frozenset()
    assert dict(second.constraints) == {}
    assert doc.source_text == FULL


def test_default_key_is_optional_and_empty_rules_deny_everything() -> None:
    assert parse_policy("rules: []\n").rules == ()
    assert parse_policy("default: deny\nrules: []\n").rules == ()


def test_canonical_json_round_trips_and_is_stable() -> None:
    doc = parse_policy(FULL)
    rendered = canonical_json(doc)
    again = parse_policy(rendered, "canonical")
    assert again == doc
    assert canonical_json(again) == rendered
    body = json.loads(rendered)
    assert body["default"] == "deny"
    assert [r["id"] for r in body["rules"]] == ["support-tickets-read", "everyone-search"]
    assert body["rules"][0]["clients"] == ["mcp-helpdesk", "mcp-other"]
    assert body["rules"][0]["constraints"] == {"path": {"prefix": "/home/${sub}/", "in": ["a", "b"]}}


def test_canonical_json_ignores_formatting_and_set_order() -> None:
    a = parse_policy("rules:\n  - {id: x, groups: [b, a], clients: [c], tool: t, scopes: [s2, s1]}\n")
    b = parse_policy(
        "# a comment\nrules:\n  - id: x\n    tool: t\n    scopes:\n      - s1\n      - s2\n"
        "    clients: [c]\n    groups: [a, b]\n"
    )
    assert a == b
    assert canonical_json(a) == canonical_json(b)


def test_json_documents_are_accepted_including_tab_indentation() -> None:
    body = {"rules": [{"id": "j", "everyone": True, "clients": ["c"], "tool": "t", "scopes": ["s"]}]}
    assert parse_policy(json.dumps(body)).rules[0].id == "j"
    tabbed = json.dumps(body, indent="\t")
    assert "\t" in tabbed
    assert parse_policy(tabbed).rules[0].tool == "t"


def test_constraints_are_read_only_all_the_way_down() -> None:
    rule = parse_policy(FULL).rules[0]
    assert isinstance(rule.constraints, MappingProxyType)
    assert isinstance(rule.constraints["path"], MappingProxyType)
    assert rule.constraints["path"]["in"] == ("a", "b")
    with pytest.raises(TypeError):
        rule.constraints["path"]["prefix"] = "/"  # type: ignore[index]
    with pytest.raises(TypeError):
        rule.constraints["other"] = {}  # type: ignore[index]


def test_yaml_merge_keys_are_applied_and_explicit_keys_win() -> None:
    doc = parse_policy(
        "rules:\n"
        "  - &base {id: a, groups: [g], clients: [c], tool: t, scopes: [s]}\n"
        "  - <<: *base\n"
        "    id: b\n"
        "    tool: u\n"
    )
    assert [r.id for r in doc.rules] == ["a", "b"]
    assert doc.rules[1].tool == "u"
    assert doc.rules[1].clients == frozenset({"c"})
    assert doc.rules[1].groups == frozenset({"g"})


# --------------------------------------------------------------------------- errors, with lines


def test_error_is_a_configuration_error_with_source_and_line() -> None:
    err = error_of(rule_text("scopes: [s]", "bogus: 1"), source="prod.yaml")
    assert isinstance(err, ConfigurationError)
    assert err.line == 7
    assert str(err).startswith("prod.yaml:7: ")
    assert "\n" not in str(err)


def test_yaml_syntax_error_reports_its_line() -> None:
    err = error_of("rules:\n  - id: a\n    scopes: [s\n    tool: t\n")
    assert err.line == 4
    assert "YAML syntax error" in str(err)
    assert "\n" not in str(err)


def test_several_yaml_documents_are_refused() -> None:
    err = error_of("rules: []\n---\nrules: []\n")
    assert err.line == 2
    assert "single document" in str(err)


def test_unacceptable_character_reports_its_line() -> None:
    err = error_of("rules: []\n# bell \x07\n")
    assert err.line == 2


def test_unknown_key_is_named_with_the_allowed_ones() -> None:
    err = error_of(rule_text("scopes: [s]", "scope: [s]"))
    assert err.line == 7
    assert "unknown key 'scope'" in str(err)
    assert "rule 'r1'" in str(err)
    assert "allowed keys: id, description, idp" in str(err)


def test_unknown_top_level_key() -> None:
    err = error_of("rules: []\nversion: 2\n")
    assert err.line == 2
    assert "unknown key 'version' in the document; allowed keys: default, rules" in str(err)


@pytest.mark.parametrize(
    ("extra", "line", "expected"),
    [
        ("scopes: s", 6, "'scopes' of rule 'r1' must be a list of strings, got a string"),
        ("scopes: [1]", 6, "each entry of 'scopes' of rule 'r1' must be a string, got an integer"),
        ("scopes: [s]\n    max_lifetime: '300'", 7, "must be a decimal integer, got a string"),
        ("scopes: [s]\n    allow_narrowing: 'true'", 7, "must be true or false, got a string"),
        ("scopes: [s]\n    description: [a]", 7, "'description' of rule 'r1' must be a string, got a list"),
        ("scopes: [s]\n    claims: [tenant]", 7, "'claims' of rule 'r1' must be a mapping, got a list"),
        ("scopes: [s]\n    constraints: {path: 3}", 7, "constraint 'path' of rule 'r1' must be a mapping"),
        ("scopes: [s]\n    description:", 7, "must be a string, got nothing (null)"),
    ],
)
def test_wrong_types_say_what_was_expected(extra: str, line: int, expected: str) -> None:
    err = error_of(rule_text(*extra.split("\n    ")))
    assert err.line == line
    assert expected in str(err)


def test_tool_given_as_a_list_is_a_type_error_on_its_line() -> None:
    err = error_of(
        "rules:\n  - id: r1\n    groups: [g]\n    clients: [c]\n    tool:\n      - a\n    scopes: [s]\n"
    )
    assert err.line == 6
    assert "'tool' of rule 'r1' must be a string, got a list" in str(err)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (rule_text("scopes: [s]").replace("tool: t", "tool: yes"), 5),
        (rule_text("scopes: [s]").replace("groups: [g]", "groups: [no]"), 3),
        (rule_text("scopes: [s]").replace("id: r1", "id: on"), 2),
        (rule_text("scopes: [s]", "description: off"), 7),
        ("default: no\nrules: []\n", 1),
    ],
)
def test_yaml_booleans_where_strings_are_required_are_refused(text: str, line: int) -> None:
    err = error_of(text)
    assert err.line == line
    assert "must be a string, got a boolean" in str(err)
    assert "quote it" in str(err)


def test_ambiguous_boolean_claim_value_is_refused_but_true_false_are_allowed() -> None:
    err = error_of(rule_text("scopes: [s]", "claims: {country: no}", base=True))
    assert err.line == 7
    assert "'no' is a YAML boolean" in str(err)
    ok = parse_policy(rule_text("scopes: [s]", "claims: {verified: false}"))
    assert dict(ok.rules[0].claims or {}) == {"verified": (False,)}


def test_duplicate_key_in_a_rule_names_both_lines() -> None:
    err = error_of(rule_text("scopes: [s]", "tool: u"))
    assert err.line == 7
    assert "duplicate key 'tool' in rule 'r1' (first on line 5)" in str(err)


def test_duplicate_key_at_top_level() -> None:
    err = error_of("rules: []\ndefault: deny\nrules: []\n")
    assert err.line == 3
    assert "duplicate key 'rules' in the document (first on line 1)" in str(err)


def test_duplicate_key_inside_constraints() -> None:
    err = error_of(rule_text("scopes: [s]", "constraints:", "  path: {prefix: /a}", "  path: {prefix: /b}"))
    assert err.line == 9
    assert "duplicate key 'path'" in str(err)


def test_duplicate_rule_ids() -> None:
    text = (
        "rules:\n"
        "  - {id: same, groups: [g], clients: [c], tool: t, scopes: [s]}\n"
        "  - {id: other, groups: [g], clients: [c], tool: t, scopes: [s]}\n"
        "  - id: same\n"
        "    groups: [g]\n"
        "    clients: [c]\n"
        "    tool: t\n"
        "    scopes: [s]\n"
    )
    err = error_of(text)
    assert err.line == 4
    assert "duplicate rule id 'same' (first on line 2)" in str(err)


@pytest.mark.parametrize("bad", ["'has space'", "'a/b'", "''", "'" + "x" * 101 + "'", "'caf\u00e9'"])
def test_bad_rule_id_charset(bad: str) -> None:
    err = error_of(rule_text("scopes: [s]").replace("id: r1", f"id: {bad}"))
    assert err.line == 2
    assert "id" in str(err)


def test_rule_id_may_use_the_whole_allowed_charset() -> None:
    doc = parse_policy(rule_text("scopes: [s]").replace("id: r1", "id: Az09_.:-" + "x" * 92))
    assert len(doc.rules[0].id) == 100


def test_default_other_than_deny_is_refused() -> None:
    err = error_of("default: allow\nrules: []\n")
    assert err.line == 1
    assert "'default' can only be 'deny'" in str(err)


@pytest.mark.parametrize(
    ("extra", "line", "what"),
    [
        (("scopes: []",), 6, "'scopes' of rule 'r1' must not be an empty list"),
        (("scopes: [s]", "subjects: []", "idp: i"), 7, "'subjects' of rule 'r1' must not be an empty list"),
        (("scopes: [s]", "claims: {}"), 7, "'claims' of rule 'r1' must not be empty"),
        (("scopes: [s]", "claims: {dept: []}"), 7, "claim 'dept' of rule 'r1' must not be an empty list"),
        (("scopes: [s]", "actions: []"), 7, "'actions' of rule 'r1' must not be an empty list"),
        (("scopes: [s]", "idp: []"), 7, "'idp' of rule 'r1' must not be an empty list"),
    ],
)
def test_empty_lists_are_refused(extra: tuple[str, ...], line: int, what: str) -> None:
    err = error_of(rule_text(*extra))
    assert err.line == line
    assert what in str(err)


def test_empty_clients_list_is_refused() -> None:
    err = error_of(rule_text("scopes: [s]").replace("clients: [c]", "clients: []"))
    assert err.line == 4
    assert "'clients' of rule 'r1' must not be an empty list" in str(err)


def test_empty_groups_list_does_not_count_as_a_matcher() -> None:
    err = error_of(rule_text("scopes: [s]").replace("groups: [g]", "groups: []"))
    assert err.line == 3
    assert "'groups' of rule 'r1' must not be an empty list" in str(err)


def test_empty_default_scopes_is_allowed_and_means_scope_must_be_requested() -> None:
    doc = parse_policy(rule_text("scopes: [s]", "default_scopes: []"))
    assert doc.rules[0].default_scopes == frozenset()


def test_default_scopes_must_be_a_subset_of_scopes() -> None:
    err = error_of(rule_text("scopes: [a, b]", "default_scopes:", "  - a", "  - c"))
    assert err.line == 9
    assert "default scope 'c' of rule 'r1' is not in its 'scopes'" in str(err)


def test_duplicate_entries_in_a_list_are_refused() -> None:
    err = error_of(rule_text("scopes:", "  - a", "  - a"))
    assert err.line == 8
    assert "'a' is listed twice" in str(err)


def test_invalid_scope_token_is_refused() -> None:
    err = error_of(rule_text('scopes: ["a b"]'))
    assert err.line == 6
    assert "not a valid scope" in str(err)


@pytest.mark.parametrize(("value", "ok"), [("9", False), ("10", True), ("900", True), ("901", False)])
def test_max_lifetime_range(value: str, ok: bool) -> None:
    text = rule_text("scopes: [s]", f"max_lifetime: {value}")
    if ok:
        assert parse_policy(text).rules[0].max_lifetime == int(value)
    else:
        err = error_of(text)
        assert err.line == 7
        assert f"'max_lifetime' of rule 'r1' is {value}; it must be between 10 and 900 seconds" in str(err)


@pytest.mark.parametrize("value", ["5:00", "0x100", "true", "300.0"])
def test_max_lifetime_must_be_a_plain_decimal_integer(value: str) -> None:
    err = error_of(rule_text("scopes: [s]", f"max_lifetime: {value}"))
    assert err.line == 7
    assert "must be a decimal integer" in str(err)


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("- a\n- b\n", 1, "the document must be a mapping with a 'rules' list, got a list"),
        ("just a string\n", 1, "got a string"),
        ("", 1, "the document is empty"),
        ("# only a comment\n", 1, "the document is empty"),
        ("default: deny\n", 1, "the document has no 'rules' key"),
        ("\n\nrules: {a: 1}\n", 3, "'rules' must be a list of rules, got a mapping"),
        ("rules:\n  - just-a-name\n", 2, "a rule must be a mapping, got a string"),
    ],
)
def test_document_shape_errors(text: str, line: int, what: str) -> None:
    err = error_of(text)
    assert err.line == line
    assert what in str(err)


def test_required_rule_keys() -> None:
    err = error_of("rules:\n  - id: r1\n    everyone: true\n    tool: t\n")
    assert err.line == 2
    assert "rule 'r1' is missing required key(s): clients, scopes" in str(err)


def test_rule_without_any_matcher_is_refused() -> None:
    err = error_of(
        rule_text("scopes: [s]", base=False).replace(
            "    scopes", "    clients: [c]\n    tool: t\n    scopes"
        )
    )
    assert err.line == 2
    assert "rule 'r1' names no subjects, groups or claims" in str(err)
    assert "everyone: true" in str(err)


def test_everyone_true_is_the_explicit_way_to_match_every_user() -> None:
    doc = parse_policy("rules:\n  - {id: r1, everyone: true, clients: [c], tool: t, scopes: [s]}\n")
    assert doc.rules[0].everyone is True


def test_everyone_false_without_matchers_is_refused() -> None:
    err = error_of(
        "rules:\n  - id: r1\n    everyone: false\n    clients: [c]\n    tool: t\n    scopes: [s]\n"
    )
    assert err.line == 3
    assert "'everyone: false' and no subject/group/claim" in str(err)


def test_everyone_true_with_a_matcher_is_contradictory() -> None:
    err = error_of(rule_text("scopes: [s]", "everyone: true"))
    assert err.line == 7
    assert "'everyone: true' and also groups" in str(err)


def test_subjects_require_an_idp() -> None:
    err = error_of(rule_text("scopes: [s]", "subjects: [alice]"))
    assert err.line == 7
    assert "lists 'subjects' but no 'idp'" in str(err)
    rule = parse_policy(rule_text("scopes: [s]", "subjects: [alice]", "idp: idp-a")).rules[0]
    assert rule.subjects == frozenset({"alice"})


def test_idp_accepts_a_name_or_a_list() -> None:
    one = parse_policy(rule_text("scopes: [s]", "idp: idp-a")).rules[0]
    many = parse_policy(rule_text("scopes: [s]", "idp: [idp-a, idp-b]")).rules[0]
    assert one.idp == frozenset({"idp-a"})
    assert many.idp == frozenset({"idp-a", "idp-b"})


def test_all_errors_are_collected_sorted_and_the_message_is_the_first() -> None:
    text = (
        "rules:\n"
        "  - id: a\n"
        "    groups: [g]\n"
        "    clients: [c]\n"
        "    tool: t\n"
        "    scopes: [s]\n"
        "    max_lifetime: 5\n"
        "  - id: b\n"
        "    groups: [g]\n"
        "    clients: []\n"
        "    tool: yes\n"
        "    scopes: [s]\n"
        "    colour: red\n"
    )
    err = error_of(text)
    assert [line for line, _ in err.errors] == [7, 10, 11, 13]
    assert err.line == 7
    assert str(err) == f"policy:7: {err.errors[0][1]}"
    assert err.messages()[3].startswith("policy:13: unknown key 'colour'")


def test_messages_are_one_line_even_for_hostile_keys() -> None:
    err = error_of(
        'rules:\n  - id: r1\n    "bad\\nkey\\u2028x": 1\n    groups: [g]\n    clients: [c]\n'
        "    tool: t\n    scopes: [s]\n"
    )
    assert err.line == 3
    assert "\n" not in str(err) and "\u2028" not in str(err)
    assert "unknown key 'bad\\nkey\\u2028x'" in str(err)


def test_documents_over_one_mib_are_refused_before_parsing() -> None:
    head = "rules: []\n"
    exactly = head + "#" * (MAX_DOCUMENT_BYTES - len(head) - 1) + "\n"
    assert len(exactly.encode()) == MAX_DOCUMENT_BYTES
    assert parse_policy(exactly).rules == ()
    err = error_of(exactly + "#")
    assert err.line == 1
    assert "the limit is 1 MiB" in str(err)


def test_one_mib_limit_counts_bytes_not_characters() -> None:
    text = "rules: []\n#" + "\u00e9" * (MAX_DOCUMENT_BYTES // 2)
    assert len(text) < MAX_DOCUMENT_BYTES < len(text.encode())
    assert "the limit is 1 MiB" in str(error_of(text))


def test_too_many_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real limit (10,000) takes seconds to parse with the pure-Python
    # loader; the check itself is the same for any limit.
    monkeypatch.setattr(document_module, "MAX_RULES", 3)
    rules = "".join(
        f"  - {{id: r{i}, everyone: true, clients: [c], tool: t, scopes: [s]}}\n" for i in range(4)
    )
    assert len(parse_policy("rules:\n" + rules.rsplit("  - ", 1)[0]).rules) == 3
    err = error_of("rules:\n" + rules)
    assert err.line == 5
    assert "too many rules: the limit is 3" in str(err)


def test_self_referencing_alias_is_refused_not_recursed_forever() -> None:
    err = error_of(
        "rules:\n  - id: r1\n    everyone: true\n    clients: [c]\n    tool: t\n    scopes: [s]\n"
        "    constraints: {path: &a {x: *a}}\n"
    )
    assert err.line == 7
    assert "nested more than" in str(err)


def test_non_string_keys_are_refused() -> None:
    err = error_of(rule_text("scopes: [s]", "constraints: {path: {1: x}}"))
    assert err.line == 7
    assert "keys in" in str(err) and "must be strings, got an integer" in str(err)


def test_unsafe_tags_are_refused() -> None:
    err = error_of(rule_text("scopes: [s]", "constraints: {path: {x: !!python/object:os.system ls}}"))
    assert err.line == 7
    assert "cannot contain" in str(err)


# --------------------------------------------------------------------------- references


REFS = """\
rules:
  - id: good
    idp: idp-a
    subjects: [alice]
    clients: [mcp-a]
    tool: tickets
    scopes: [tickets:read]
  - id: bad
    idp:
      - idp-a
      - idp-z
    groups: [g]
    clients:
      - mcp-a
      - mcp-z
    tool: tickets
    scopes:
      - tickets:read
      - tickets:nuke
  - id: ghost
    groups: [g]
    clients: [mcp-a]
    tool: ghost-tool
    scopes: [x]
"""

TOOLS = {"tickets": frozenset({"tickets:read", "tickets:write"}), "search": frozenset({"search:query"})}


def test_references_to_registered_names_pass() -> None:
    doc = parse_policy(FULL)
    validate_references(
        doc,
        tools={
            "tickets": frozenset({"tickets:read", "tickets:write"}),
            "search": frozenset({"search:query"}),
        },
        clients=frozenset({"mcp-helpdesk", "mcp-other", "mcp-search"}),
        idps=frozenset({"idp-a"}),
    )


def test_unknown_references_are_reported_on_their_own_lines() -> None:
    doc = parse_policy(REFS, "refs.yaml")
    with pytest.raises(PolicyError) as info:
        validate_references(doc, tools=TOOLS, clients=frozenset({"mcp-a"}), idps=frozenset({"idp-a"}))
    err = info.value
    by_line = dict(err.errors)
    assert sorted(by_line) == [11, 15, 19, 23]
    assert "unknown identity provider 'idp-z'" in by_line[11]
    assert "unknown client 'mcp-z'" in by_line[15]
    assert "tool 'tickets' defines no scope 'tickets:nuke'" in by_line[19]
    assert "unknown tool 'ghost-tool'" in by_line[23]
    assert "known: 'search', 'tickets'" in by_line[23]
    assert str(err).startswith("refs.yaml:11: rule 'bad'")


def test_reference_errors_for_flow_lists_use_the_value_line() -> None:
    doc = parse_policy(rule_text("scopes: [s, s2]", "idp: i"))
    with pytest.raises(PolicyError) as info:
        validate_references(
            doc, tools={"t": frozenset({"s"})}, clients=frozenset({"c"}), idps=frozenset({"i"})
        )
    assert info.value.errors == [(6, info.value.errors[0][1])]
    assert "defines no scope 's2'" in str(info.value)


def test_policy_document_equality_is_semantic() -> None:
    doc = parse_policy(FULL)
    assert PolicyDocument(rules=doc.rules, source_text="other", source="x") == doc


def test_constraint_grammar_is_checked_at_its_line() -> None:
    """A typo in a constraint operator is an apply-time error, not a capability that constrains nothing."""
    err = error_of(rule_text("scopes: [s]", "constraints:", "  path: {prefixx: \"/home/${sub}/\"}"))
    assert err.line == 8
    assert "unknown operator" in str(err)
    err = error_of(rule_text("scopes: [s]", "constraints:", "  path: {prefix: \"/home/${user}/\"}"))
    assert "path" in str(err)
