"""The ``tool_invocation`` authorization details type (RFC 9396) carried by capabilities.

https://www.rfc-editor.org/rfc/rfc9396

Standard library only: the issuer mints these objects and the verifier SDK
reads them, so both must agree byte for byte on the canonical form of a
call's arguments.

A capability carries one object::

    {"type": "tool_invocation", "locations": ["https://files.example"],
     "actions": ["read"], "constraints": {"path": {"prefix": "/home/alice/"}}}

or, bound to one call, ``"arguments": {...}`` instead of ``constraints`` (or
``"arguments_sha256"``, the base64url SHA-256 of the canonical arguments,
when they are larger than :data:`MAX_INLINE_ARGUMENTS` bytes).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_INLINE_ARGUMENTS", "TOOL_INVOCATION", "arguments_digest", "bind_arguments", "canonical_arguments"]

TOOL_INVOCATION = "tool_invocation"
#: Larger canonical arguments travel as a digest, so a capability stays a header-sized token.
MAX_INLINE_ARGUMENTS = 2048


def canonical_arguments(arguments: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same bytes for the same JSON value everywhere."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(canonical_arguments(arguments)).digest()).rstrip(b"=").decode()


def bind_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The members that bind a capability to one call: the arguments, or their digest when large."""
    if len(canonical_arguments(arguments)) <= MAX_INLINE_ARGUMENTS:
        return {"arguments": dict(arguments)}
    return {"arguments_sha256": arguments_digest(arguments)}
