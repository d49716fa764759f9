"""What the admin API and the console read from a request, under the project's character and JSON rules.

Both surfaces hand what they read to :class:`~issuer.admin.service.AdminService`,
which stores it or filters on it in the database. PostgreSQL cannot hold a NUL
(the write fails and the caller saw a 503 "database unavailable" for a bad
input), a lone surrogate cannot be encoded at all (a 500), and Python's ``json``
recurses into deep nesting (a 500) and reads duplicate members and NaN that
other parsers read otherwise. So every query parameter, path and form field is
checked in one place per surface, a blueprint ``before_request`` calling
:func:`issuer.request_rules.bad_characters` (the token endpoints use it too), and every JSON text is decoded by
:func:`issuer.kernel.strictjson.loads`, before anything reaches storage.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from ..errors import InvalidRequest
from ..kernel.strictjson import StrictJSONError
from ..kernel.strictjson import loads as strict_loads

__all__ = ["json_body", "json_text"]

_M = TypeVar("_M", bound=BaseModel)


def json_text(raw: str | bytes, what: str) -> Any:
    """One JSON text (a body, or JSON typed into a form field); the rule it breaks is a :class:`StrictJSONError`."""
    try:
        return strict_loads(raw)
    except StrictJSONError as e:
        raise StrictJSONError(f"{what}: {e}") from None


def json_body(model: type[_M]) -> _M:
    """The request's JSON object body as ``model``, or :class:`InvalidRequest` (400) naming what is wrong."""
    if request.mimetype != "application/json":
        raise InvalidRequest("Content-Type must be application/json")
    try:
        data = json_text(request.get_data() or b"null", "the body")
    except StrictJSONError as e:
        raise InvalidRequest(str(e)) from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidRequest(f"{where}: {first['msg']}") from None
