"""GET a JSON document from the issuer with ``urllib.request``: https only, bounded in size and time.

Plain http is accepted only for loopback hosts and only when the caller opted
in (``allow_insecure_loopback``, for development and tests): keys fetched over
http could be swapped by anyone on the path.  Redirects are never followed (a
redirect would lead off the URL the policy checked), bodies are capped, and the
whole fetch has a deadline because socket timeouts apply per read.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from ...kernel import strictjson
from ...loopback import is_loopback

__all__ = ["MAX_DOCUMENT_BYTES", "FetchError", "check_url", "fetch_bytes", "fetch_json", "is_loopback"]

#: Metadata and key sets are a few KiB; a revocation feed may be longer.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
_USER_AGENT = "mcp-capability-issuer-verifier/0.1"


class FetchError(Exception):
    """A document could not be fetched or parsed. The message is short and never holds a response body."""


def check_url(url: object, allow_insecure_loopback: bool) -> str:
    """Return ``url`` if the verifier may fetch from it; raise ValueError saying why not."""
    if not isinstance(url, str) or not url:
        raise ValueError("URL must be a non-empty string")
    if len(url) > 2000 or any(ord(c) < 0x21 or ord(c) > 0x7E for c in url):
        raise ValueError("URL is too long or has characters a URL may not contain")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # ValueError on a malformed port
    except ValueError:
        raise ValueError("URL is not a valid URL") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError("URL must not contain user information")
    if not host:
        raise ValueError("URL has no host")
    if parts.fragment:
        raise ValueError("URL must not have a fragment")
    scheme = parts.scheme.lower()
    if scheme == "https":
        return url
    if scheme == "http" and is_loopback(host):
        if allow_insecure_loopback:
            return url
        raise ValueError(f"{url} uses http: allowed for loopback hosts only with allow_insecure_loopback=True")
    raise ValueError(f"{url} must use https")


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


# Two openers built once: proxies from the environment apply to remote hosts, never to loopback.
_OPENER = urllib.request.build_opener(_RefuseRedirects)
_LOOPBACK_OPENER = urllib.request.build_opener(_RefuseRedirects, urllib.request.ProxyHandler({}))


def fetch_json(
    url: str, *, timeout: float, allow_insecure_loopback: bool, max_bytes: int = MAX_DOCUMENT_BYTES
) -> Any:
    """The parsed JSON at ``url``; :class:`FetchError` on any failure (never a body in the message)."""
    body = fetch_bytes(url, timeout=timeout, allow_insecure_loopback=allow_insecure_loopback, max_bytes=max_bytes)
    try:
        return strictjson.loads(body)  # metadata and key sets: one reading, whoever else parses them
    except strictjson.StrictJSONError:
        raise FetchError("response is not JSON") from None


def fetch_bytes(
    url: str, *, timeout: float, allow_insecure_loopback: bool, max_bytes: int = MAX_DOCUMENT_BYTES,
    accept: str = "application/json",
) -> bytes:
    """The body at ``url``, capped in size and time; :class:`FetchError` on any failure."""
    try:
        check_url(url, allow_insecure_loopback)
    except ValueError as exc:
        raise FetchError(str(exc)) from None
    host = urlsplit(url).hostname or ""
    opener = _LOOPBACK_OPENER if is_loopback(host) else _OPENER
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url,
        headers={"Accept": accept, "Accept-Encoding": "identity", "User-Agent": _USER_AGENT},
    )
    deadline = time.monotonic() + 2 * timeout
    buf = bytearray()
    try:
        with opener.open(request, timeout=timeout) as resp:
            status = resp.status
            if status != 200:
                raise FetchError(f"HTTP {status}")
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise FetchError("response too large")
            while chunk := resp.read(65536):
                buf += chunk
                if len(buf) > max_bytes:
                    raise FetchError("response too large")
                if time.monotonic() > deadline:
                    raise FetchError("response too slow")
    except urllib.error.HTTPError as exc:
        exc.close()
        raise FetchError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise FetchError(type(exc).__name__) from None
    return bytes(buf)
