"""``issuer gateway``: the MCP gateway under uvicorn, configured by options or ``GATEWAY_*`` variables.

The client secret and the session key are read from the environment only
(``GATEWAY_CLIENT_SECRET``, ``GATEWAY_SESSION_KEY``), so they never appear
in a process list or a shell history.
"""

from __future__ import annotations

import base64
import binascii
import copy
import logging
import os
import secrets
import sys
from typing import Any, NoReturn

import click

__all__ = ["PathOnly", "app_from_env", "gateway", "log_config"]


class PathOnly(logging.Filter):
    """uvicorn's access log without query strings: a token sent as ``?access_token=`` must reach no log.

    The gateway refuses such a request, but uvicorn writes the request line
    before anyone reads it. The record's arguments are ``(client, method,
    path with query, HTTP version, status)``; the query is cut from the path.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with :class:`PathOnly` on the access log (every worker builds its own)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["path_only"] = {"()": f"{__name__}.PathOnly"}
    config["handlers"]["access"].setdefault("filters", []).append("path_only")
    return config


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _session_key(value: str | None) -> bytes:
    """GATEWAY_SESSION_KEY: base64 or hex of at least 32 bytes; random (one replica only) when unset."""
    if not value:
        return secrets.token_bytes(32)
    for decode in (bytes.fromhex, base64.urlsafe_b64decode, base64.b64decode):
        try:
            key = decode(value + ("=" * (-len(value) % 4) if decode is not bytes.fromhex else ""))
        except (ValueError, binascii.Error):
            continue
        if len(key) >= 32:
            return key
    raise ValueError("GATEWAY_SESSION_KEY must be at least 32 bytes, hex or base64")


def _config(upstream: str, resource: str, issuer: str, upstream_resource: str, client_id: str, path: str,
            max_body: int, origins: tuple[str, ...], authorization_server: str | None) -> object:
    from .config import GatewayConfig

    return GatewayConfig(
        upstream=upstream, resource=resource, issuer=issuer, upstream_resource=upstream_resource,
        client_id=client_id, client_secret=os.environ.get("GATEWAY_CLIENT_SECRET", ""), path=path,
        max_body=max_body, session_key=_session_key(os.environ.get("GATEWAY_SESSION_KEY")),
        allowed_origins=origins, authorization_server=authorization_server,
    )


def app_from_env() -> object:
    """The uvicorn factory for ``--workers`` > 1: each worker builds its gateway from the same variables."""
    from .app import Gateway
    from .config import GatewayConfig

    env = os.environ
    config = _config(env["GATEWAY_UPSTREAM"], env["GATEWAY_RESOURCE"], env["GATEWAY_ISSUER"],
                     env["GATEWAY_UPSTREAM_RESOURCE"], env.get("GATEWAY_CLIENT_ID", "mcp-gateway"),
                     env.get("GATEWAY_PATH", "/mcp"), int(env.get("GATEWAY_MAX_BODY", "1048576")),
                     tuple(o for o in env.get("GATEWAY_ALLOWED_ORIGINS", "").split(",") if o),
                     env.get("GATEWAY_AUTHORIZATION_SERVER") or None)
    assert isinstance(config, GatewayConfig)
    return Gateway(config)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8090")
    return host.strip("[]"), int(port)


@click.command("gateway")
@click.option("--upstream", required=True, envvar="GATEWAY_UPSTREAM",
              help="The MCP server's Streamable HTTP endpoint, e.g. http://127.0.0.1:8082/mcp [env GATEWAY_UPSTREAM].")
@click.option("--resource", required=True, envvar="GATEWAY_RESOURCE",
              help="The gateway's resource URI: the `aud` users' tokens must carry, and the resource URI of its "
                   "client registration at the issuer [env GATEWAY_RESOURCE].")
@click.option("--listen", default="127.0.0.1:8090", show_default=True, envvar="GATEWAY_LISTEN",
              help="HOST:PORT to listen on [env GATEWAY_LISTEN].")
@click.option("--issuer", "issuer_url", required=True, envvar="GATEWAY_ISSUER",
              help="The issuer's URL [env GATEWAY_ISSUER].")
@click.option("--upstream-resource", required=True, envvar="GATEWAY_UPSTREAM_RESOURCE",
              help="The MCP server's resource URI as registered as a tool at the issuer: the `aud` of the "
                   "capabilities it receives [env GATEWAY_UPSTREAM_RESOURCE].")
@click.option("--client-id", default="mcp-gateway", show_default=True, envvar="GATEWAY_CLIENT_ID",
              help="The gateway's client id at the issuer; its secret comes from GATEWAY_CLIENT_SECRET.")
@click.option("--path", default="/mcp", show_default=True, envvar="GATEWAY_PATH",
              help="Path of the MCP endpoint the gateway serves [env GATEWAY_PATH].")
@click.option("--max-body", type=int, default=1024 * 1024, show_default=True, envvar="GATEWAY_MAX_BODY",
              help="Largest POST body accepted, bytes [env GATEWAY_MAX_BODY].")
@click.option("--allow-origin", "origins", multiple=True,
              help="A browser Origin allowed to call the gateway (repeat); requests with any other Origin are "
                   "refused (DNS-rebinding defence).")
@click.option("--authorization-server", default=None, envvar="GATEWAY_AUTHORIZATION_SERVER",
              help="Where users get their tokens, for the RFC 9728 metadata: their identity provider "
                   "(default: the issuer) [env GATEWAY_AUTHORIZATION_SERVER].")
@click.option("--workers", type=int, default=1, show_default=True, envvar="GATEWAY_WORKERS",
              help="uvicorn worker processes [env GATEWAY_WORKERS].")
def gateway(upstream: str, resource: str, listen: str, issuer_url: str, upstream_resource: str, client_id: str,
            path: str, max_body: int, origins: tuple[str, ...], authorization_server: str | None,
            workers: int) -> None:
    """Serve the MCP gateway: every tool call decided by the issuer, forwarded with a capability.

    An ASGI reverse proxy for MCP Streamable HTTP in front of an MCP server
    that does not verify capabilities itself. Users' tokens must carry
    --resource in `aud`; each tools/call, resources/read and prompts/get is a
    call-bound token exchange at the issuer, and the MCP server receives the
    capability, never the user's token. See docs/gateway.md.
    """
    import uvicorn

    from .app import Gateway
    from .config import GatewayConfig

    try:
        host, port = _listen(listen)
        config = _config(upstream, resource, issuer_url, upstream_resource, client_id, path, max_body, origins,
                         authorization_server)
    except ValueError as e:
        _fail(str(e))
    assert isinstance(config, GatewayConfig)
    if workers < 1:
        _fail("--workers must be at least 1")
    click.echo(f"MCP gateway on http://{host}:{port}{path} -> {upstream} (resource {resource}; client {client_id} "
               f"at {issuer_url})", err=True)
    if workers == 1:
        uvicorn.run(Gateway(config), host=host, port=port, log_level="info", timeout_graceful_shutdown=5,
                    proxy_headers=False, server_header=False, log_config=log_config())
        return
    # Workers rebuild the config from the environment; one session key for all of them.
    os.environ.update({"GATEWAY_UPSTREAM": upstream, "GATEWAY_RESOURCE": resource, "GATEWAY_ISSUER": issuer_url,
                       "GATEWAY_UPSTREAM_RESOURCE": upstream_resource, "GATEWAY_CLIENT_ID": client_id,
                       "GATEWAY_PATH": path, "GATEWAY_MAX_BODY": str(max_body),
                       "GATEWAY_ALLOWED_ORIGINS": ",".join(origins),
                       "GATEWAY_AUTHORIZATION_SERVER": authorization_server or ""})
    os.environ.setdefault("GATEWAY_SESSION_KEY", base64.urlsafe_b64encode(config.session_key).decode())
    uvicorn.run("issuer.gateway.command:app_from_env", factory=True, workers=workers, host=host, port=port,
                log_level="info", timeout_graceful_shutdown=5, proxy_headers=False, server_header=False,
                log_config=log_config())
