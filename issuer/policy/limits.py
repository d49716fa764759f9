"""The bounds a policy document's YAML must keep, applied while it is composed.

A policy arrives from an admin (the CLI, the admin API, the console) but is
still untrusted text: a leaked admin key, or a pasted document, must not turn
into a crash or a stored value that breaks everything reading it later. So
the composer itself refuses, before a single value is built:

* a string holding NUL or a lone surrogate (YAML's ``"\\0"`` and ``"\\ud800"``
  escapes make both from plain ASCII text): the same rule as
  :func:`issuer.kernel.strictjson.check_value`, applied to every scalar,
  mapping keys included, so to every string the parsed policy can contain;
* nesting deeper than :data:`~issuer.kernel.strictjson.MAX_DEPTH`, the JSON
  limit (PyYAML's composer recurses, so ``[[[[...`` would end in
  ``RecursionError``);
* an integer longer than :data:`MAX_INTEGER_DIGITS` (Python refuses to convert
  one past 4300 digits with a ``ValueError``, which was a 500).

Aliases are the remaining way for a small text to become a huge value (a
"billion laughs": ten references to ten references...). PyYAML shares aliased
nodes by reference, so composing is cheap, but anything that walks or dumps
the result expands them. :func:`expansion_budget` bounds that walk in
proportion to the document's own size; the parser stops at it.
"""

from __future__ import annotations

from typing import Final

import yaml

from issuer.kernel.strictjson import MAX_DEPTH, StrictJSONError, check_text

__all__ = ["MAX_DEPTH", "MAX_INTEGER_DIGITS", "BoundedLoader", "LimitError", "expansion_budget"]

MAX_INTEGER_DIGITS: Final = 40
#: Aliases may expand a document to this many times its own values...
ALIAS_FACTOR: Final = 10
#: ...or to this many values, whichever is more (a list of clients shared by a hundred rules is fine)...
ALIAS_FLOOR: Final = 100_000
#: ...but never past this many, however large the document.
MAX_VALUES: Final = 1_000_000

_INT = "tag:yaml.org,2002:int"


class LimitError(Exception):
    """A bound broken while composing, on ``line`` (1-based); the message names the bound, never the value."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose composer refuses what the module docstring lists, and counts its nodes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self.nodes = 0  #: nodes composed, alias references included: the size of the text as values

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        line = int(self.peek_event().start_mark.line) + 1  # type: ignore[no-untyped-call]
        if self._depth >= MAX_DEPTH:
            raise LimitError(line, f"values are nested more than {MAX_DEPTH} levels deep")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self.nodes += 1
        if isinstance(node, yaml.ScalarNode):
            try:
                check_text(node.value, "a string")
            except StrictJSONError as e:
                raise LimitError(line, str(e)) from None
            if node.tag == _INT and len(node.value) > MAX_INTEGER_DIGITS:
                raise LimitError(line, f"an integer has more than {MAX_INTEGER_DIGITS} digits")
        return node


def expansion_budget(composed: int) -> int:
    """How many values the walk of a document composed of ``composed`` nodes may visit, aliases expanded."""
    return min(MAX_VALUES, max(ALIAS_FLOOR, ALIAS_FACTOR * composed))
