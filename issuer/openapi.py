"""The OpenAPI 3.1 document of every route the issuer serves.

Built from code, not written by hand: admin operations come from
:data:`issuer.admin.api.ROUTES` and their pydantic models, the OAuth
endpoints from the descriptions below. ``docs/openapi.json`` is this
document as generated (``python -m issuer.openapi > docs/openapi.json``); a
test fails when the two differ, and another when a route of the app is
missing from it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .admin import schemas
from .admin.api import PREFIX, ROUTES
from .oauth.rfc8414 import INTROSPECT_PATH, JWKS_PATH, REVOCATION_FEED_PATH, REVOKE_PATH, TOKEN_PATH, WELL_KNOWN_PATH

__all__ = ["OPENAPI_PATH", "build_openapi"]

OPENAPI_PATH = "/openapi.json"
_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


#: A compact JWS: three base64url segments.
_COMPACT_JWS = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    400: "Malformed or invalid input (the description names the field)",
    401: "Missing or invalid credentials",
    403: "The credential's role may not do this",
    404: "No such object",
    409: "The name, issuer or resource URI is taken",
    413: "The body is too large",
    429: "Rate limited (see Retry-After)",
    503: "A dependency (database, keys) is unavailable; retry later",
}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _json(_ref("Error"), _ERRORS[c]) for c in codes}


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


_S = {"type": "string"}
_CLIENT_FORM = {
    "client_id": _S, "client_secret": _S, "client_assertion": _S,
    "client_assertion_type": {"type": "string", "enum": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]},
}


def _oauth_paths() -> dict[str, Any]:
    client_auth: list[dict[str, list[str]]] = [{"clientBasic": []}, {}]
    token_form = _form({
        "grant_type": {"type": "string", "enum": ["urn:ietf:params:oauth:grant-type:token-exchange"]},
        "subject_token": _S, "subject_token_type": _S, "actor_token": _S, "actor_token_type": _S,
        "resource": _S, "audience": _S, "scope": _S, "requested_token_type": _S,
        "authorization_details": {"type": "string", "description": "RFC 9396 JSON array"},
        **_CLIENT_FORM,
    }, ["grant_type", "subject_token", "subject_token_type"])
    token_form_hint = _form({"token": _S, "token_type_hint": _S, **_CLIENT_FORM}, ["token"])
    return {
        TOKEN_PATH: {"post": {
            "operationId": "token_exchange", "tags": ["oauth"], "security": client_auth,
            "summary": "RFC 8693 token exchange: a user's token for a capability for one tool",
            "parameters": [{"name": "DPoP", "in": "header", "required": False, "schema": {"type": "string"},
                            "description": "RFC 9449 proof: binds the capability to its key (token_type DPoP)"}],
            "requestBody": token_form,
            "responses": {"200": _json(_ref("TokenResponse"), "The capability"), **_errors(400, 401, 413, 429, 503)},
        }},
        INTROSPECT_PATH: {"post": {
            "operationId": "introspect", "tags": ["oauth"], "security": client_auth,
            "summary": "RFC 7662 introspection of a capability (the presenting client must be its actor)",
            "requestBody": token_form_hint,
            "responses": {"200": _json(_ref("Introspection"), "active, and the capability's claims when active"),
                          **_errors(400, 401, 413, 429, 503)},
        }},
        REVOKE_PATH: {"post": {
            "operationId": "revoke", "tags": ["oauth"], "security": client_auth,
            "summary": "RFC 7009 revocation of a capability",
            "requestBody": token_form_hint,
            "responses": {"200": _json({"type": "object"}, "Revoked, or unknown (RFC 7009 answers 200 either way)"),
                          **_errors(400, 401, 413, 429, 503)},
        }},
        REVOCATION_FEED_PATH: {"get": {
            "operationId": "revocation_feed", "tags": ["oauth"], "security": [],
            "summary": "Revoked capabilities, users and clients, for verifiers to poll: a signed JWS",
            "parameters": [{"name": "since", "in": "query", "schema": {"type": "number"},
                            "description": "issued_at of the previous answer"}],
            "responses": {"200": {
                "description": "Entries revoked since `since`: a compact JWS (typ `revocation-feed+jwt`, signed by "
                               "a key of the JWKS) whose payload is a RevocationFeed",
                "content": {"application/jwt": {"schema": {"type": "string", "pattern": _COMPACT_JWS}}}},
                **_errors(400, 503)},
        }},
        WELL_KNOWN_PATH: {"get": {
            "operationId": "metadata", "tags": ["oauth"], "security": [],
            "summary": "RFC 8414 authorization server metadata",
            "responses": {"200": _json({"type": "object", "required": ["issuer", "token_endpoint", "jwks_uri"]},
                                       "Metadata")},
        }},
        JWKS_PATH: {"get": {
            "operationId": "jwks", "tags": ["oauth"], "security": [],
            "summary": "Public keys that verify capabilities (next, active and retired)",
            "responses": {"200": _json({"type": "object", "required": ["keys"],
                                        "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
                                       "JWK Set")},
        }},
        "/healthz": {"get": {
            "operationId": "healthz", "tags": ["operations"], "security": [], "summary": "Liveness",
            "responses": {"200": _json({"type": "object", "properties": {"status": {"const": "ok"}}}, "Alive")},
        }},
        "/readyz": {"get": {
            "operationId": "readyz", "tags": ["operations"], "security": [],
            "summary": "Readiness: database and keys (Redis is reported, a lost Redis degrades)",
            "responses": {"200": _json(_ref("Readiness"), "Ready (ok or degraded)"),
                          "503": _json(_ref("Readiness"), "Not ready")},
        }},
        "/metrics": {"get": {
            "operationId": "metrics", "tags": ["operations"], "security": [], "summary": "Prometheus metrics",
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
        OPENAPI_PATH: {"get": {
            "operationId": "openapi", "tags": ["operations"], "security": [], "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
        }},
    }


def _admin_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in ROUTES:
        op: dict[str, Any] = {"operationId": r.handler.__name__, "tags": ["admin"], "summary": r.summary,
                              "security": [{"adminKey": []}]}
        if r.write:
            op["description"] = "Needs an `admin` key; every change is recorded in the admin change log."
        params = [{"name": p, "in": "path", "required": True,
                   "schema": {"type": "integer", "minimum": 1} if p == "version" else {"type": "string"}}
                  for p in _path_params(r.path)]
        params += [{"name": q, "in": "query", "required": False, "schema": _query_schema(q)} for q in r.query]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {"required": True,
                                 "content": {"application/json": {"schema": _ref(r.body.__name__)}}}
        if r.list_of is not None:
            key, item = r.list_of
            ok = _json({"type": "object", "required": [key], "additionalProperties": False,
                        "properties": {key: {"type": "array", "items": _ref(item.__name__)}}}, r.summary)
        elif r.response == "ndjson":
            ok = {"description": "One audit record per line",
                  "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}
        else:
            assert r.response is not None and not isinstance(r.response, str)
            ok = _json(_ref(r.response.__name__), r.summary)
        codes = [400, 401, 404, 429, 503]  # 429: the failed-sign-in throttle
        if r.write:
            codes.append(403)
        if r.body is not None:
            codes.append(413)
        codes.extend(r.extra_errors)
        op["responses"] = {str(r.status): ok, **_errors(*sorted(set(codes)))}
        paths.setdefault(PREFIX + r.path, {})[r.method.lower()] = op
    return paths


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _query_schema(name: str) -> dict[str, Any]:
    if name in ("limit",):
        return {"type": "integer", "minimum": 1, "maximum": 1000}
    if name in ("after_id", "from", "to"):
        return {"type": "integer", "minimum": 0 if name == "after_id" else 1}
    if name in ("since", "until"):
        return {"type": "string", "format": "date-time"}
    if name == "decision":
        return {"type": "string", "enum": ["granted", "denied"]}
    return {"type": "string"}


def _component_schemas() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (mdl, "validation") for mdl in schemas.REQUESTS.values()
    ]
    models += [(mdl, "serialization") for mdl in schemas.RESPONSES.values()]
    _, top = models_json_schema(models, ref_template=_REF)
    defs: dict[str, Any] = top.get("$defs", {})
    defs.update({
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"}, "error_description": {"type": "string"}, "error_uri": {"type": "string"}}},
        "TokenResponse": {"type": "object", "required": ["access_token", "issued_token_type", "token_type"],
                          "properties": {"access_token": _S, "issued_token_type": _S, "token_type": _S,
                                         "expires_in": {"type": "integer"}, "scope": _S,
                                         "authorization_details": {"type": "array"}}},
        "Introspection": {"type": "object", "required": ["active"], "properties": {"active": {"type": "boolean"}}},
        "RevocationFeed": {"type": "object", "required": ["iss", "iat", "version", "issued_at", "jtis", "subjects",
                                                          "clients"], "properties": {
            "iss": _S, "iat": {"type": "integer"},
            "version": {"type": "integer", "description": "Only increases: a verifier refuses an older feed"},
            "issued_at": {"type": "number"},
            "clients": {"type": "array", "items": {"type": "object", "required": ["client_id", "revoked_before"],
                                                   "properties": {"client_id": _S,
                                                                  "revoked_before": {"type": "integer"}}}},
            "jtis": {"type": "array", "items": {"type": "object", "required": ["jti", "exp"], "properties": {
                "jti": _S, "exp": {"type": "integer"}}}},
            "subjects": {"type": "array", "items": {"type": "object", "required": ["sub_sha256", "revoked_before"],
                                                    "properties": {"sub_sha256": _S,
                                                                   "revoked_before": {"type": "integer"}}}}}},
        "Readiness": {"type": "object", "required": ["status", "checks"], "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}}}},
    })
    return dict(sorted(defs.items()))


def build_openapi() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "MCP capability issuer",
            "version": version("mcp-capability-issuer"),
            "description": "RFC 8693 token exchange for MCP deployments, and the admin API (docs/api.md).",
        },
        "paths": {**_oauth_paths(), **_admin_paths()},
        "components": {
            "schemas": _component_schemas(),
            "securitySchemes": {
                "adminKey": {"type": "http", "scheme": "bearer",
                             "description": "An admin key from `issuer admin-key create` (role admin or auditor)"},
                "clientBasic": {"type": "http", "scheme": "basic",
                                "description": "client_secret_basic; client_secret_post and private_key_jwt travel "
                                               "in the form body"},
            },
        },
    }


if __name__ == "__main__":
    print(json.dumps(build_openapi(), indent=2))
