"""Input rules shared by every admin surface (CLI, admin API): names, URIs, key sets.

Each check raises ConfigurationError with one line that names the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = ["PRIVATE_JWK_MEMBERS", "check_issuer_url", "check_name", "check_public_jwks", "check_resource_uri"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def check_name(field: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"{field}: {value!r} is not a valid name (letters, digits, '_', '.', ':', '-'; at most 100)"
        )
    return value


def check_resource_uri(field: str, value: str) -> str:
    """An RFC 8707 resource indicator: absolute URI, no fragment."""
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ConfigurationError(f"{field}: {value!r} is not a URI") from None
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigurationError(f"{field}: {value!r} must be an absolute https URI")
    if parts.fragment or "#" in value:
        raise ConfigurationError(f"{field}: {value!r} must not contain a fragment (RFC 8707)")
    if len(value) > 1000 or any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise ConfigurationError(f"{field}: {value!r} has characters a URI may not contain")
    return value


def check_issuer_url(field: str, value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ConfigurationError(f"{field}: {value!r} is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(f"{field}: {value!r} must be an absolute URL")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{field}: {value!r} must not have a query or fragment")
    return value


def check_public_jwks(field: str, value: Any) -> dict[str, Any]:
    """A JWK Set of public asymmetric keys. Private or symmetric members are refused outright."""
    if not isinstance(value, Mapping) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise ConfigurationError(f"{field}: must be a JWK Set: {{'keys': [...]}} with at least one key")
    for i, key in enumerate(value["keys"]):
        if not isinstance(key, Mapping) or key.get("kty") not in ("RSA", "EC", "OKP"):
            raise ConfigurationError(f"{field}: key {i} must be an RSA, EC or OKP public key")
        leaked = sorted(PRIVATE_JWK_MEMBERS & set(key))
        if leaked:
            raise ConfigurationError(f"{field}: key {i} contains private members {leaked}: publish public keys only")
    return {"keys": [dict(k) for k in value["keys"]]}
