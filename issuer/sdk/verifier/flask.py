"""Flask integration: protect a view with a capability.

::

    from flask import Flask, g, request
    from issuer.sdk.verifier import CapabilityVerifier
    from issuer.sdk.verifier.flask import CapabilityProtect

    verifier = CapabilityVerifier(issuer="https://issuer.example", audience="https://tickets.example")
    protect = CapabilityProtect(verifier)
    app = Flask(__name__)

    @app.get("/tickets")
    @protect("tickets:read")
    def list_tickets():
        return {"user": g.capability.sub}

    @app.get("/projects/<project>/tickets")
    @protect("tickets:read", action="read", arguments=lambda: {"project": request.view_args["project"]})
    def project_tickets(project):
        ...

The token is read from the ``Authorization: Bearer`` header only, never the
query string or the body.  The decorator runs the full
:meth:`CapabilityVerifier.check`: a capability that constrains its arguments
(or is bound to one call) is refused unless ``arguments`` - a callable run in
the request context - supplies the arguments to check.  On success the
capability is ``flask.g.capability``; on refusal the answer is the RFC 6750
JSON error with its status (401, 403 or 503) and ``WWW-Authenticate`` header.
A :class:`CapabilityError` raised by the view itself (for instance from a
further ``verifier.authorize(g.capability, ...)``) is answered the same way.

Views are synchronous here: the verifier may fetch keys over the network.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from flask import Response, g, request

from ._verifier import CapabilityVerifier
from .errors import CapabilityError

__all__ = ["CapabilityProtect", "error_response", "require_capability"]

log = logging.getLogger("issuer.sdk.verifier")

P = ParamSpec("P")
R = TypeVar("R")
ArgumentsFn = Callable[[], Mapping[str, Any]]


def error_response(error: CapabilityError) -> Response:
    """The RFC 6750 answer to a refusal: JSON body, status, ``WWW-Authenticate`` and ``Cache-Control``."""
    return Response(json.dumps(error.to_dict()), status=error.status_code, mimetype="application/json",
                    headers=error.headers())


class CapabilityProtect:
    """Holds the verifier; calling it makes a view decorator: ``@protect("tickets:read")``."""

    def __init__(self, verifier: CapabilityVerifier) -> None:
        self.verifier = verifier

    def __call__(
        self, scope: str | None = None, *, action: str | None = None, arguments: ArgumentsFn | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R | Response]]:
        verifier = self.verifier

        def decorator(view: Callable[P, R]) -> Callable[P, R | Response]:
            @functools.wraps(view)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
                try:
                    cap = verifier.verify_request(
                        authorization=request.headers.getlist("Authorization"),
                        dpop=request.headers.getlist("DPoP"), method=request.method, url=request.url)
                    verifier.authorize(cap, scope=scope, action=action,
                                       arguments=arguments() if arguments is not None else None)
                    g.capability = cap
                    return view(*args, **kwargs)
                except CapabilityError as e:
                    log.info("capability refused on %s %s: %s", request.method, request.path, e.description)
                    return error_response(e)

            return wrapper

        return decorator


def require_capability(
    verifier: CapabilityVerifier,
    scope: str | None = None,
    *,
    action: str | None = None,
    arguments: ArgumentsFn | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R | Response]]:
    """``@require_capability(verifier, "tickets:read")``: the same as ``CapabilityProtect(verifier)(...)``."""
    return CapabilityProtect(verifier)(scope, action=action, arguments=arguments)
