"""Hostile input shared by the admin API and console tests: what to send, and how to see that nothing changed.

Every value drawn here breaks one of :mod:`issuer.kernel.strictjson`'s rules, so
a surface that applies them answers 4xx to each one; a surface that lets one
through to storage answers 5xx (a NUL fails a PostgreSQL write, a lone
surrogate fails UTF-8 encoding, deep nesting overflows a recursive parser).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from sqlalchemy import column, inspect, select, table

from issuer.db import Database

__all__ = ["BAD_CHARS", "POLICY", "bad_json_bodies", "bad_policy_documents", "bad_segments", "bad_texts",
           "registry_rows"]

#: Characters no stored string may hold: NUL and lone surrogates of both halves.
BAD_CHARS = ("\x00", "\ud800", "\udbff", "\udc00", "\udfff")
#: Tables an admin request may only change when it succeeds; the audit trail and the replay cache
#: belong to the token endpoints.
_NOT_REGISTRY = frozenset({"audit_events", "audit_checkpoints", "replay_cache", "alembic_version"})

_plain = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)


@st.composite
def bad_texts(draw: st.DrawFn) -> str:
    """Printable text with at least one NUL or lone surrogate somewhere in it."""
    return draw(_plain) + draw(st.sampled_from(BAD_CHARS)) + draw(_plain)


def bad_segments() -> st.SearchStrategy[str]:
    """:func:`bad_texts` that stay one path segment: a '/' would route elsewhere (or redirect), not be refused."""
    return bad_texts().map(lambda text: text.replace("/", "_"))


def _escape(text: str) -> str:
    """The JSON string literal of ``text``, spelling NUL and surrogates as \\u escapes (as an attacker would)."""
    return '"' + "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else f"\\u{ord(c):04x}" for c in text) + '"'


def _member(name: str, literal: str) -> str:
    return f"{_escape(name)}: {literal}"


@st.composite
def bad_json_bodies(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    """A JSON object shaped like ``valid`` (a body the route accepts) with one rule broken in it."""
    fields = [(k, _literal(v)) for k, v in valid.items()]
    kind = draw(st.sampled_from(["bad_char", "bad_key", "duplicate", "nan", "deep", "not_utf8"]))
    name = draw(st.sampled_from([k for k, _ in fields])) if fields else "x"
    if kind == "bad_char":
        fields = [(k, _escape(draw(bad_texts())) if k == name else lit) for k, lit in fields] or [("x", '"\\u0000"')]
    elif kind == "bad_key":
        fields.append((draw(bad_texts()), "1"))
    elif kind == "duplicate":
        fields.append((name, _literal(valid.get(name, 1))))
        fields.append((name, '"other"'))
    elif kind == "nan":
        fields = [(k, draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"])) if k == name else lit)
                  for k, lit in fields] or [("x", "NaN")]
    elif kind == "deep":
        depth = draw(st.integers(min_value=33, max_value=50_000))
        nested = "[" * depth + "]" * depth
        fields = [(k, nested if k == name else lit) for k, lit in fields] or [("x", nested)]
    text = "{" + ", ".join(_member(k, lit) for k, lit in fields) + "}"
    if kind == "not_utf8":  # a raw byte that is not UTF-8, or a surrogate encoded as if it were
        raw = draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\x80"]))
        return text[:-1].encode() + (b", " if fields else b"") + b'"z": "' + raw + b'"}'
    return text.encode()


#: A policy the standard test registry (tests/conftest.py) accepts; each hostile document breaks it in one place.
POLICY = ("rules:\n  - id: fuzz\n    idp: idp-a\n    groups: [support]\n    clients: [mcp-helpdesk]\n"
          "    tool: tickets\n    scopes: [tickets:read]\n")
_YAML_ESCAPES = ("\\0", "\\x00", "\\u0000", "\\ud800", "\\udfff", "\\U0000d800")


@st.composite
def bad_policy_documents(draw: st.DrawFn) -> str:
    """:data:`POLICY` with one thing YAML accepts and the policy rules refuse."""
    kind = draw(st.sampled_from(["escape", "escaped_key", "nan", "digits", "deep", "bomb"]))
    if kind == "escape":  # YAML's own escapes spell NUL and lone surrogates in plain ASCII
        text = draw(_plain).replace('"', "").replace("\\", "")
        return POLICY + f'    description: "{text}{draw(st.sampled_from(_YAML_ESCAPES))}"\n'
    if kind == "escaped_key":
        return POLICY + f'    constraints:\n      "a{draw(st.sampled_from(_YAML_ESCAPES))}": {{eq: x}}\n'
    if kind == "nan":
        number = draw(st.sampled_from([".nan", ".inf", "-.Inf", ".NaN"]))
        return POLICY + f"    constraints:\n      n: {{eq: {number}}}\n"
    if kind == "digits":
        return POLICY + "    max_lifetime: " + "9" * draw(st.integers(min_value=41, max_value=6000)) + "\n"
    if kind == "deep":
        depth = draw(st.integers(min_value=33, max_value=20_000))
        return POLICY + "    constraints:\n      n: {in: " + "[" * depth + "]" * depth + "}\n"
    levels = draw(st.integers(min_value=6, max_value=9))  # 10**levels values from a few hundred bytes
    names = "abcdefghij"
    lines = ["    constraints:", "      q0: {in: &a [x, x, x, x, x, x, x, x, x, x]}"]
    lines += [f"      q{i}: {{in: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 10) + "]}"
              for i in range(1, levels)]
    return POLICY + "\n".join(lines) + "\n"


def _literal(value: Any) -> str:
    import json

    return json.dumps(value)


def registry_rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the audit trail's, to compare before and after a refused request."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with db.engine.connect() as conn:
        for name in sorted(set(inspect(conn).get_table_names()) - _NOT_REGISTRY):
            cols = [c["name"] for c in inspect(conn).get_columns(name)]
            rows = conn.execute(select(*[column(c) for c in cols]).select_from(table(name))).all()
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out
