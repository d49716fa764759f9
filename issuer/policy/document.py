"""The policy document: its YAML/JSON syntax, its schema, and its line-precise errors.

A policy is written by hand and read by a machine that grants access from it,
so this module is deliberately stricter than YAML: every mistake an admin is
likely to make (a misspelt key, ``yes`` where a name was meant, a duplicate
key that YAML would silently collapse, an empty matcher list that would match
nobody or everybody) is refused with the line it is on, instead of being
turned into a policy that grants something nobody wrote down.

The text is composed into a YAML node tree (``yaml.SafeLoader`` only) and the
plain values are built here, from the nodes, so that every error can name the
line of the node that caused it.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NoReturn, TypeAlias

import yaml
from yaml.constructor import SafeConstructor

from issuer.constraints import ConstraintError, validate_constraints
from issuer.errors import ConfigurationError
from issuer.kernel.strictjson import StrictJSONError
from issuer.kernel.strictjson import loads as strict_loads
from issuer.ratelimit import parse_limits

from .limits import ALIAS_FACTOR, ALIAS_FLOOR, MAX_DEPTH, MAX_VALUES, BoundedLoader, LimitError, expansion_budget

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_LIFETIME_SECONDS",
    "MAX_RULES",
    "MIN_LIFETIME_SECONDS",
    "ClaimValue",
    "PolicyDocument",
    "PolicyError",
    "Rule",
    "canonical_json",
    "parse_policy",
    "validate_references",
]

#: Larger documents are refused before YAML sees them: the parser is not
#: linear in every input, and no real policy comes close.
MAX_DOCUMENT_BYTES: Final = 1024 * 1024
MAX_RULES: Final = 10_000
MIN_LIFETIME_SECONDS: Final = 10
MAX_LIFETIME_SECONDS: Final = 900  # the longest a capability may live (ISSUER_TOKEN_LIFETIME max)

#: A claim value a rule may require: exact, type-strict equality
#: (``True`` never matches ``1``, ``"1"`` never matches ``1``).
ClaimValue: TypeAlias = str | int | bool

_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
# RFC 6749 section 3.3 scope-token: printable ASCII except space, '"' and '\'.
_SCOPE_RE: Final = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
_DECIMAL_RE: Final = re.compile(r"[-+]?[0-9]+")
# The only spellings of a boolean that cannot be a name someone meant to write.
_PLAIN_BOOLEANS: Final = frozenset({"true", "false", "True", "False", "TRUE", "FALSE"})

# Composed trees can share nodes (aliases) and even contain cycles
# (``&a [*a]``): the depth and the expansion budget of :mod:`.limits` keep the walk finite and small.
_MAX_DEPTH: Final = MAX_DEPTH

_T = "tag:yaml.org,2002:"
_STR, _INT, _BOOL, _NULL, _FLOAT = _T + "str", _T + "int", _T + "bool", _T + "null", _T + "float"
_MAP, _SEQ, _MERGE = _T + "map", _T + "seq", _T + "merge"

_TOP_KEYS: Final = ("default", "rules")
_RULE_KEYS: Final = (
    "id",
    "description",
    "idp",
    "subjects",
    "groups",
    "claims",
    "everyone",
    "clients",
    "tool",
    "scopes",
    "default_scopes",
    "allow_narrowing",
    "max_lifetime",
    "rate_limit",
    "actions",
    "constraints",
)
_REQUIRED_RULE_KEYS: Final = ("id", "clients", "tool", "scopes")

_CONSTRUCTOR: Final = SafeConstructor()


class PolicyError(ConfigurationError):
    """A policy document that cannot be used, with every problem found in it.

    The message is the first problem only, on one line, so that it fits a log
    line or a CLI error; ``errors`` (and :meth:`messages`) carry the rest so
    that an admin fixes a document in one round instead of one error a time.
    """

    def __init__(self, source: str, errors: list[tuple[int, str]]) -> None:
        if not errors:
            raise ValueError("PolicyError needs at least one error")
        self.source = source
        self.errors: list[tuple[int, str]] = sorted(errors, key=lambda e: e[0])
        self.line: int = self.errors[0][0]
        super().__init__(self._format(*self.errors[0]))

    def _format(self, line: int, message: str) -> str:
        return f"{self.source}:{line}: {message}"

    def messages(self) -> list[str]:
        """Every problem as its own ``source:line: message`` line."""
        return [self._format(line, message) for line, message in self.errors]


@dataclass(frozen=True)
class Rule:
    """One grant. Set-valued fields are frozensets: their order means nothing.

    ``None`` for a matcher means the rule does not constrain on it (the
    document left it out); an empty set never occurs, because the parser
    refuses empty lists where they would be ambiguous.

    ``line`` and ``positions`` say where the rule was written; they are left
    out of equality so that the same policy, reformatted, compares equal.
    """

    id: str
    tool: str
    clients: frozenset[str]
    scopes: frozenset[str]
    default_scopes: frozenset[str]
    description: str | None = None
    idp: frozenset[str] | None = None
    subjects: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    claims: Mapping[str, tuple[ClaimValue, ...]] | None = None
    everyone: bool = False
    allow_narrowing: bool = False
    max_lifetime: int | None = None
    #: e.g. "60/minute;10/second": exchanges per user per tool under this rule (limits syntax)
    rate_limit: str | None = None
    actions: frozenset[str] = frozenset()
    #: Read-only all the way down: mappings are ``MappingProxyType``, lists are tuples.
    constraints: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    line: int = field(default=0, compare=False)
    positions: Mapping[tuple[str, str], int] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )

    def line_of(self, key: str, item: str = "") -> int:
        """Line of ``key``'s value, or of one ``item`` in its list; the rule's line if unknown."""
        return self.positions.get((key, item), self.positions.get((key, ""), self.line))


@dataclass(frozen=True)
class PolicyDocument:
    """A parsed, schema-valid policy. Equality is semantic (rules only)."""

    rules: tuple[Rule, ...]
    source_text: str = field(compare=False, repr=False)
    source: str = field(default="policy", compare=False)


# --------------------------------------------------------------------------- parsing


class _Abort(Exception):
    """The document is too broken (or too big) to keep walking."""


class _Invalid(Exception):
    """The value of one field is wrong; the error is already recorded."""


def _q(value: str, limit: int = 60) -> str:
    """Quote a document string for a one-line message (``repr`` escapes newlines)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _kind(node: yaml.Node) -> str:
    """Name a node's type the way an admin reads it, for 'expected X, got Y'."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return {
        _STR: "a string",
        _INT: "an integer",
        _BOOL: f"a boolean ({node.value!s:.20}; quote it if you meant a string)",
        _NULL: "nothing (null)",
        _FLOAT: "a number",
    }.get(node.tag, f"a value tagged {node.tag!s:.60}")


class _Parser:
    def __init__(self, source: str, *, max_nodes: int = MAX_VALUES) -> None:
        self.source = source
        self.errors: list[tuple[int, str]] = []
        self._nodes = 0
        self._max_nodes = max_nodes

    # -- bookkeeping

    def error(self, where: yaml.Node | int, message: str) -> None:
        self.errors.append((where if isinstance(where, int) else _line(where), message))

    def invalid(self, where: yaml.Node | int, message: str) -> NoReturn:
        self.error(where, message)
        raise _Invalid

    def visit(self, node: yaml.Node, depth: int) -> None:
        self._nodes += 1
        if self._nodes > self._max_nodes:
            self.error(node, f"aliases expand the document to more than {self._max_nodes} values "
                             f"(the limit is {ALIAS_FACTOR} times its own, at least {ALIAS_FLOOR}, "
                             f"at most {MAX_VALUES}): write the values out")
            raise _Abort
        if depth > _MAX_DEPTH:
            self.error(node, f"values are nested more than {_MAX_DEPTH} deep (or an alias refers to itself)")
            raise _Abort

    # -- generic shapes

    def pairs(self, node: yaml.Node, what: str, depth: int = 0) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """The (key, key node, value node) of a mapping, with YAML merge keys applied.

        Duplicate keys are errors here because YAML would keep the last one
        silently, and in a policy the one that silently wins may be the grant.
        """
        self.visit(node, depth)
        if not isinstance(node, yaml.MappingNode) or node.tag != _MAP:
            self.invalid(node, f"{what} must be a mapping, got {_kind(node)}")
        explicit: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        merged: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    try:
                        for key, k, v in self.pairs(source, f"merged value in {what}", depth + 1):
                            merged.setdefault(key, (k, v))
                    except _Invalid:
                        pass
                continue
            self.visit(key_node, depth + 1)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self.error(key_node, f"keys in {what} must be strings, got {_kind(key_node)}")
                continue
            key = key_node.value
            if key in explicit:
                first = _line(explicit[key][0])
                self.error(key_node, f"duplicate key {_q(key)} in {what} (first on line {first})")
                continue
            explicit[key] = (key_node, value_node)
        for key, nodes in merged.items():
            explicit.setdefault(key, nodes)
        return [(key, k, v) for key, (k, v) in explicit.items()]

    def known_keys(
        self, pairs: list[tuple[str, yaml.Node, yaml.Node]], allowed: tuple[str, ...], what: str
    ) -> dict[str, yaml.Node]:
        out: dict[str, yaml.Node] = {}
        for key, key_node, value_node in pairs:
            if key in allowed:
                out[key] = value_node
            else:
                self.error(key_node, f"unknown key {_q(key)} in {what}; allowed keys: {', '.join(allowed)}")
        return out

    def string(self, node: yaml.Node, what: str, depth: int) -> str:
        self.visit(node, depth)
        if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
            self.invalid(node, f"{what} must be a string, got {_kind(node)}")
        value: str = node.value
        if not value:
            self.invalid(node, f"{what} must not be an empty string")
        return value

    def string_list(
        self, node: yaml.Node, what: str, depth: int, *, allow_empty: bool = False
    ) -> list[tuple[str, yaml.Node]]:
        """A list of distinct non-empty strings; every bad element is reported."""
        self.visit(node, depth)
        if not isinstance(node, yaml.SequenceNode) or node.tag != _SEQ:
            self.invalid(node, f"{what} must be a list of strings, got {_kind(node)}")
        if not node.value and not allow_empty:
            self.invalid(node, f"{what} must not be an empty list")
        out: list[tuple[str, yaml.Node]] = []
        seen: set[str] = set()
        bad = False
        for item in node.value:
            try:
                value = self.string(item, f"each entry of {what}", depth + 1)
            except _Invalid:
                bad = True
                continue
            if value in seen:
                self.error(item, f"{_q(value)} is listed twice in {what}")
                bad = True
                continue
            seen.add(value)
            out.append((value, item))
        if bad:
            raise _Invalid
        return out

    def boolean(self, node: yaml.Node, what: str, depth: int) -> bool:
        self.visit(node, depth)
        if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL:
            self.invalid(node, f"{what} must be true or false, got {_kind(node)}")
        return bool(_CONSTRUCTOR.construct_yaml_bool(node))

    def integer(self, node: yaml.Node, what: str, depth: int) -> int:
        self.visit(node, depth)
        # Decimal only: YAML 1.1 would also read 0o17, 0x1f and 5:00 (= 300) as integers.
        if not isinstance(node, yaml.ScalarNode) or node.tag != _INT or not _DECIMAL_RE.fullmatch(node.value):
            self.invalid(node, f"{what} must be a decimal integer, got {_kind(node)}")
        return int(node.value)

    def claim_value(self, node: yaml.Node, what: str, depth: int) -> ClaimValue:
        self.visit(node, depth)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR:
                return str(node.value)
            if node.tag == _INT and _DECIMAL_RE.fullmatch(node.value):
                return int(node.value)
            if node.tag == _BOOL:
                # ``region: no`` (Norway) must not become False without anyone noticing.
                if node.value not in _PLAIN_BOOLEANS:
                    self.invalid(
                        node,
                        f"{what}: {_q(node.value)} is a YAML boolean; write true/false, "
                        "or quote it if you meant a string",
                    )
                return bool(_CONSTRUCTOR.construct_yaml_bool(node))
        self.invalid(node, f"{what} must be a string, an integer or true/false, got {_kind(node)}")

    def plain(self, node: yaml.Node, what: str, depth: int) -> Any:
        """Any JSON-like value, frozen: mappings become read-only, lists become tuples."""
        self.visit(node, depth)
        if isinstance(node, yaml.MappingNode):
            return MappingProxyType(
                {
                    key: self.plain(v, f"{what}.{key}", depth + 1)
                    for key, _, v in self.pairs(node, what, depth)
                }
            )
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self.invalid(node, f"{what} has an unsupported tag {node.tag!s:.60}")
            return tuple(self.plain(item, what, depth + 1) for item in node.value)
        if not isinstance(node, yaml.ScalarNode):
            self.invalid(node, f"{what} holds {_kind(node)}, which a policy cannot contain")
        if node.tag == _STR:
            return node.value
        if node.tag == _INT:
            return _CONSTRUCTOR.construct_yaml_int(node)
        if node.tag == _FLOAT:
            number = _CONSTRUCTOR.construct_yaml_float(node)
            if not math.isfinite(number):  # .nan passes every comparison it is put in; JSON has neither
                self.invalid(node, f"{what}: NaN and Infinity are not allowed")
            return number
        if node.tag == _BOOL:
            return _CONSTRUCTOR.construct_yaml_bool(node)
        if node.tag == _NULL:
            return None
        self.invalid(node, f"{what} holds {_kind(node)}, which a policy cannot contain")

    # -- the document

    def document(self, root: yaml.Node | None) -> list[Rule]:
        if root is None:
            self.invalid(1, "the document is empty; expected a mapping with a 'rules' list")
        if not isinstance(root, yaml.MappingNode):
            self.invalid(root, f"the document must be a mapping with a 'rules' list, got {_kind(root)}")
        fields = self.known_keys(self.pairs(root, "the document"), _TOP_KEYS, "the document")
        if "default" in fields:
            try:
                if self.string(fields["default"], "'default'", 1) != "deny":
                    self.error(fields["default"], "'default' can only be 'deny' (policy is default-deny)")
            except _Invalid:
                pass
        if "rules" not in fields:
            self.invalid(root, "the document has no 'rules' key (write 'rules: []' to deny everything)")
        rules_node = fields["rules"]
        self.visit(rules_node, 1)
        if not isinstance(rules_node, yaml.SequenceNode) or rules_node.tag != _SEQ:
            self.invalid(rules_node, f"'rules' must be a list of rules, got {_kind(rules_node)}")
        rules: list[Rule] = []
        first_line: dict[str, int] = {}
        for index, rule_node in enumerate(rules_node.value):
            if index >= MAX_RULES:
                self.error(rule_node, f"too many rules: the limit is {MAX_RULES}")
                break
            try:
                rule = self.rule(rule_node)
            except _Invalid:
                continue
            if rule.id in first_line:
                self.error(
                    rule.line_of("id"),
                    f"duplicate rule id {_q(rule.id)} (first on line {first_line[rule.id]})",
                )
                continue
            first_line[rule.id] = rule.line_of("id")
            rules.append(rule)
        return rules

    def rule(self, node: yaml.Node) -> Rule:
        depth = 2
        name = "a rule"
        if isinstance(node, yaml.MappingNode):
            # Name the rule in every message, including those about its keys.
            for key_node, value_node in node.value:
                is_str = isinstance(value_node, yaml.ScalarNode) and value_node.tag == _STR
                if key_node.value == "id" and is_str:
                    name = f"rule {_q(value_node.value)}"
                    break
        pairs = self.pairs(node, name, depth)
        fields = self.known_keys(pairs, _RULE_KEYS, name)
        rule_line = _line(node)
        positions: dict[tuple[str, str], int] = {(k, ""): _line(v) for k, v in fields.items()}
        ok = True

        missing = [k for k in _REQUIRED_RULE_KEYS if k not in fields]
        if missing:
            self.error(node, f"{name} is missing required key(s): {', '.join(missing)}")
            ok = False

        values: dict[str, Any] = {}

        def field_of(key: str, parse: Any) -> None:
            nonlocal ok
            if key not in fields:
                return
            try:
                values[key] = parse(fields[key])
            except _Invalid:
                ok = False

        field_of("id", lambda n: self._rule_id(n, depth + 1))

        def strings(key: str, allow_empty: bool = False) -> Any:
            def parse(n: yaml.Node) -> list[str]:
                items = self.string_list(n, f"'{key}' of {name}", depth + 1, allow_empty=allow_empty)
                for value, item_node in items:
                    positions[(key, value)] = _line(item_node)
                return [value for value, _ in items]

            return parse

        field_of("description", lambda n: self.string(n, f"'description' of {name}", depth + 1))
        field_of("tool", lambda n: self.string(n, f"'tool' of {name}", depth + 1))
        field_of("idp", lambda n: self._idp(n, name, positions, depth + 1))
        for key in ("subjects", "groups", "clients", "scopes", "actions"):
            field_of(key, strings(key))
        field_of("default_scopes", strings("default_scopes", allow_empty=True))
        field_of("claims", lambda n: self._claims(n, name, depth + 1))
        field_of("everyone", lambda n: self.boolean(n, f"'everyone' of {name}", depth + 1))
        field_of("allow_narrowing", lambda n: self.boolean(n, f"'allow_narrowing' of {name}", depth + 1))
        field_of("max_lifetime", lambda n: self._lifetime(n, name, depth + 1))
        field_of("rate_limit", lambda n: self._rate_limit(n, name, depth + 1))
        field_of("constraints", lambda n: self._constraints(n, name, depth + 1))

        for key in ("scopes", "default_scopes"):
            for scope in values.get(key, ()):
                if not _SCOPE_RE.fullmatch(scope):
                    self.error(
                        positions[(key, scope)],
                        f"{_q(scope)} in '{key}' of {name} is not a valid scope "
                        "(printable ASCII without spaces, quotes or backslashes)",
                    )
                    ok = False
        if "scopes" in values and "default_scopes" in values:
            for scope in values["default_scopes"]:
                if scope not in values["scopes"]:
                    self.error(
                        positions[("default_scopes", scope)],
                        f"default scope {_q(scope)} of {name} is not in its 'scopes'",
                    )
                    ok = False

        # A forgotten matcher must never turn into a grant for everybody.
        matchers = [k for k in ("subjects", "groups", "claims") if k in fields]
        everyone = bool(values.get("everyone", False))
        if everyone and matchers:
            self.error(
                fields["everyone"],
                f"{name} has 'everyone: true' and also {', '.join(matchers)}; keep one or the other",
            )
            ok = False
        elif not matchers and not everyone:
            if "everyone" not in fields:
                self.error(
                    node,
                    f"{name} names no subjects, groups or claims; "
                    "add one, or write 'everyone: true' to grant every user of its idp(s)",
                )
            elif "everyone" in values:  # else its type error is already reported
                self.error(fields["everyone"], f"{name} has 'everyone: false' and no subject/group/claim")
            ok = False
        # Raw ``sub`` values only mean something within one provider: without
        # ``idp``, 'alice' from any trusted provider would match.
        if "subjects" in fields and "idp" not in fields:
            self.error(
                fields["subjects"],
                f"{name} lists 'subjects' but no 'idp'; subjects are a provider's own 'sub' "
                "values, so name the provider they belong to",
            )
            ok = False

        if not ok:
            raise _Invalid
        scopes = frozenset(values["scopes"])
        claims = values.get("claims")
        return Rule(
            id=values["id"],
            tool=values["tool"],
            clients=frozenset(values["clients"]),
            scopes=scopes,
            default_scopes=frozenset(values["default_scopes"]) if "default_scopes" in values else scopes,
            description=values.get("description"),
            idp=frozenset(values["idp"]) if "idp" in values else None,
            subjects=frozenset(values["subjects"]) if "subjects" in values else None,
            groups=frozenset(values["groups"]) if "groups" in values else None,
            claims=MappingProxyType(claims) if claims is not None else None,
            everyone=everyone,
            allow_narrowing=values.get("allow_narrowing", False),
            max_lifetime=values.get("max_lifetime"),
            rate_limit=values.get("rate_limit"),
            actions=frozenset(values.get("actions", ())),
            constraints=values.get("constraints", MappingProxyType({})),
            line=rule_line,
            positions=MappingProxyType(positions),
        )

    def _rule_id(self, node: yaml.Node, depth: int) -> str:
        value = self.string(node, "a rule 'id'", depth)
        if not _ID_RE.fullmatch(value):
            self.invalid(node, f"rule id {_q(value)} must be 1-100 characters of A-Z a-z 0-9 _ . : -")
        return value

    def _idp(
        self, node: yaml.Node, name: str, positions: dict[tuple[str, str], int], depth: int
    ) -> list[str]:
        if isinstance(node, yaml.SequenceNode):
            items = self.string_list(node, f"'idp' of {name}", depth)
            for value, item_node in items:
                positions[("idp", value)] = _line(item_node)
            return [value for value, _ in items]
        value = self.string(node, f"'idp' of {name} (a provider name or a list of them)", depth)
        positions[("idp", value)] = _line(node)
        return [value]

    def _claims(self, node: yaml.Node, name: str, depth: int) -> dict[str, tuple[ClaimValue, ...]]:
        pairs = self.pairs(node, f"'claims' of {name}", depth)
        if not pairs:
            # An empty matcher would satisfy "names a matcher" while matching everyone.
            self.invalid(node, f"'claims' of {name} must not be empty (leave the key out instead)")
        out: dict[str, tuple[ClaimValue, ...]] = {}
        bad = False
        for claim, _, value_node in pairs:
            what = f"claim {_q(claim)} of {name}"
            try:
                if isinstance(value_node, yaml.SequenceNode):
                    self.visit(value_node, depth + 1)
                    if not value_node.value:
                        self.invalid(value_node, f"{what} must not be an empty list")
                    values: list[ClaimValue] = []
                    for item in value_node.value:
                        value = self.claim_value(item, what, depth + 2)
                        if any(type(v) is type(value) and v == value for v in values):
                            self.invalid(item, f"{what} lists {_q(str(value))} twice")
                        values.append(value)
                    out[claim] = tuple(values)
                else:
                    out[claim] = (self.claim_value(value_node, what, depth + 1),)
            except _Invalid:
                bad = True
        if bad:
            raise _Invalid
        return out

    def _lifetime(self, node: yaml.Node, name: str, depth: int) -> int:
        value = self.integer(node, f"'max_lifetime' of {name}", depth)
        if not MIN_LIFETIME_SECONDS <= value <= MAX_LIFETIME_SECONDS:
            self.invalid(
                node,
                f"'max_lifetime' of {name} is {value}; it must be between "
                f"{MIN_LIFETIME_SECONDS} and {MAX_LIFETIME_SECONDS} seconds",
            )
        return value

    def _rate_limit(self, node: yaml.Node, name: str, depth: int) -> str:
        value = self.string(node, f"'rate_limit' of {name}", depth)
        try:
            parse_limits(f"'rate_limit' of {name}", value)
        except ConfigurationError as exc:
            self.invalid(node, str(exc))
        return value

    def _constraints(self, node: yaml.Node, name: str, depth: int) -> Mapping[str, Mapping[str, Any]]:
        what = f"'constraints' of {name}"
        out: dict[str, Mapping[str, Any]] = {}
        bad = False
        for key, _, value_node in self.pairs(node, what, depth):
            try:
                if not isinstance(value_node, yaml.MappingNode):
                    self.invalid(
                        value_node,
                        f"constraint {_q(key)} of {name} must be a mapping, got {_kind(value_node)}",
                    )
                out[key] = self.plain(value_node, f"constraint {_q(key)} of {name}", depth + 1)
            except _Invalid:
                bad = True
        if bad:
            raise _Invalid
        try:
            # The grammar (operators, operand types, template syntax) is the constraint
            # language's own; the same module evaluates it at the exchange and in the SDK.
            validate_constraints(_thaw(out))
        except ConstraintError as exc:
            self.invalid(node, f"{what}: {exc}")
        return MappingProxyType(out)


def _compose(text: str, source: str) -> tuple[yaml.Node | None, int]:
    """Compose the node tree under :mod:`.limits`, turning YAML's multi-line errors into one-line ones.

    Returns the root and how many nodes were composed.
    """
    try:
        loader = BoundedLoader(text)  # the reader checks the characters here already
        try:
            return loader.get_single_node(), loader.nodes
        finally:
            loader.dispose()
    except LimitError as exc:
        raise PolicyError(source, [(exc.line, str(exc))]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = "; ".join(" ".join(str(p).split()) for p in (exc.context, exc.problem) if p)
        raise PolicyError(source, [(line, f"YAML syntax error: {what or 'unparsable'}")]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        raise PolicyError(
            source, [(line, f"YAML syntax error: character #x{exc.character:04x} is not allowed")]
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError(source, [(1, f"YAML syntax error: {' '.join(str(exc).split())[:200]}")]) from None
    except RecursionError:
        raise PolicyError(source, [(1, "the document is nested too deeply")]) from None


def _json_tabs_to_spaces(text: str) -> str:
    """Let tab-indented JSON through: PyYAML rejects tabs that JSON allows.

    Only done when the text *is* valid JSON, where a raw tab can only be
    whitespace between tokens (JSON strings cannot hold one), so lines and
    meaning are unchanged.
    """
    if "\t" not in text or text.lstrip()[:1] not in ("{", "["):
        return text
    try:
        strict_loads(text)  # json.loads would recurse into deep nesting (RecursionError, a 500)
    except StrictJSONError:
        return text
    return text.replace("\t", " ")


def parse_policy(text: str, source: str = "policy") -> PolicyDocument:
    """Parse and schema-check a policy (YAML, or JSON), or raise :class:`PolicyError`.

    ``source`` is only used in messages (a file name, ``admin-api``...).
    References to tools, clients and providers are checked separately, by
    :func:`validate_references`, because they live in the registry and a
    document must be checkable (``policy lint``) without one.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise PolicyError(source, [(1, f"the document is {size} bytes; the limit is 1 MiB")])
    root, composed = _compose(_json_tabs_to_spaces(text), source)
    parser = _Parser(source, max_nodes=expansion_budget(composed))
    rules: list[Rule] = []
    with contextlib.suppress(_Invalid, _Abort):
        rules = parser.document(root)
    if parser.errors:
        raise PolicyError(source, parser.errors)
    return PolicyDocument(rules=tuple(rules), source_text=text, source=source)


def _known(names: Iterable[str]) -> str:
    listed = sorted(names)
    shown = ", ".join(_q(n, 40) for n in listed[:10])
    return (shown + (f" and {len(listed) - 10} more" if len(listed) > 10 else "")) or "none"


_CLAIM_TEMPLATE = re.compile(r"\$\{claims\.([^}]*)\}")


def _unusable_claims(rule: Rule, name: str, idp_claims: Mapping[str, frozenset[str]]) -> list[tuple[int, str]]:
    """Claims a rule matches on or fills in must be allowlisted by every provider it applies to.

    Otherwise a matcher silently never matches and a template refuses every
    exchange: both are policy bugs an admin should see at apply time.
    """
    providers = sorted(rule.idp) if rule.idp else sorted(idp_claims)
    used = set(dict(rule.claims or {}))
    used |= set(_CLAIM_TEMPLATE.findall(json.dumps(_thaw(rule.constraints))))
    errors = []
    for claim in sorted(used):
        missing = [p for p in providers if p in idp_claims and claim not in idp_claims[p]]
        if missing:
            key = "claims" if claim in dict(rule.claims or {}) else "constraints"
            errors.append(
                (rule.line_of(key),
                 f"{name} uses claim {_q(claim)}, which identity provider {_q(missing[0])} does not pass "
                 "to policy (register it with --attribute-claim)")
            )
    return errors


def validate_references(
    doc: PolicyDocument,
    *,
    tools: Mapping[str, frozenset[str]],
    clients: frozenset[str],
    idps: frozenset[str],
    tool_actions: Mapping[str, Mapping[str, frozenset[str]]] | None = None,
    idp_claims: Mapping[str, frozenset[str]] | None = None,
) -> None:
    """Refuse a policy that names a tool, scope, client or provider the registry does not have.

    A dangling name grants nothing today, but it grants something the day
    someone registers that name: the admin who writes the policy should find
    out now, not then.
    """
    errors: list[tuple[int, str]] = []
    for rule in doc.rules:
        name = f"rule {_q(rule.id)}"
        defined = tools.get(rule.tool)
        if defined is None:
            errors.append(
                (rule.line_of("tool"), f"{name} names unknown tool {_q(rule.tool)} (known: {_known(tools)})")
            )
        else:
            for scope in sorted((rule.scopes | rule.default_scopes) - defined):
                key = "scopes" if ("scopes", scope) in rule.positions else "default_scopes"
                errors.append(
                    (
                        rule.line_of(key, scope),
                        f"{name}: tool {_q(rule.tool)} defines no scope {_q(scope)} "
                        f"(it defines: {_known(defined)})",
                    )
                )
        # The actions a rule may name are those its own scopes cover (or, when its scopes
        # cover none, any the tool defines): anything else would refuse every exchange.
        by_scope = (tool_actions or {}).get(rule.tool) or {}
        known_actions = frozenset().union(*(by_scope.get(s, frozenset()) for s in rule.scopes))
        known_actions = known_actions or frozenset().union(*by_scope.values())
        if known_actions:
            for action in sorted(rule.actions - known_actions):
                errors.append(
                    (rule.line_of("actions", action),
                     f"{name}: tool {_q(rule.tool)} defines no action {_q(action)} "
                     f"(it defines: {_known(known_actions)})")
                )
        if idp_claims is not None:
            errors.extend(_unusable_claims(rule, name, idp_claims))
        for client in sorted(rule.clients - clients):
            errors.append((rule.line_of("clients", client), f"{name} names unknown client {_q(client)}"))
        for idp in sorted((rule.idp or frozenset()) - idps):
            errors.append(
                (
                    rule.line_of("idp", idp),
                    f"{name} names unknown identity provider {_q(idp)} (known: {_known(idps)})",
                )
            )
    if errors:
        raise PolicyError(doc.source, errors)


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value


def _claim_sort_key(value: ClaimValue) -> tuple[int, str]:
    return (0 if isinstance(value, bool) else 1 if isinstance(value, int) else 2, repr(value))


def _rule_json(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rule.id}
    if rule.description is not None:
        out["description"] = rule.description
    if rule.idp is not None:
        out["idp"] = sorted(rule.idp)
    if rule.subjects is not None:
        out["subjects"] = sorted(rule.subjects)
    if rule.groups is not None:
        out["groups"] = sorted(rule.groups)
    if rule.claims is not None:
        out["claims"] = {k: sorted(v, key=_claim_sort_key) for k, v in rule.claims.items()}
    if rule.everyone:
        out["everyone"] = True
    out["clients"] = sorted(rule.clients)
    out["tool"] = rule.tool
    out["scopes"] = sorted(rule.scopes)
    out["default_scopes"] = sorted(rule.default_scopes)
    out["allow_narrowing"] = rule.allow_narrowing
    if rule.max_lifetime is not None:
        out["max_lifetime"] = rule.max_lifetime
    if rule.rate_limit is not None:
        out["rate_limit"] = rule.rate_limit
    if rule.actions:
        out["actions"] = sorted(rule.actions)
    if rule.constraints:
        out["constraints"] = _thaw(rule.constraints)
    return out


def canonical_json(doc: PolicyDocument) -> str:
    """One rendering per meaning: sets sorted, defaults spelled out, rule order kept.

    Rule order is kept because it is meaningful (a decision reports the first
    contributing rule). The output parses back to an equal document, so it
    can be stored and diffed in place of the text an admin wrote.
    """
    body = {"default": "deny", "rules": [_rule_json(rule) for rule in doc.rules]}
    return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
