"""The issuer's RFC 8414 metadata: where its keys and its revocation feed are.

https://www.rfc-editor.org/rfc/rfc8414

The document's ``issuer`` must equal the configured issuer exactly (section
3.3), so a document served from elsewhere cannot name other keys.  The last
good document is kept: an unreachable issuer does not forget its endpoints.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ... import clock
from ._http import FetchError, check_url, fetch_json

__all__ = ["WELL_KNOWN_PATH", "Discovery", "Metadata"]

log = logging.getLogger("issuer.sdk.verifier")

WELL_KNOWN_PATH = "/.well-known/oauth-authorization-server"
_MAX_METADATA_BYTES = 256 * 1024


@dataclass(frozen=True)
class Metadata:
    jwks_uri: str
    revocation_feed_endpoint: str | None
    fetched_at: float


def metadata_url(issuer: str) -> str:
    """RFC 8414 section 3.1: the well-known segment goes between the host and the issuer's path."""
    parts = urlsplit(issuer)
    path = parts.path if parts.path != "/" else ""
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN_PATH + path, "", ""))


class Discovery:
    """Fetches and caches the metadata document; thread-safe, single-flight."""

    def __init__(self, issuer: str, *, max_age: float, timeout: float, allow_insecure_loopback: bool) -> None:
        self.issuer = issuer
        self.url = metadata_url(issuer)
        self.max_age = max_age
        self.timeout = timeout
        self.allow_insecure_loopback = allow_insecure_loopback
        self._lock = threading.Lock()
        self._metadata: Metadata | None = None

    def get(self) -> Metadata:
        """The metadata, refetched when older than ``max_age``; the last good one if a refetch fails.

        Raises :class:`FetchError` only when no good document was ever fetched.
        """
        current = self._metadata
        if current is not None and clock.monotonic() - current.fetched_at < self.max_age:
            return current
        with self._lock:
            current = self._metadata
            if current is not None and clock.monotonic() - current.fetched_at < self.max_age:
                return current
            try:
                fresh = self._fetch()
            except FetchError as exc:
                if current is None:
                    raise
                log.warning("issuer metadata refresh failed (%s); using the last good document", exc)
                return current
            self._metadata = fresh
            return fresh

    def _fetch(self) -> Metadata:
        doc = fetch_json(
            self.url, timeout=self.timeout, allow_insecure_loopback=self.allow_insecure_loopback,
            max_bytes=_MAX_METADATA_BYTES,
        )
        if not isinstance(doc, Mapping):
            raise FetchError("metadata is not a JSON object")
        if doc.get("issuer") != self.issuer:
            raise FetchError("metadata issuer does not equal the configured issuer")
        jwks_uri = doc.get("jwks_uri")
        feed = doc.get("revocation_feed_endpoint")
        try:
            check_url(jwks_uri, self.allow_insecure_loopback)
            if feed is not None:
                check_url(feed, self.allow_insecure_loopback)
        except ValueError as exc:
            raise FetchError(f"metadata endpoint refused: {exc}") from None
        assert isinstance(jwks_uri, str)
        return Metadata(jwks_uri, feed if isinstance(feed, str) else None, clock.monotonic())
