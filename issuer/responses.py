"""The two response shapes every route uses: JSON data, and an RFC-shaped error."""

from __future__ import annotations

import json
from typing import Any

from flask import Response

from .errors import IssuerError

__all__ = ["error_response", "json_response"]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers={"Cache-Control": "no-store"})


def error_response(err: IssuerError) -> Response:
    status, body, headers = err()
    return Response(json.dumps(body), status=status, headers=headers)
