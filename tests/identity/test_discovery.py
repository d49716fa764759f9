"""discover_jwks_uri: the provider's own metadata names its keys, and must name itself exactly."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from issuer.errors import ConfigurationError
from issuer.identity.discovery import discover_jwks_uri, discovery_urls

from .conftest import LoopbackServer

ISSUER = "https://idp.example.com"


class Metadata:
    """A MockTransport serving metadata documents by URL; everything else is 404."""

    def __init__(self, docs: dict[str, Any]) -> None:
        self.docs = docs
        self.requested: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.requested.append(url)
        if url not in self.docs:
            return httpx.Response(404)
        doc = self.docs[url]
        if isinstance(doc, httpx.Response):
            return doc
        return httpx.Response(200, content=json.dumps(doc).encode())

    def discover(self, issuer: str = ISSUER, allow_insecure_loopback: bool = False) -> str:
        return discover_jwks_uri(
            issuer,
            allow_insecure_loopback=allow_insecure_loopback,
            transport=httpx.MockTransport(self.handler),
        )


def one_line(exc: pytest.ExceptionInfo[ConfigurationError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_discovery_urls() -> None:
    assert discovery_urls("https://h") == (
        "https://h/.well-known/openid-configuration",
        "https://h/.well-known/oauth-authorization-server",
    )
    assert discovery_urls("https://h/tenant/v2/") == (
        "https://h/tenant/v2/.well-known/openid-configuration",
        "https://h/.well-known/oauth-authorization-server/tenant/v2",
    )


def test_openid_configuration() -> None:
    meta = Metadata(
        {f"{ISSUER}/.well-known/openid-configuration": {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/keys"}}
    )
    assert meta.discover() == f"{ISSUER}/keys"
    assert len(meta.requested) == 1


def test_falls_back_to_rfc8414_with_path_insertion() -> None:
    issuer = "https://as.example.com/tenant-1"
    meta = Metadata(
        {
            "https://as.example.com/.well-known/oauth-authorization-server/tenant-1": {
                "issuer": issuer,
                "jwks_uri": "https://as.example.com/tenant-1/jwks",
            }
        }
    )
    assert meta.discover(issuer) == "https://as.example.com/tenant-1/jwks"
    assert meta.requested == [
        "https://as.example.com/tenant-1/.well-known/openid-configuration",
        "https://as.example.com/.well-known/oauth-authorization-server/tenant-1",
    ]


@pytest.mark.parametrize(
    "named", [ISSUER + "/", "https://evil.example.com", "https://IDP.example.com", None, 5]
)
def test_issuer_mismatch_refused(named: Any) -> None:
    doc = {"issuer": named, "jwks_uri": f"{ISSUER}/keys"}
    meta = Metadata({f"{ISSUER}/.well-known/openid-configuration": doc})
    with pytest.raises(ConfigurationError) as info:
        meta.discover()
    assert "expected exactly" in one_line(info)


def test_mismatch_is_not_papered_over_by_the_fallback() -> None:
    meta = Metadata(
        {
            f"{ISSUER}/.well-known/openid-configuration": {
                "issuer": "https://other",
                "jwks_uri": f"{ISSUER}/a",
            },
            f"{ISSUER}/.well-known/oauth-authorization-server": {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/b"},
        }
    )
    with pytest.raises(ConfigurationError):
        meta.discover()


@pytest.mark.parametrize("jwks_uri", ["http://idp.example.com/keys", "http://127.0.0.1/keys", "ftp://x/keys"])
def test_insecure_jwks_uri_refused(jwks_uri: str) -> None:
    meta = Metadata({f"{ISSUER}/.well-known/openid-configuration": {"issuer": ISSUER, "jwks_uri": jwks_uri}})
    with pytest.raises(ConfigurationError) as info:
        meta.discover()
    assert "jwks_uri" in one_line(info)


@pytest.mark.parametrize("jwks_uri", [None, "", 7])
def test_missing_jwks_uri_refused(jwks_uri: Any) -> None:
    meta = Metadata({f"{ISSUER}/.well-known/openid-configuration": {"issuer": ISSUER, "jwks_uri": jwks_uri}})
    with pytest.raises(ConfigurationError, match="no jwks_uri"):
        meta.discover()


def test_no_metadata_anywhere() -> None:
    meta = Metadata({})
    with pytest.raises(ConfigurationError) as info:
        meta.discover()
    text = one_line(info)
    assert "openid-configuration: HTTP 404" in text and "oauth-authorization-server: HTTP 404" in text


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500),
        httpx.Response(200, content=b"<html>"),
        httpx.Response(200, content=b"[1, 2]"),
        httpx.Response(
            301, headers={"Location": "https://evil.example.com/.well-known/openid-configuration"}
        ),
    ],
)
def test_unusable_responses(response: httpx.Response) -> None:
    meta = Metadata({f"{ISSUER}/.well-known/openid-configuration": response})
    with pytest.raises(ConfigurationError):
        meta.discover()
    assert all(u.startswith(ISSUER) for u in meta.requested)


@pytest.mark.parametrize(
    "issuer",
    [
        "http://idp.example.com",
        "https://idp.example.com?x=1",
        "https://user:pw@idp.example.com",
        "idp.example.com",
    ],
)
def test_bad_issuer_refused_before_any_request(issuer: str) -> None:
    meta = Metadata({})
    with pytest.raises(ConfigurationError) as info:
        meta.discover(issuer, allow_insecure_loopback=True)
    one_line(info)
    assert meta.requested == []


def test_real_server_loopback_needs_the_opt_in(server: LoopbackServer) -> None:
    issuer = server.base
    doc = server.route("/.well-known/openid-configuration", {"issuer": issuer, "jwks_uri": f"{issuer}/jwks"})
    with pytest.raises(ConfigurationError, match="allow_insecure_loopback"):
        discover_jwks_uri(issuer, allow_insecure_loopback=False)
    assert doc.hits == 0
    assert discover_jwks_uri(issuer, allow_insecure_loopback=True) == f"{issuer}/jwks"
    assert doc.hits == 1


def test_real_server_rfc8414_fallback_and_mismatch(server: LoopbackServer) -> None:
    issuer = f"{server.base}/realm"
    server.route(
        "/.well-known/oauth-authorization-server/realm", {"issuer": issuer, "jwks_uri": f"{issuer}/jwks"}
    )
    assert discover_jwks_uri(issuer, allow_insecure_loopback=True) == f"{issuer}/jwks"
    server.route(
        "/realm/.well-known/openid-configuration", {"issuer": server.base, "jwks_uri": f"{issuer}/jwks"}
    )
    with pytest.raises(ConfigurationError, match="expected exactly"):
        discover_jwks_uri(issuer, allow_insecure_loopback=True)
