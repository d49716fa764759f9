"""Token exchange from the event loop, over a keep-alive connection pool.

The exchange client SDK is synchronous and opens a connection per request
(standard library only, by design). On the gateway's hot path that would
mean a worker-thread hop and a new TCP connection for every tool call. This
module keeps the SDK's protocol code - request preparation, response
parsing, the error tree, secret redaction - and only replaces the transport
with an ``httpx.AsyncClient`` whose connections to the issuer stay open.
Discovery (RFC 8414) still goes through the SDK, once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from email.message import Message
from typing import Any, Final
from urllib.parse import urlencode

import anyio.to_thread
import httpx

from ..sdk.client import ACCESS_TOKEN_TYPE, ClientSecret, ExchangeClient, IssuedCapability, IssuerUnavailable
from ..sdk.client._client import _error_from, _parse_success, _prepare
from ..sdk.client._transport import MAX_BODY, USER_AGENT, Response

__all__ = ["AsyncExchange"]

_FORM: Final = "application/x-www-form-urlencoded"


class AsyncExchange:
    def __init__(self, *, issuer: str, client_id: str, secret: str, timeout: float) -> None:
        self._client_id = client_id
        self._credentials = ClientSecret(secret)
        self._discovery = ExchangeClient(issuer=issuer, client_id=client_id, credentials=self._credentials,
                                         timeout=timeout, allow_insecure_loopback=True, max_cache_entries=0)
        self._endpoint: str | None = None
        self._http = httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False,
                                       limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))

    async def exchange(self, subject_token: str, *, tool: str, scope: str | None = None,
                       actions: Sequence[str] | None = None,
                       arguments: Mapping[str, Any] | None = None) -> IssuedCapability:
        """As :meth:`ExchangeClient.exchange`, never cached; raises the SDK's ``ExchangeError`` tree."""
        prepared = _prepare(subject_token, tool=tool, audience=None, scope=scope, actions=actions, constraints=None,
                            arguments=arguments, actor_token=None, actor_token_type=None,
                            subject_token_type=ACCESS_TOKEN_TYPE)
        if self._endpoint is None:
            self._endpoint = await anyio.to_thread.run_sync(self._discovery._discover)
        auth_form, auth_headers = self._credentials._authenticate(self._client_id, self._endpoint)
        body = urlencode(prepared.form + auth_form).encode("ascii")
        headers = {"Content-Type": _FORM, "Accept": "application/json", "User-Agent": USER_AGENT, **auth_headers}
        sent_at = time.time()
        try:
            resp = await self._http.post(self._endpoint, content=body, headers=headers)
        except httpx.TimeoutException:
            raise IssuerUnavailable("no answer from the issuer in time") from None
        except httpx.HTTPError as e:
            raise IssuerUnavailable(f"cannot reach the issuer: {type(e).__name__}") from None
        head = Message()
        for name, value in resp.headers.multi_items():
            head[name] = value
        answer = Response(resp.status_code, head, resp.content[: MAX_BODY + 1])
        if resp.status_code == 200:
            return _parse_success(answer, sent_at, prepared)
        raise _error_from(answer, prepared.sensitive + self._credentials._sensitive())

    async def aclose(self) -> None:
        await self._http.aclose()
