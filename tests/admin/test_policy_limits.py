"""A policy document obeys the strict JSON rules, whatever its syntax and whichever way it arrives.

YAML spells NUL and lone surrogates with plain ASCII escapes (``"\\0"``,
``"\\ud800"``), reads ``.nan``, expands aliases, and nests as deep as the text
goes. Before: a surrogate was a 500 (the canonical JSON could not be encoded),
a NUL was stored, a 5000-digit integer was a 500 (Python's conversion limit),
deep nesting with a tab was a 500 (``json`` recursed), and an alias bomb was
walked to two million values. Now each is a one-line ``PolicyError`` naming the
rule and its line: a 400 at the API and the console, exit 2 from the CLI.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings

from issuer.policy.document import PolicyError, parse_policy
from tests.admin.hostile import POLICY, bad_policy_documents
from tests.test_cli import Run, one_error_line, ready, run  # noqa: F401  (fixtures)

RULE = "rules:\n  - id: x\n    everyone: true\n    clients: [a]\n    tool: t\n    scopes: [s]\n"
_L = "abcdefghij"


def alias_bomb(levels: int) -> str:
    """Ten references to ten references to ...: 10**levels values from a few hundred bytes."""
    lines = ["    constraints:", "      q0: {in: &a [x, x, x, x, x, x, x, x, x, x]}"]
    lines += [f"      q{i}: {{in: &{_L[i]} [" + ", ".join([f"*{_L[i - 1]}"] * 10) + "]}" for i in range(1, levels)]
    return RULE + "\n".join(lines) + "\n"


HOSTILE = {
    "NUL escape": (RULE + '    description: "a\\0b"\n', 7, "NUL"),
    "NUL as \\x00": (RULE + '    description: "a\\x00b"\n', 7, "NUL"),
    "lone surrogate": (RULE + '    description: "\\ud800"\n', 7, "surrogate"),
    "surrogate in a member name": (RULE + '    constraints:\n      "\\udc00": {eq: a}\n', 8, "surrogate"),
    "surrogate in JSON syntax": ('{"rules": [{"id": "x", "everyone": true, "clients": ["a"], "tool": "t",'
                                 ' "scopes": ["s"], "description": "\\udfff"}]}', 1, "surrogate"),
    "NaN": (RULE + "    constraints:\n      n: {eq: .nan}\n", 8, "NaN"),
    "a 5000-digit integer": (RULE + "    max_lifetime: " + "1" * 5000 + "\n", 7, "digits"),
    "deep flow nesting": ("rules: " + "[" * 10_000 + "]" * 10_000 + "\n", 1, "nested more than 32"),
    # Was a RecursionError in the JSON probe that lets tabs through; now refused as JSON, so YAML sees the tab.
    "deep JSON with a tab": ("{\t\"rules\": " + "[" * 10_000 + "]" * 10_000 + "}", 1, "YAML syntax error"),
    "an alias bomb": (alias_bomb(7), 8, "aliases expand"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_policy_document_is_one_line_naming_the_rule(name: str) -> None:
    text, line, rule = HOSTILE[name]
    started = time.monotonic()
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml")
    assert time.monotonic() - started < 5, "refused, but only after expanding the document"  # generous
    message = str(caught.value)
    assert message.startswith(f"p.yaml:{line}: ") and rule in message, message
    assert "\n" not in message


def test_shared_lists_are_still_fine() -> None:
    """The alias bound is proportional: a list of clients shared by many rules is not a bomb."""
    clients = ", ".join(f"mcp-{i}" for i in range(200))
    rules = [f"  - id: r{i}\n    everyone: true\n    clients: {'&c [' + clients + ']' if i == 0 else '*c'}\n"
             f"    tool: t\n    scopes: [s]\n" for i in range(100)]
    doc = parse_policy("rules:\n" + "".join(rules))
    assert len(doc.rules) == 100 and all(len(r.clients) == 200 for r in doc.rules)


@pytest.mark.parametrize("name", ["lone surrogate", "NUL escape", "an alias bomb"])
def test_the_cli_exits_2_with_the_one_line(ready: Run, tmp_path: Path, name: str) -> None:  # noqa: F811
    text, line, rule = HOSTILE[name]
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    result = ready("policy", "apply", str(path))
    one_error_line(result, 2)
    assert f"policy.yaml:{line}: " in result.stderr and rule in result.stderr
    assert "no policy applied" in ready("policy", "show").stderr  # nothing was applied


@given(text=bad_policy_documents())
@settings(max_examples=60, deadline=None, database=None)
def test_any_document_breaking_a_rule_is_one_line(text: str) -> None:
    """The generator the API and console property tests draw from: each of its documents is refused in one line."""
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml")
    assert str(caught.value).startswith("p.yaml:") and "\n" not in str(caught.value)


def test_the_document_they_break_is_valid() -> None:
    assert [r.id for r in parse_policy(POLICY).rules] == ["fuzz"]
