"""Reading HTML form fields into the shapes the service layer takes.

Only shape is handled here (text to lists, checkboxes to booleans, JSON text
to objects by the strict JSON decoder); whether a value is acceptable is the
service layer's to say, so the console shows the CLI's and the API's messages
word for word.
"""

from __future__ import annotations

import re
from typing import Any

from flask import request

from ..admin.inputs import json_text
from ..errors import ConfigurationError
from ..kernel.strictjson import StrictJSONError

__all__ = ["arg", "checkbox", "echo", "is_get", "json_object", "lines", "lines_of", "many", "optional", "text"]

#: Fields never written back into a page, even the one that refused them.
_NEVER_ECHOED = frozenset({"csrf_token", "admin_key", "secret"})

_SPLIT = re.compile(r"[\s,]+")


def text(name: str, limit: int = 2000) -> str:
    """A field as typed, trimmed; over-long input is refused rather than cut."""
    value = request.form.get(name, "").strip()
    if len(value) > limit:
        raise ConfigurationError(f"{name}: at most {limit} characters")
    return value


def optional(name: str, limit: int = 2000) -> str | None:
    return text(name, limit) or None


def lines(name: str, limit: int = 10_000) -> list[str]:
    """A list typed one per line or separated by commas or spaces."""
    return lines_of(text(name, limit))


def lines_of(value: str) -> list[str]:
    return [x for x in _SPLIT.split(value.strip()) if x]


def echo() -> dict[str, str]:
    """What was typed, to fill the form again next to its error message."""
    return {k: v[:20_000] for k, v in request.form.items() if k not in _NEVER_ECHOED}


def is_get() -> bool:
    return request.method == "GET"


def arg(name: str) -> str | None:
    value = request.args.get(name)
    return value[:400] if value is not None else None


def many(name: str) -> list[str]:
    """Every value of a repeated field (a group of checkboxes)."""
    return [v[:200] for v in request.form.getlist(name)][:500]


def checkbox(name: str) -> bool:
    return request.form.get(name) == "on"


def json_object(name: str, limit: int = 100_000) -> dict[str, Any] | None:
    raw = text(name, limit)
    if not raw:
        return None
    try:
        value = json_text(raw, name)
    except StrictJSONError as e:
        raise ConfigurationError(str(e)) from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{name}: must be a JSON object")
    return value
