"""Authlib's Flask AuthorizationServer, tightened.

* Parameters come from the form body only: Authlib's Flask request merges the
  query string in, and a token in a URL ends up in logs (RFC 6750 section 5.3,
  MCP "tokens MUST NOT be included in the URI query string").
* Every error leaves through :meth:`handle_error_response`, the one place
  where errors become RFC 6749 section 5.2 JSON: a description is always
  present and legal, ``invalid_client`` is always 401.
* Every client authentication (token grant, introspection, revocation) goes
  through :meth:`IssuerServer.authenticate_client`: one method per request,
  the failed-attempt throttle, and a form ``client_id`` that must name the
  client that authenticated (RFC 6749 section 2.3.1, RFC 7521 section 4.2).
  The authenticated id is kept in ``flask.g.authenticated_client`` so that a
  refusal's audit row names only a client that proved who it is.
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import cached_property
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Payload, OAuth2Request
from flask import Response, g
from flask import request as flask_request
from werkzeug.datastructures import MultiDict

from ..errors import InvalidClient, IssuerError, safe_description
from ..registry import ClientView
from .client_auth import ClientAuthGuard, claimed_client_id, reject_multiple_methods

__all__ = ["FormOnlyRequest", "IssuerServer"]

_DEFAULT_DESCRIPTIONS = {
    "invalid_request": "The request is missing a parameter, repeats one, or is malformed.",
    "invalid_client": "Client authentication failed.",
    "unsupported_grant_type": "The grant type is not supported.",
    "unauthorized_client": "The client may not use this grant type.",
    "invalid_grant": "The grant is invalid.",
    "unsupported_token_type": "The token type is not supported.",
}


class _FormPayload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, form: MultiDict[str, str]) -> None:
        self._form = form

    @property
    def data(self) -> MultiDict[str, str]:
        return self._form

    @cached_property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for k in self._form:
            values[k].extend(self._form.getlist(k))
        return values


class FormOnlyRequest(FlaskOAuth2Request):  # type: ignore[misc]
    def __init__(self, request: Any, uri: str) -> None:
        # Authlib uses the URI only to refuse plain-http transport. The issuer's configured URL answers
        # that better than werkzeug's rebuilt request URL (which costs more than the rest of this
        # wrapper, and reads http behind a TLS-terminating proxy that is not among the trusted ones).
        OAuth2Request.__init__(self, method=request.method, uri=uri, headers=request.headers)
        self._request = request
        self.payload = _FormPayload(request.form)

    @property
    def args(self) -> MultiDict[str, str]:
        return MultiDict()


class IssuerServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, clients: Any, base_url: str, guard: ClientAuthGuard) -> None:
        super().__init__()
        self._clients = clients
        self._base_url = base_url
        self._guard = guard

    def query_client(self, client_id: str) -> ClientView | None:
        client: ClientView | None = self._clients(client_id)
        return client

    def authenticate_client(self, request: Any, methods: list[str], endpoint: str = "token") -> ClientView:
        """Authlib's client authentication, for every endpoint, inside the rules it does not know.

        The throttle is checked before the credentials (a throttled guess must learn nothing) and
        spent only when they fail; ``endpoint`` is Authlib's name (``token``, ``introspection``,
        ``revocation``), used as the metric label.
        """
        reject_multiple_methods(request)
        claimed, source = claimed_client_id(request), flask_request.remote_addr or ""
        self._guard.before(claimed, source, endpoint)
        try:
            client: ClientView = super().authenticate_client(request, methods, endpoint)
        except OAuth2Error as e:
            if e.error == "invalid_client":
                self._guard.failed(claimed, source, endpoint)
            raise
        g.authenticated_client = client.client_id
        if any(named != client.client_id for named in request.form.getlist("client_id")):
            # The credentials are right, so this is no guess and spends no budget; but a request that
            # names two clients is refused rather than read one way here and another way downstream.
            self._guard.failed(claimed, source, endpoint, spend=False)
            raise InvalidClient("client_id does not match the authenticated client")
        return client

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        """Capabilities are self-contained JWTs; the audit row is their record."""

    def create_oauth2_request(self, request: Any) -> FormOnlyRequest:
        return FormOnlyRequest(flask_request, self._base_url + flask_request.path)

    def handle_response(self, status_code: int, payload: Any, headers: Any) -> Response:
        # Authlib's Flask version encodes through the app's JSON provider, which costs several times
        # what the standard encoder does for these flat answers.
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        return Response(payload, status=status_code, headers=headers)

    def handle_error_response(self, request: Any, error: Any) -> Response:
        if not isinstance(error, IssuerError):
            description = error.get_error_description() or error.description or ""
            code = error.error or "invalid_request"
            status = 401 if code == "invalid_client" else error.status_code
            error = (InvalidClient if code == "invalid_client" else IssuerError)(
                safe_description(description or _DEFAULT_DESCRIPTIONS.get(code, "The request failed."))
            )
            error.error, error.status_code = code, status
        status, body, headers = error()
        response: Response = self.handle_response(status, body, headers)
        return response
