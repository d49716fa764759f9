"""Find an identity provider's ``jwks_uri`` from its published metadata.

This runs at registration time (CLI or admin API), never per exchange: the
discovered URI is stored and then re-checked before every key fetch. Errors
are ConfigurationError with one line, because an admin reads them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from ..errors import ConfigurationError
from .jwks import FetchError, check_fetch_url, fetch_json

__all__ = ["discover_jwks_uri", "discovery_urls"]

_MAX_SHOWN = 200


def _shown(value: object) -> str:
    """A value from a remote document, made safe for a one-line message."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def discovery_urls(issuer: str) -> tuple[str, str]:
    """Where an issuer's metadata may be: OpenID Connect Discovery first, then RFC 8414.

    The two differ when the issuer has a path: OIDC appends the well-known
    suffix, RFC 8414 (section 3.1) inserts it between host and path.
    """
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = issuer.rstrip("/") + "/.well-known/openid-configuration"
    oauth = f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{path}"
    return oidc, oauth


def discover_jwks_uri(
    issuer: str,
    *,
    allow_insecure_loopback: bool,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 3.0,
) -> str:
    """The ``jwks_uri`` the issuer's own metadata document names.

    The document's ``issuer`` must equal ``issuer`` exactly (OIDC Discovery
    section 4.3, RFC 8414 section 3.3): otherwise one provider's metadata,
    served from a host we reached, could make us trust another's keys.
    """
    try:
        check_fetch_url(issuer, allow_insecure_loopback)
    except ConfigurationError as exc:
        raise ConfigurationError(f"issuer: {exc}") from None
    parts = urlsplit(issuer)
    if parts.query or parts.fragment:
        raise ConfigurationError(f"issuer: {issuer!r} must not have a query or fragment")

    failures: list[str] = []
    with httpx.Client(transport=transport, timeout=timeout, follow_redirects=False) as client:
        for url in discovery_urls(issuer):
            try:
                doc, _ = fetch_json(
                    client, url, allow_insecure_loopback=allow_insecure_loopback, timeout=timeout
                )
            except FetchError as exc:
                failures.append(f"{url}: {exc}")
                continue
            if not isinstance(doc, dict):
                failures.append(f"{url}: not a JSON object")
                continue
            named = doc.get("issuer")
            if named != issuer:
                raise ConfigurationError(
                    f"discovery: {url} names issuer {_shown(named)}, expected exactly {issuer!r}"
                )
            jwks_uri = doc.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise ConfigurationError(f"discovery: {url} has no jwks_uri")
            try:
                check_fetch_url(jwks_uri, allow_insecure_loopback)
            except ConfigurationError as exc:
                raise ConfigurationError(f"discovery: jwks_uri from {url}: {exc}") from None
            return jwks_uri
    raise ConfigurationError(f"discovery: no metadata for issuer {issuer!r} ({'; '.join(failures)})")
