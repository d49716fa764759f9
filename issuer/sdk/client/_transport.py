"""HTTP for the exchange client, on :mod:`urllib.request` (standard library only).

* https only; plain http only to a loopback address (127.0.0.0/8, ::1,
  ``localhost``) and only when the caller allows it (tests, a sidecar);
* redirects are never followed: a token request is never re-sent to
  another URL, and a redirected metadata document is a configuration error;
* every request has a timeout (per connection attempt and per read);
* response bodies are read up to a bound;
* loopback requests never go through an environment proxy.

Network failures become :class:`IssuerUnavailable`; an HTTP error status is
returned as a :class:`Response` for the caller to interpret.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any, NoReturn
from urllib.parse import urlsplit

from ...loopback import is_loopback
from ._errors import IssuerUnavailable, ProtocolError

__all__ = ["MAX_BODY", "Response", "Transport", "insecure_reason", "is_loopback"]

MAX_BODY = 256 * 1024
USER_AGENT = "mcp-capability-issuer-exchange-client/0.1"


def insecure_reason(url: str, *, allow_insecure_loopback: bool) -> str | None:
    """Why ``url`` may not be used for a request, or ``None`` when it may."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "is not a valid URL"
    if not host:
        return "has no host"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        if not is_loopback(host):
            return "must use https (plain http is allowed only to a loopback address)"
        if not allow_insecure_loopback:
            return "uses plain http to a loopback address, which needs allow_insecure_loopback=True"
        return None
    return "must use https"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Message
    body: bytes


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Message,
                         newurl: str) -> NoReturn:
        raise urllib.error.HTTPError(req.full_url, code, msg, headers, fp)


class Transport:
    def __init__(self, *, timeout: float, ssl_context: ssl.SSLContext | None) -> None:
        self._timeout = timeout
        context = ssl_context or ssl.create_default_context()
        https = urllib.request.HTTPSHandler(context=context)
        self._opener = urllib.request.build_opener(_NoRedirect(), https)
        self._direct = urllib.request.build_opener(_NoRedirect(), https, urllib.request.ProxyHandler({}))

    def request(self, method: str, url: str, *, headers: dict[str, str], body: bytes | None = None) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):  # callers check with insecure_reason(); never file: or ftp:
            raise ValueError("only http(s) URLs are requested")
        req = urllib.request.Request(url, data=body, method=method,  # noqa: S310 - scheme checked above
                                     headers={"User-Agent": USER_AGENT, "Accept": "application/json", **headers})
        opener = self._direct if is_loopback(parts.hostname or "") else self._opener
        try:
            with opener.open(req, timeout=self._timeout) as resp:
                return Response(resp.status, resp.headers, _read(resp))
        except urllib.error.HTTPError as e:
            with e:
                return Response(e.code, e.headers, _read(e) if e.fp is not None else b"")
        except TimeoutError:
            _unavailable(f"no answer from the issuer within {self._timeout:g} seconds", None)
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                _unavailable(f"no answer from the issuer within {self._timeout:g} seconds", None)
            if isinstance(e.reason, ssl.SSLError):
                _unavailable("TLS connection to the issuer failed (certificate or handshake)", e)
            _unavailable(f"cannot reach the issuer: {_reason(e.reason)}", e)
        except (http.client.HTTPException, OSError) as e:
            _unavailable(f"the connection to the issuer failed: {type(e).__name__}", e)


def _read(resp: Any) -> bytes:
    try:
        data: bytes = resp.read(MAX_BODY + 1)
    except TimeoutError:
        raise IssuerUnavailable("the issuer's response did not arrive in time") from None
    except (http.client.HTTPException, OSError) as e:
        raise IssuerUnavailable(f"reading the issuer's response failed: {type(e).__name__}") from None
    if len(data) > MAX_BODY:
        raise ProtocolError(f"the issuer's response is larger than {MAX_BODY} bytes", status_code=resp.status)
    return data


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return type(reason).__name__ if isinstance(reason, BaseException) else str(reason)[:100]


def _unavailable(message: str, cause: BaseException | None) -> NoReturn:
    raise IssuerUnavailable(message) from cause
