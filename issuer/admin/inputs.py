"""What the admin API and the console read from a request, under the project's character and JSON rules.

Both surfaces hand what they read to :class:`~issuer.admin.service.AdminService`,
which stores it or filters on it in the database. PostgreSQL cannot hold a NUL
(the write fails and the caller saw a 503 "database unavailable" for a bad
input), a lone surrogate cannot be encoded at all (a 500), and Python's ``json``
recurses into deep nesting (a 500) and reads duplicate members and NaN that
other parsers read otherwise. So every query parameter, path and form field is
checked in one place per surface, a blueprint ``before_request`` calling
:func:`bad_characters`, and every JSON text is decoded by
:func:`issuer.kernel.strictjson.loads`, before anything reaches storage.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

from flask import request
from pydantic import BaseModel, ValidationError

from ..errors import InvalidRequest
from ..kernel.strictjson import StrictJSONError, check_text
from ..kernel.strictjson import loads as strict_loads

__all__ = ["bad_characters", "json_body", "json_text"]

_M = TypeVar("_M", bound=BaseModel)
_FORMS = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def _utf8(raw: bytes, what: str) -> None:
    """Werkzeug decodes URLs and forms with ``errors="replace"``, so bytes that are not UTF-8 (a surrogate
    encoded as ``%ED%A0%80`` among them) would quietly become U+FFFD; they are refused instead."""
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise StrictJSONError(f"{what}: not UTF-8") from None


def _raw_path() -> bytes:
    """The path as sent: servers may already have replaced what is not UTF-8 in ``PATH_INFO`` (werkzeug's does).

    WSGI strings carry bytes as latin-1; ``RAW_URI`` (gunicorn, werkzeug) and ``REQUEST_URI`` are the request
    line's target, still percent-encoded.
    """
    env = request.environ
    raw = env.get("RAW_URI") or env.get("REQUEST_URI")
    if isinstance(raw, str):
        return raw.partition("?")[0].encode("latin-1", "replace")
    return str(env.get("PATH_INFO", "")).encode("latin-1", "replace")


def bad_characters() -> str | None:
    """The rule the first bad part of this request breaks (path, query, form), or ``None``.

    The message names where, never what: the value itself may be anything.
    """
    try:
        _utf8(_raw_path(), "the path")
        _utf8(request.query_string, "the query")
        if request.mimetype == "application/x-www-form-urlencoded":
            _utf8(request.get_data(), "the form")  # cached: the form is parsed from the same bytes below
        check_text(request.path, "the path")
        for name, value in request.args.items(multi=True):
            check_text(name, "a query parameter name")
            check_text(value, f"query parameter {name}")
        if request.mimetype in _FORMS:
            for name, value in request.form.items(multi=True):
                check_text(name, "a form field name")
                check_text(value, f"form field {name}")
    except StrictJSONError as e:
        return str(e)
    return None


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
