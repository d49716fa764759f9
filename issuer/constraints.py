"""Argument constraints carried by capability tokens.

A capability names one tool; its constraint set bounds what a call of that
tool may touch.  The issuer fills and embeds the set at mint time; the
verifier SDK evaluates it against the ``arguments`` of each ``tools/call``.
Both sides import this module, so it uses the standard library only.

Grammar
=======

A constraint set is a JSON object::

    constraint-set = "{" [ key ":" operators *( "," key ":" operators ) ] "}"
    key            = segment *( "." segment )   ; dotted path into nested objects
    segment        = 1*char                     ; never empty
    operators      = "{" operator ":" operand *( "," operator ":" operand )
                         [ "," "case_insensitive" ":" ( true / false ) ] "}"

    operator   operand                               admits a value that
    ---------  ------------------------------------  ----------------------------------
    eq         JSON scalar (string/number/bool/null)  is the same JSON type and equal
    in         non-empty array of JSON scalars        is type-strictly equal to an item
    prefix     absolute POSIX directory ("/srv/")      is that directory or lies under it
    glob       fnmatch pattern ("*", "?", "[...]")     is a string the pattern matches wholly
    min, max   finite number                           is a finite int/float within bounds
    max_length integer >= 0                            is a string/array no longer than that

Example::

    {
      "path":           {"prefix": "/home/${sub}/", "max_length": 4096},
      "filter.project": {"in": ["${claims.projects}", "shared"]},
      "mode":           {"eq": "read"},
      "branch":         {"glob": "feature/*", "case_insensitive": true},
      "limit":          {"min": 1, "max": 100}
    }

``"filter.project"`` means ``arguments["filter"]["project"]``.  Every operator
on a key must hold (AND), and every key must hold.  Arguments that no key
mentions are not bounded.  Unknown operators, wrong operand types and sets
that can never hold (``min`` above ``max``, ``prefix`` with ``min``...) are
schema errors, so a verifier that is older than its issuer fails closed.

Semantics, and why
==================

* A constrained argument that is missing, or whose path crosses a non-object,
  fails.  So does a call whose arguments *also* contain a literal key spelling
  the same path with dots (``{"filter.project": ..., "filter": {...}}``): a
  tool might read either one, so neither is trusted.
* Matching is type-strict, on the JSON types a parser produces: ``true`` is
  not ``1``, ``"1"`` is not ``1``, and ``1`` is not ``1.0`` (a tool may treat an
  int and a float differently; refusing is the fail-closed side).
* ``min``/``max`` refuse booleans, NaN and infinities.
* ``glob`` uses :func:`fnmatch.fnmatchcase` syntax over the *whole* value,
  case-sensitively.  ``*`` and ``?`` match ``/`` too: a glob is a string
  pattern, not a path pattern; use ``prefix`` to confine paths.  A literal
  ``[`` must be written ``[[]``; an unclosed ``[`` is a schema error rather than
  fnmatch's silent literal, so a filled template can never close it.
* ``case_insensitive: true`` (on ``eq``/``in``/``glob`` with string operands)
  folds ASCII letters only.  Unicode case folding maps distinct characters
  (KELVIN SIGN, LONG S) onto ASCII letters; a tool that does not fold the same
  way would then act on a value the policy author never meant to admit.
  ``prefix`` is always case-sensitive.
* ``prefix`` is POSIX and path-aware.  The argument must be an absolute path
  with no NUL or control character, no backslash, no ``//``, and no ``.`` or
  ``..`` segment at all.  Such paths are *refused*, not normalised:
  ``/home/alice/../alice/x`` is refused even though it would normalise to a
  path inside, because the tool, the filesystem and symlinks decide what
  ``..`` means, not this module.  A remaining path is admitted iff it is the
  prefix directory or lies under it at a segment boundary: ``/home/al/`` does
  not admit ``/home/alice``; ``/home/alice/`` admits ``/home/alice`` and
  ``/home/alice/x``.  A trailing ``/`` on the operand is implied.
  Percent-encoding is not decoded (``%2e%2e`` is three literal characters and
  so an ordinary file name): the tool receives the raw string.  The path's
  NFKC form must pass the same tests, so fullwidth dots and solidus (U+FF0E,
  U+FF0F) cannot become ``..`` or ``/`` in a tool that normalises Unicode.
  Case-insensitive filesystems are not modelled.
* Evaluation never raises on hostile argument values; anything odd is a
  violation.

Templates
=========

Operand strings of ``eq``, ``in`` items, ``prefix`` and ``glob`` may contain
``${sub}`` and ``${claims.NAME}`` (NAME: letters, digits and ``_.:/-``, so
URI-named claims work; it must be in the policy's allowed claims);
:func:`fill_templates` replaces them at mint time from the verified subject
token.  Any other ``${`` is a syntax error, so
``${`` cannot appear literally in an operand, and a filled token that still
contains ``${`` is refused by :func:`evaluate`.  Filled values are data, never
syntax; they are always strings (integer claims are written in decimal), must
be non-empty and free of control, format and line-separator characters, and
additionally:

* in ``prefix``: a single safe path segment - no ``/``, ``\\``, ``*?[]``, not
  ``.`` or ``..`` (also after NFKC).  ``/home/${sub}/`` with sub ``alice`` gives
  ``/home/alice/``; sub ``../bob`` refuses the exchange.
* in ``glob``: no ``/`` or ``\\``; metacharacters are bracket-escaped
  (``a*b`` -> ``a[*]b``) so they match literally.  A template inside a bracket
  expression is a schema error.
* a claim whose value is an array may only be the whole of an ``in`` item, and
  then expands into one item per element.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import posixpath
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "MODIFIERS",
    "OPERATORS",
    "ConstraintError",
    "ConstraintViolation",
    "ConstraintViolationError",
    "TemplateError",
    "TemplateSyntaxError",
    "check",
    "evaluate",
    "evaluate_prepared",
    "fill_templates",
    "merge",
    "prepare",
    "validate_constraints",
]

OPERATORS: frozenset[str] = frozenset({"eq", "in", "prefix", "glob", "min", "max", "max_length"})
MODIFIERS: frozenset[str] = frozenset({"case_insensitive"})

_STRING_MATCHERS = frozenset({"eq", "in", "glob"})
_TEMPLATED = frozenset({"eq", "in", "prefix", "glob"})
_ALL_KINDS = frozenset({"null", "bool", "int", "float", "string", "list", "object", "other"})
_SCALAR_KINDS = frozenset({"null", "bool", "int", "float", "string"})

# Cc is exactly C0, DEL and C1; a regex is much faster than per-character category().
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TEMPLATE_RE = re.compile(r"\$\{(?:(sub)|claims\.([A-Za-z0-9_][A-Za-z0-9_.:/\-]*))\}")
# Categories a filled value may not carry: controls, invisible format characters
# (bidi overrides, zero-width joiners), surrogates and line/paragraph separators.
_UNSAFE_FILL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_GLOB_META = "*?[]"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_PLACEHOLDER = "x"
_SHOW_LIMIT = 40


# --------------------------------------------------------------------------- errors


def _ascii(text: str) -> str:
    """Escape to printable ASCII so messages and reasons stay on one line anywhere."""
    out = []
    for ch in text:
        o = ord(ch)
        if 0x20 <= o < 0x7F and ch != "\\":
            out.append(ch)
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return "".join(out)


def _show(value: object, limit: int = _SHOW_LIMIT) -> str:
    """Quote at most ``limit`` characters of a value, so hostile input cannot flood a reason."""
    text = value if type(value) is str else _safe_repr(value)
    cut = text[:limit]
    return "'" + _ascii(cut) + ("...'" if len(text) > limit else "'")


def _safe_repr(value: object) -> str:
    try:
        return repr(value)[: _SHOW_LIMIT + 1]
    except Exception:
        return "<unprintable>"


def _where(key: str, operator: str) -> str:
    if not key and not operator:
        return "constraint set"
    return f"constraint {_show(key)}" + (f" {_ascii(operator[:_SHOW_LIMIT])}" if operator else "")


class ConstraintError(ValueError):
    """A constraint set breaks the schema; the one-line message names the key and operator.

    Raised for bad sets (policy input, an impossible merge), never for bad tool
    arguments: those are violations from :func:`evaluate`, so a verifier cannot
    be made to crash by a caller.
    """

    def __init__(self, message: str, *, key: str = "", operator: str = "") -> None:
        self.key = key
        self.operator = operator
        self.detail = _ascii(message)
        # Not super(): TemplateSyntaxError inherits from two ValueErrors with this signature.
        ValueError.__init__(self, f"{_where(key, operator)}: {self.detail}")


class TemplateError(ValueError):
    """A template could not be filled safely; the exchange must be refused."""

    def __init__(self, message: str, *, key: str = "", operator: str = "") -> None:
        self.key = key
        self.operator = operator
        self.detail = _ascii(message)
        ValueError.__init__(self, f"{_where(key, operator)}: {self.detail}")


class TemplateSyntaxError(ConstraintError, TemplateError):
    """Malformed ``${...}``: both a schema error (found by validation) and a template error."""


@dataclass(frozen=True, slots=True)
class ConstraintViolation:
    """Why one operator refused a call; ``reason`` is short ASCII that quotes at most 40 value chars."""

    argument: str
    operator: str
    reason: str

    def __str__(self) -> str:
        return f"{_ascii(self.argument[:_SHOW_LIMIT])} {self.operator}: {self.reason}"


class ConstraintViolationError(ValueError):
    """The arguments were not admitted; ``violations`` lists every failed operator."""

    def __init__(self, violations: Iterable[ConstraintViolation]) -> None:
        self.violations: tuple[ConstraintViolation, ...] = tuple(violations)
        shown = "; ".join(str(v) for v in self.violations[:3])
        more = f" (+{len(self.violations) - 3} more)" if len(self.violations) > 3 else ""
        super().__init__(f"arguments not admitted: {shown}{more}")


# --------------------------------------------------------------------------- value kinds


def _kind(value: object) -> str:
    """The JSON type of a value; exact types so that bool is never an int and str subclasses can't lie."""
    t = type(value)
    if value is None:
        return "null"
    if t is bool:
        return "bool"
    if t is int:
        return "int"
    if t is float:
        return "float"
    if t is str:
        return "string"
    if t is list or t is tuple:
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return "other"


def _fold(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def _scalar_equal(a: object, b: object, fold: bool) -> bool:
    kind = _kind(a)
    if kind != _kind(b) or kind not in _SCALAR_KINDS:
        return False
    if fold and kind == "string":
        return _fold(a) == _fold(b)  # type: ignore[arg-type]
    return a == b


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True)
class _Template:
    start: int
    end: int
    claim: str | None  # None means ${sub}


def _scan_templates(text: str, key: str, operator: str) -> list[_Template]:
    found = []
    i = 0
    while (j := text.find("${", i)) >= 0:
        m = _TEMPLATE_RE.match(text, j)
        if m is None:
            raise TemplateSyntaxError(
                f"malformed template {_show(text[j : j + 24])}: use ${{sub}} or ${{claims.NAME}}",
                key=key,
                operator=operator,
            )
        found.append(_Template(m.start(), m.end(), m.group(2)))
        i = m.end()
    return found


def _templates(text: str, key: str, operator: str, allow: bool) -> list[_Template]:
    if allow:
        return _scan_templates(text, key, operator)
    if "${" in text:
        raise ConstraintError("contains '${' (an unfilled template)", key=key, operator=operator)
    return []


def _pieces(text: str, found: Sequence[_Template]) -> list[str]:
    """The literal text between templates (always len(found) + 1 pieces)."""
    out = []
    pos = 0
    for t in found:
        out.append(text[pos : t.start])
        pos = t.end
    out.append(text[pos:])
    return out


# --------------------------------------------------------------------------- paths and globs


def _path_problem(path: str) -> str | None:
    """Why a path is refused outright; these are rejected, never normalised (see module doc)."""
    if not path.startswith("/"):
        return "not an absolute path"
    if _CONTROL_RE.search(path):
        return "contains a NUL or control character"
    if "\\" in path:
        return "contains a backslash"
    if "//" in path:
        return "contains '//'"
    if any(seg in (".", "..") for seg in path.split("/")):
        return "contains a '.' or '..' segment"
    bare = path[:-1] if len(path) > 1 and path.endswith("/") else path
    if posixpath.normpath(path) != bare:
        return "is not in normal form"
    return None


def _under(path: str, prefix: str) -> bool:
    """Segment-boundary containment; ``prefix`` always ends in '/'."""
    return (path if path.endswith("/") else path + "/").startswith(prefix)


def _check_prefix(prefix: str, value: object) -> str | None:
    if type(value) is not str:
        return f"wrong type: expected string, got {_kind(value)}"
    problem = _path_problem(value)
    if problem is not None:
        return problem
    if not _under(value, prefix):
        return f"not under {_show(prefix)}"
    compat = unicodedata.normalize("NFKC", value)
    if compat != value:
        problem = _path_problem(compat)
        if problem is not None:
            return f"NFKC form {problem}"
        if not _under(compat, unicodedata.normalize("NFKC", prefix)):
            return f"NFKC form not under {_show(prefix)}"
    return None


def _unclosed_bracket(pattern: str) -> bool:
    """Mirror fnmatch.translate's bracket scan: is some '[' left without its ']'?"""
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                return True
            i = j + 1
    return False


@functools.lru_cache(maxsize=512)
def _glob_regex(pattern: str, fold: bool) -> re.Pattern[str]:
    # re.ASCII with IGNORECASE folds A-Z/a-z only, matching _fold().
    return re.compile(fnmatch.translate(pattern), (re.IGNORECASE | re.ASCII) if fold else 0)


def _escape_glob(text: str) -> str:
    return "".join(f"[{ch}]" if ch in _GLOB_META else ch for ch in text)


# --------------------------------------------------------------------------- validation


def _scalar_operand(key: str, operator: str, value: object, allow: bool) -> object:
    kind = _kind(value)
    if kind not in _SCALAR_KINDS:
        raise ConstraintError(f"operand must be a JSON scalar, not {kind}", key=key, operator=operator)
    if kind == "float" and not math.isfinite(value):  # type: ignore[arg-type]
        raise ConstraintError("operand must be a finite number", key=key, operator=operator)
    if kind == "string":
        _templates(value, key, operator, allow)  # type: ignore[arg-type]
    return value


def _v_eq(key: str, value: object, allow: bool) -> object:
    return _scalar_operand(key, "eq", value, allow)


def _v_in(key: str, value: object, allow: bool) -> object:
    if _kind(value) != "list":
        raise ConstraintError("operand must be a non-empty array of scalars", key=key, operator="in")
    items: list[object] = []
    for item in value:  # type: ignore[attr-defined]
        _scalar_operand(key, "in", item, allow)
        if not any(_scalar_equal(item, seen, fold=False) for seen in items):
            items.append(item)
    if not items:
        raise ConstraintError("operand must be a non-empty array of scalars", key=key, operator="in")
    return items


def _v_prefix(key: str, value: object, allow: bool) -> object:
    if type(value) is not str:
        raise ConstraintError("operand must be a string", key=key, operator="prefix")
    found = _templates(value, key, "prefix", allow)
    shape = _PLACEHOLDER.join(_pieces(value, found))
    problem = _path_problem(shape)
    if problem is not None:
        raise ConstraintError(f"operand {problem}", key=key, operator="prefix")
    return value if value.endswith("/") else value + "/"


def _v_glob(key: str, value: object, allow: bool) -> object:
    if type(value) is not str:
        raise ConstraintError("operand must be a string", key=key, operator="glob")
    found = _templates(value, key, "glob", allow)
    pieces = _pieces(value, found)
    if any(_unclosed_bracket(p) for p in pieces):
        what = "a template inside a bracket expression" if found else "an unclosed '['"
        raise ConstraintError(f"operand has {what} (write '[[]' for a literal '[')", key=key, operator="glob")
    try:
        _glob_regex(_PLACEHOLDER.join(pieces), False)
    except (re.error, RecursionError, OverflowError, MemoryError) as exc:
        raise ConstraintError("operand is not a usable pattern", key=key, operator="glob") from exc
    return value


def _number_operand(key: str, operator: str, value: object) -> object:
    kind = _kind(value)
    if kind not in ("int", "float") or (kind == "float" and not math.isfinite(value)):  # type: ignore[arg-type]
        raise ConstraintError("operand must be a finite number", key=key, operator=operator)
    return value


def _v_min(key: str, value: object, allow: bool) -> object:
    return _number_operand(key, "min", value)


def _v_max(key: str, value: object, allow: bool) -> object:
    return _number_operand(key, "max", value)


def _v_max_length(key: str, value: object, allow: bool) -> object:
    if type(value) is not int or value < 0:
        raise ConstraintError("operand must be a non-negative integer", key=key, operator="max_length")
    return value


_VALIDATORS: dict[str, Callable[[str, object, bool], object]] = {
    "eq": _v_eq,
    "in": _v_in,
    "prefix": _v_prefix,
    "glob": _v_glob,
    "min": _v_min,
    "max": _v_max,
    "max_length": _v_max_length,
}


def _admissible_kinds(operator: str, operand: object) -> frozenset[str]:
    if operator == "eq":
        return frozenset({_kind(operand)})
    if operator == "in":
        return frozenset(_kind(item) for item in operand)  # type: ignore[attr-defined]
    if operator in ("prefix", "glob"):
        return frozenset({"string"})
    if operator in ("min", "max"):
        return frozenset({"int", "float"})
    return frozenset({"string", "list"})  # max_length


def _validate_key(key: object) -> str:
    if type(key) is not str:
        raise ConstraintError(f"argument name must be a string, not {_kind(key)}")
    if any(seg == "" for seg in key.split(".")):
        raise ConstraintError("argument name has an empty segment", key=key)
    return key


def _validate_ops(key: str, ops: object, allow: bool) -> dict[str, object]:
    if not isinstance(ops, Mapping):
        raise ConstraintError(f"operators must be a JSON object, not {_kind(ops)}", key=key)
    out: dict[str, object] = {}
    fold = False
    for op, operand in ops.items():
        if type(op) is not str:
            raise ConstraintError(f"operator name must be a string, not {_kind(op)}", key=key)
        if op == "case_insensitive":
            if type(operand) is not bool:
                raise ConstraintError("modifier must be true or false", key=key, operator=op)
            fold = operand
            continue
        validator = _VALIDATORS.get(op)
        if validator is None:
            raise ConstraintError("unknown operator", key=key, operator=op)
        out[op] = validator(key, operand, allow)
    if not out:
        raise ConstraintError("no operators", key=key)
    if fold:
        if not _STRING_MATCHERS & out.keys():
            raise ConstraintError("needs eq, in or glob", key=key, operator="case_insensitive")
        if "eq" in out and _kind(out["eq"]) != "string":
            raise ConstraintError("eq operand must be a string", key=key, operator="case_insensitive")
        if "in" in out and any(_kind(i) != "string" for i in out["in"]):  # type: ignore[attr-defined]
            raise ConstraintError("in items must be strings", key=key, operator="case_insensitive")
        out["case_insensitive"] = True
    if "min" in out and "max" in out and out["min"] > out["max"]:  # type: ignore[operator]
        raise ConstraintError("min is above max; nothing would be admitted", key=key, operator="min")
    kinds = _ALL_KINDS
    for op, operand in out.items():
        if op in OPERATORS:
            kinds = kinds & _admissible_kinds(op, operand)
    if not kinds:
        raise ConstraintError(
            f"operators {', '.join(sorted(o for o in out if o in OPERATORS))} can never all hold", key=key
        )
    return {op: out[op] for op in sorted(out)}


def _validate(obj: object, allow: bool) -> dict[str, dict[str, object]]:
    if not isinstance(obj, Mapping):
        raise ConstraintError(f"must be a JSON object, not {_kind(obj)}")
    checked: dict[str, dict[str, object]] = {}
    for key, ops in obj.items():
        name = _validate_key(key)
        checked[name] = _validate_ops(name, ops, allow)
    return {key: checked[key] for key in sorted(checked)}


def validate_constraints(obj: object) -> dict[str, dict[str, object]]:
    """Schema-check a constraint set as authored (templates allowed) and return a normalised copy.

    Normalising (sorted keys, ``prefix`` with its trailing '/', deduplicated
    ``in``, no ``case_insensitive: false``) makes equal sets compare equal, so
    merges and embedded tokens are stable.  Raises :class:`ConstraintError`
    (:class:`TemplateSyntaxError` for malformed ``${...}``).
    """
    return _validate(obj, allow=True)


# --------------------------------------------------------------------------- evaluation


def _lookup(arguments: object, key: str) -> tuple[bool, object, str]:
    """Walk a dotted key; refuse when a literal dotted key makes the path ambiguous."""
    segments = key.split(".")
    current = arguments
    for i, seg in enumerate(segments):
        if not isinstance(current, Mapping):
            return (
                False,
                None,
                "missing: arguments are not an object" if i == 0 else "missing: parent is not an object",
            )
        for j in range(i + 2, len(segments) + 1):
            literal = ".".join(segments[i:j])
            if literal in current:
                return False, None, f"ambiguous: literal key {_show(literal)} is also present"
        if seg not in current:
            return False, None, "missing"
        current = current[seg]
    return True, current, ""


def _check_eq(operand: object, value: object, fold: bool) -> str | None:
    if _kind(value) != _kind(operand):
        return f"wrong type: expected {_kind(operand)}, got {_kind(value)}"
    return None if _scalar_equal(operand, value, fold) else "not equal to the required value"


def _check_in(operand: object, value: object, fold: bool) -> str | None:
    items: list[object] = operand  # type: ignore[assignment]
    if _kind(value) not in {_kind(i) for i in items}:
        return f"wrong type: got {_kind(value)}"
    if any(_scalar_equal(item, value, fold) for item in items):
        return None
    return "not one of the allowed values"


def _check_glob(operand: object, value: object, fold: bool) -> str | None:
    if type(value) is not str:
        return f"wrong type: expected string, got {_kind(value)}"
    if _glob_regex(str(operand), fold).match(value) is None:
        return "does not match the pattern"
    return None


def _finite_number(value: object) -> str | None:
    kind = _kind(value)
    if kind not in ("int", "float"):
        return f"wrong type: expected number, got {kind}"
    if kind == "float" and not math.isfinite(value):  # type: ignore[arg-type]
        return "not a finite number"
    return None


def _check_min(operand: object, value: object, fold: bool) -> str | None:
    problem = _finite_number(value)
    if problem is None and value < operand:  # type: ignore[operator]
        problem = f"below the minimum {_ascii(_safe_repr(operand)[:_SHOW_LIMIT])}"
    return problem


def _check_max(operand: object, value: object, fold: bool) -> str | None:
    problem = _finite_number(value)
    if problem is None and value > operand:  # type: ignore[operator]
        problem = f"above the maximum {_ascii(_safe_repr(operand)[:_SHOW_LIMIT])}"
    return problem


def _check_max_length(operand: object, value: object, fold: bool) -> str | None:
    if _kind(value) not in ("string", "list"):
        return f"wrong type: expected string or array, got {_kind(value)}"
    if len(value) > operand:  # type: ignore[arg-type, operator]
        return f"longer than {operand}"
    return None


def _check_prefix_op(operand: object, value: object, fold: bool) -> str | None:
    return _check_prefix(operand, value)  # type: ignore[arg-type]


_CHECKS: dict[str, Callable[[object, object, bool], str | None]] = {
    "eq": _check_eq,
    "in": _check_in,
    "prefix": _check_prefix_op,
    "glob": _check_glob,
    "min": _check_min,
    "max": _check_max,
    "max_length": _check_max_length,
}


def _evaluate_key(key: str, ops: Mapping[str, object], arguments: object) -> list[ConstraintViolation]:
    operators = [op for op in ops if op in OPERATORS]
    found, value, why = _lookup(arguments, key)
    if not found:
        return [ConstraintViolation(key, op, why) for op in operators]
    fold = ops.get("case_insensitive") is True
    out = []
    for op in operators:
        reason = _CHECKS[op](ops[op], value, fold)
        if reason is not None:
            out.append(ConstraintViolation(key, op, reason))
    return out


def evaluate(
    constraints: Mapping[str, Mapping[str, object]], arguments: Mapping[str, object]
) -> list[ConstraintViolation]:
    """Every violation of ``constraints`` by ``arguments``; ``[]`` means admitted.

    The set is re-validated first (with templates forbidden) because the
    verifier reads it out of a token: a set this module does not fully
    understand - newer operator, unfilled ``${sub}`` - is a violation, never
    silently skipped.  Nothing here raises on hostile input.
    """
    return evaluate_prepared(prepare(constraints), arguments)


Prepared = dict[str, dict[str, object]] | list[ConstraintViolation]


def prepare(constraints: object) -> Prepared:
    """The validation half of :func:`evaluate`, done once per constraint set.

    Returns the checked set, or the violations that any arguments will meet
    (the set itself is invalid). A verifier that sees the same capability
    again keeps this and calls :func:`evaluate_prepared` per call.
    """
    try:
        return _validate(constraints, allow=False)
    except ConstraintError as exc:
        reason = f"invalid constraint set: {exc.detail}"
        return [
            ConstraintViolation(
                _ascii(exc.key[:_SHOW_LIMIT]), _ascii(exc.operator[:_SHOW_LIMIT]), reason[:120]
            )
        ]
    except Exception:
        return [ConstraintViolation("", "", "invalid constraint set")]


def evaluate_prepared(checked: Prepared, arguments: Mapping[str, object]) -> list[ConstraintViolation]:
    """Every violation of a :func:`prepare`d set by ``arguments``; ``[]`` means admitted."""
    if isinstance(checked, list):
        return list(checked)
    violations: list[ConstraintViolation] = []
    for key, ops in checked.items():
        try:
            violations.extend(_evaluate_key(key, ops, arguments))
        except Exception:
            violations.extend(
                ConstraintViolation(key, op, "could not be evaluated") for op in ops if op in OPERATORS
            )
    return violations


def check(constraints: Mapping[str, Mapping[str, object]], arguments: Mapping[str, object]) -> None:
    """Raise :class:`ConstraintViolationError` unless ``arguments`` are admitted."""
    violations = evaluate(constraints, arguments)
    if violations:
        raise ConstraintViolationError(violations)


# --------------------------------------------------------------------------- merge


def _merge_ops(key: str, left: dict[str, object], right: Mapping[str, object]) -> dict[str, object]:
    fold_l = left.get("case_insensitive") is True
    fold_r = right.get("case_insensitive") is True
    has_l = bool(_STRING_MATCHERS & left.keys())
    has_r = bool(_STRING_MATCHERS & right.keys())
    if has_l and has_r and fold_l != fold_r:
        # The modifier applies to every string matcher on the key; keeping either value
        # would loosen or tighten the other side's matchers behind the author's back.
        raise ConstraintError("conflicting case_insensitive", key=key, operator="case_insensitive")
    fold = fold_l or fold_r
    out = dict(left)
    for op, theirs in right.items():
        if op == "case_insensitive":
            continue
        if op not in out:
            out[op] = theirs
            continue
        ours = out[op]
        if op == "eq":
            if not _scalar_equal(ours, theirs, fold):
                raise ConstraintError("conflicting eq values", key=key, operator=op)
        elif op == "in":
            common = [i for i in ours if any(_scalar_equal(i, j, fold) for j in theirs)]  # type: ignore[attr-defined]
            if not common:
                raise ConstraintError("conflicting in lists: no common value", key=key, operator=op)
            out[op] = common
        elif op == "prefix":
            # Both are normalised directory prefixes ending in '/': the deeper one admits
            # only what both admit, so a request may narrow /home/alice/ to /home/alice/docs/.
            if _under(str(theirs), str(ours)):
                out[op] = theirs
            elif not _under(str(ours), str(theirs)):
                raise ConstraintError("conflicting prefix values: neither lies under the other", key=key, operator=op)
        elif op == "glob":
            if ours != theirs:
                raise ConstraintError(f"conflicting {op} values", key=key, operator=op)
        elif op == "min":
            out[op] = ours if ours >= theirs else theirs  # type: ignore[operator]
        else:  # max, max_length
            out[op] = ours if ours <= theirs else theirs  # type: ignore[operator]
    if fold:
        out["case_insensitive"] = True
    return out


def merge(
    a: Mapping[str, Mapping[str, object]], b: Mapping[str, Mapping[str, object]]
) -> dict[str, dict[str, object]]:
    """A set that admits only what both ``a`` and ``b`` admit (e.g. policy AND request).

    Tightens where that is decidable: max of ``min``, min of ``max`` and
    ``max_length``, intersection of ``in``, the deeper of two nested ``prefix``
    directories.  Differing ``eq``/``glob``, disjoint ``prefix``
    operands, an empty ``in`` intersection or an empty range raise
    :class:`ConstraintError` rather than producing a set that admits nothing.
    Operands are compared literally, so merge after filling templates.
    """
    left = validate_constraints(a)
    right = validate_constraints(b)
    for key, ops in right.items():
        left[key] = _merge_ops(key, left[key], ops) if key in left else dict(ops)
    return validate_constraints(left)


# --------------------------------------------------------------------------- filling


def _as_text(value: object, name: str, key: str, operator: str) -> str:
    kind = _kind(value)
    if kind == "string":
        return value  # type: ignore[return-value]
    if kind == "int":
        try:
            return str(value)
        except ValueError as exc:  # more digits than int->str allows
            raise TemplateError(f"claim {name} is too large", key=key, operator=operator) from exc
    raise TemplateError(f"claim {name} is a {kind}, not a string", key=key, operator=operator)


def _check_fill(text: str, name: str, key: str, operator: str) -> str:
    """Refuse values that would be read as syntax, or that a tool might read differently."""

    def refuse(why: str) -> TemplateError:
        return TemplateError(f"value of {name} {why}", key=key, operator=operator)

    if not text:
        raise refuse("is empty")
    if any(unicodedata.category(ch) in _UNSAFE_FILL_CATEGORIES for ch in text):
        raise refuse("contains a control, format or line-separator character")
    if "${" in text:
        raise refuse("contains '${'")
    if operator in ("prefix", "glob"):
        forbidden = "/\\" + (_GLOB_META if operator == "prefix" else "")
        for form in (text, unicodedata.normalize("NFKC", text)):
            if any(ch in forbidden for ch in form):
                what = "'/', '\\' or a glob metacharacter" if operator == "prefix" else "'/' or '\\'"
                raise refuse(f"contains {what}")
            if operator == "prefix" and form in (".", ".."):
                raise refuse("is '.' or '..'")
    return _escape_glob(text) if operator == "glob" else text


class _Filler:
    def __init__(self, sub: object, claims: Mapping[str, object], allowed: Collection[str]) -> None:
        self.sub = sub
        self.claims = claims
        self.allowed = allowed

    def raw(self, t: _Template, key: str, operator: str) -> tuple[str, object]:
        if t.claim is None:
            return "sub", self.sub
        name = f"claims.{t.claim}"
        if t.claim not in self.allowed:
            raise TemplateError(f"{name} is not an allowed claim", key=key, operator=operator)
        if t.claim not in self.claims:
            raise TemplateError(f"{name} is missing from the subject token", key=key, operator=operator)
        return name, self.claims[t.claim]

    def string(self, text: str, key: str, operator: str) -> str:
        found = _scan_templates(text, key, operator)
        pieces = _pieces(text, found)
        out = [pieces[0]]
        for t, after in zip(found, pieces[1:], strict=True):
            name, value = self.raw(t, key, operator)
            if _kind(value) == "list":
                raise TemplateError(
                    f"{name} is an array; arrays may only be a whole 'in' item", key=key, operator=operator
                )
            out.append(_check_fill(_as_text(value, name, key, operator), name, key, operator))
            out.append(after)
        return "".join(out)

    def items(self, items: Iterable[object], key: str) -> list[object]:
        out: list[object] = []
        for item in items:
            if type(item) is not str:
                out.append(item)
                continue
            found = _scan_templates(item, key, "in")
            if len(found) == 1 and found[0].start == 0 and found[0].end == len(item):
                name, value = self.raw(found[0], key, "in")
                if _kind(value) == "list":
                    for element in value:  # type: ignore[attr-defined]
                        if _kind(element) not in _SCALAR_KINDS:
                            raise TemplateError(f"{name} has a non-scalar element", key=key, operator="in")
                        out.append(_check_fill(_as_text(element, name, key, "in"), name, key, "in"))
                    continue
            out.append(self.string(item, key, "in"))
        if not out:
            raise TemplateError("filled list is empty; nothing would be admitted", key=key, operator="in")
        return out


def fill_templates(
    constraints: Mapping[str, Mapping[str, object]],
    *,
    sub: str,
    claims: Mapping[str, object],
    allowed_claims: Collection[str],
) -> dict[str, dict[str, object]]:
    """Fill ``${sub}`` / ``${claims.NAME}`` from a verified subject token, as data.

    ``allowed_claims`` is the policy's explicit list: a template may only read
    claims the policy author chose, so a policy cannot be pointed at a claim an
    identity provider lets users set.  Raises :class:`TemplateError` when a
    value is unsafe, missing or not allowed; the result is re-validated with
    templates forbidden, so nothing filled can smuggle in new syntax.
    """
    if isinstance(allowed_claims, str):
        raise TypeError("allowed_claims must be a collection of claim names, not a string")
    checked = validate_constraints(constraints)
    if type(sub) is not str:
        raise TemplateError("sub must be a string")
    filler = _Filler(sub, claims, allowed_claims)
    filled: dict[str, dict[str, object]] = {}
    for key, ops in checked.items():
        new: dict[str, object] = {}
        for op, operand in ops.items():
            if op == "in":
                new[op] = filler.items(operand, key)  # type: ignore[arg-type]
            elif op in _TEMPLATED and type(operand) is str:
                new[op] = filler.string(operand, key, op)
            else:
                new[op] = operand
        filled[key] = new
    try:
        return _validate(filled, allow=False)
    except ConstraintError as exc:
        raise TemplateError(
            f"filled constraint is invalid: {exc.detail}", key=exc.key, operator=exc.operator
        ) from exc
