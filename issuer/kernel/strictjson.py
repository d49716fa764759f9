"""One strict decoder for every JSON text the project reads.

Request bodies, ``authorization_details``, JWS headers and payloads, DPoP
proofs, admin bodies, policy documents and MCP messages all go through
:func:`loads`. Python's ``json`` accepts texts that other parsers read
differently, or that storage cannot keep, and each of those has been an
attack here:

* duplicate members: two parsers disagree about which value counts;
* ``NaN``, ``Infinity`` and numbers that overflow to infinity (``1e400``):
  they pass comparisons such as a time window (``nan < x`` is false) and then
  crash the code that uses them;
* lone surrogates (``"\\ud800"``): not Unicode, so encoding them to UTF-8 for
  the database or a log raises;
* NUL (``"\\u0000"``): PostgreSQL text and jsonb cannot store it, so the audit
  row of the very request that carried it would fail;
* deep nesting: ``json`` recurses, and ``[[[[...]]]]`` ends in RecursionError.

Each refusal is a :class:`StrictJSONError` (a ``ValueError``) whose message is
safe to show: it never quotes the input. Callers map it to their own 4xx.

:func:`check_text` applies the same character rules to a string that did not
come from JSON (a form field, a header, a path segment).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

__all__ = ["MAX_DEPTH", "StrictJSONError", "check_text", "check_value", "loads"]

#: Deepest nesting of arrays and objects accepted. Capabilities, constraints and MCP messages nest a
#: handful of levels; 32 leaves room for real tool arguments and stops recursion games long before
#: Python's own limit.
MAX_DEPTH = 32

#: Characters no stored or logged string may hold: NUL and UTF-16 surrogates (only a pair is a
#: character, and a decoded Python string never holds a valid pair).
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
#: Strings, so that brackets inside them are not counted as nesting.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


class StrictJSONError(ValueError):
    """The text is not JSON this project accepts; the message names the rule, never the input."""


def _duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise StrictJSONError("duplicate object member")
    return out


def _constant(name: str) -> NoReturn:
    raise StrictJSONError("NaN and Infinity are not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf without asking parse_constant
        raise StrictJSONError("number out of range")
    return value


# One decoder for the process: json.loads with hooks would build a decoder per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_duplicates, parse_constant=_constant, parse_float=_finite)


def check_text(value: str, what: str = "text") -> None:
    """Refuse NUL and lone surrogates in ``value``: they cannot be stored, logged or compared safely."""
    if _BAD_CHAR.search(value) is not None:
        raise StrictJSONError(f"{what}: NUL and unpaired surrogates are not allowed")


def check_value(value: Any, what: str = "value") -> None:
    """:func:`check_text` on every string (member names included) of an already-decoded value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            check_text(item, what)
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str):
                    check_text(k, what)
                stack.append(v)
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _depth(text: str, max_depth: int) -> None:
    depth = 0
    for ch in _STRING.sub("", text):
        if ch in "[{":
            depth += 1
            if depth > max_depth:
                raise StrictJSONError(f"nested deeper than {max_depth} levels")
        elif ch in "]}":
            depth -= 1


def loads(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode one JSON text under the rules above; raise :class:`StrictJSONError` otherwise.

    On the verifier's first-seen path (a capability's header and payload), so each check is the
    cheapest form of itself: flag and memchr scans in C first, a Python walk only when one says so.
    """
    if isinstance(data, bytes | bytearray):
        try:
            text = data.decode("utf-8")  # strict: refuses invalid bytes and encoded surrogates alike
        except UnicodeDecodeError:
            raise StrictJSONError("not UTF-8") from None
    elif isinstance(data, str):
        text = data
    else:
        raise StrictJSONError("not a JSON text")
    # An ASCII text (every token and most bodies; isascii is a flag check) holds no surrogate and no
    # byte order mark: only NUL is left to look for, by memchr.
    if text.isascii():
        if "\x00" in text:
            raise StrictJSONError("NUL and unpaired surrogates are not allowed")
    elif text.startswith("\ufeff"):
        raise StrictJSONError("byte order mark before JSON")  # RFC 8259 section 8.1
    elif _BAD_CHAR.search(text) is not None:
        raise StrictJSONError("NUL and unpaired surrogates are not allowed")
    if text.count("[") + text.count("{") > max_depth:  # cannot be deeper than the openings: two C scans
        _depth(text, max_depth)
    begin = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _DECODER.raw_decode(text, begin)
    except StrictJSONError:
        raise
    except (ValueError, RecursionError):  # JSONDecodeError, int digit limit
        raise StrictJSONError("not JSON") from None
    if end != len(text) and text[end:].strip(_WS):
        raise StrictJSONError("not JSON: extra data after the value")
    if "\\u" in text:  # an escape can spell NUL or a lone surrogate; only then walk the value
        check_value(value, "JSON")
    return value


#: JSON's white space (RFC 8259 section 2): str.strip's default would also take other Unicode spaces.
_WS = " \t\n\r"
