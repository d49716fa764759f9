"""The character rules for every part of a request that is not JSON: path, query and form fields.

One function for every surface (the token endpoints, the admin API, the
console), each calling it once, before anything reads the request: PostgreSQL
cannot hold a NUL, a lone surrogate cannot be encoded at all, and werkzeug
quietly reads bytes that are not UTF-8 as U+FFFD, so the request would go on as
another value than the one sent. JSON texts get the same rules from
:func:`issuer.kernel.strictjson.loads`.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from flask import request

from .kernel.strictjson import StrictJSONError, check_text

__all__ = ["bad_characters"]

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
