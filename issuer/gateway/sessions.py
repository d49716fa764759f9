"""An MCP session belongs to the user who opened it, across every gateway replica, with no shared table.

The gateway hands the client ``<tag>.<upstream session id>``, where ``tag``
is an HMAC under the gateway's session key over the user and the upstream
id. A request on a session must come with a token of that same user: the
tag is recomputed for the requesting user and compared in constant time.
Any replica holding the key can check it, and a client cannot make up a tag
for another user's session, nor take a session id it saw and use it with
its own token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final

__all__ = ["SessionBinder", "SessionRefused"]

_TAG_CHARS: Final = 22  # 16 bytes of HMAC-SHA-256, base64url without padding
_VISIBLE: Final = re.compile(r"^[\x21-\x7e]{1,256}$")


class SessionRefused(Exception):
    """The session id is malformed, or was not opened by this user."""


class SessionBinder:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _tag(self, principal: str, upstream_id: str) -> str:
        msg = principal.encode() + b"\x00" + upstream_id.encode()
        mac = hmac.new(self._key, msg, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def bind(self, principal: str, upstream_id: str) -> str:
        """The session id the client sees; ValueError when the upstream's id breaks the spec's character rule."""
        if not _VISIBLE.match(upstream_id):
            raise ValueError("the MCP server sent a session id outside visible ASCII")
        return f"{self._tag(principal, upstream_id)}.{upstream_id}"

    def open(self, principal: str, client_id: str) -> str:
        """The upstream session id, if ``principal`` opened this session; SessionRefused otherwise."""
        if len(client_id) > _TAG_CHARS + 1 + 256 or client_id[_TAG_CHARS: _TAG_CHARS + 1] != ".":
            raise SessionRefused("malformed session id")
        tag, upstream_id = client_id[:_TAG_CHARS], client_id[_TAG_CHARS + 1:]
        if not _VISIBLE.match(upstream_id):
            raise SessionRefused("malformed session id")
        if not hmac.compare_digest(tag.encode(), self._tag(principal, upstream_id).encode()):
            raise SessionRefused("the session was opened by another user, or its id was altered")
        return upstream_id
