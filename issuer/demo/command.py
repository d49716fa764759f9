"""``issuer demo``: play the scenario (bare), or serve one demo server (``upstream``, ``mcp-server``).

The subcommands exist for a compose file, which runs each server as a
service; their options and ``DEMO_*`` variables are a stable interface
(docs/demo.md). The client secret is read from ``DEMO_CLIENT_SECRET`` so it
never appears in a process list or a shell history.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

__all__ = ["demo"]


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group("demo", invoke_without_command=True)
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Play the confused-deputy scenario end to end on 127.0.0.1 (development only).

    Starts a development-only identity provider, a throwaway issuer (its own
    database and keys in a temporary directory), a tickets and files API
    protected by the verifier SDK and an MCP server whose tools exchange the
    user's token for capabilities; plays the scenario, prints the transcript
    and the audit trail, and stops everything. Exits 0 only if every expected
    outcome happened. See docs/demo.md.
    """
    if ctx.invoked_subcommand is not None:
        return
    try:
        from .scenario import play

        code = play(click.echo)
    except KeyboardInterrupt:
        click.echo("error: interrupted; everything the demo started is stopped", err=True)
        sys.exit(130)
    except Exception as e:  # a stack that cannot start: one line, not a traceback
        _fail(f"the demo could not run: {type(e).__name__}: {e}", 1)
    if code:
        _fail("the demo did not go as expected (see RESULT above)", code)


_host = click.option("--host", default="127.0.0.1", show_default=True, envvar="DEMO_HOST",
                     help="Listen address [env DEMO_HOST].")
_issuer = click.option("--issuer", "issuer_url", required=True, envvar="DEMO_ISSUER",
                       help="The issuer's URL, exactly as capabilities carry it in `iss` [env DEMO_ISSUER].")


@demo.command("upstream")
@_host
@click.option("--port", type=int, default=8081, show_default=True, envvar="DEMO_PORT",
              help="Listen port [env DEMO_PORT].")
@_issuer
def upstream(host: str, port: int, issuer_url: str) -> None:
    """Serve the demo's tickets and files API, protected by the verifier SDK.

    Routes: GET /tickets?project=P (tool tickets), POST /files/read with
    {"path": ...} (tool files), GET /healthz.
    """
    from .servers import serve_wsgi
    from .upstream import UpstreamApi
    from .world import FILES_RESOURCE, TICKETS_RESOURCE

    try:
        api = UpstreamApi(issuer_url)
    except ValueError as e:
        _fail(f"--issuer: {e}")
    click.echo(f"demo tickets+files API on http://{host}:{port} (development only; audiences {TICKETS_RESOURCE} "
               f"and {FILES_RESOURCE}; issuer {issuer_url})", err=True)
    try:
        serve_wsgi(api.app, host, port)
    except KeyboardInterrupt:
        pass
    except OSError as e:
        _fail(f"cannot listen on {host}:{port}: {e.strerror or e}", 1)
    finally:
        api.close()


@demo.command("mcp-server")
@_host
@click.option("--port", type=int, default=8082, show_default=True, envvar="DEMO_PORT",
              help="Listen port [env DEMO_PORT].")
@_issuer
@click.option("--upstream", "upstream_url", required=True, envvar="DEMO_UPSTREAM",
              help="Base URL of `issuer demo upstream` [env DEMO_UPSTREAM].")
@click.option("--client-id", default="mcp-helpdesk", show_default=True, envvar="DEMO_CLIENT_ID",
              help="This server's client id at the issuer [env DEMO_CLIENT_ID].")
@click.option("--client-secret", required=True, envvar="DEMO_CLIENT_SECRET", show_envvar=True,
              help="Its client secret; set DEMO_CLIENT_SECRET rather than passing it here.")
@click.option("--idp", "idp_issuer", default=None, envvar="DEMO_IDP",
              help="Exact `iss` of the users' identity provider, whose signatures this server then checks itself "
                   "(default: none; the issuer checks them at every exchange) [env DEMO_IDP].")
@click.option("--idp-jwks", default=None, envvar="DEMO_IDP_JWKS",
              help="The provider's JWKS: a URL or a JWK Set file (default: from its OpenID discovery document) "
                   "[env DEMO_IDP_JWKS].")
@click.option("--resource", default=None, envvar="DEMO_RESOURCE",
              help="This server's resource URI, the `aud` users' tokens must carry "
                   "(default https://helpdesk-mcp.demo.example) [env DEMO_RESOURCE].")
def mcp_server(host: str, port: int, issuer_url: str, upstream_url: str, client_id: str, client_secret: str,
               idp_issuer: str | None, idp_jwks: str | None, resource: str | None) -> None:
    """Serve the demo's helpdesk MCP server (Streamable HTTP at /mcp, and GET /healthz).

    Its tools list_tickets(project) and read_file(path) exchange the caller's
    token at the issuer for a capability bound to the call, and call the
    upstream with that capability only.
    """
    from .mcp_server import MCP_PATH, build_mcp_app
    from .servers import serve_asgi
    from .world import MCP_RESOURCE

    try:
        app = build_mcp_app(issuer=issuer_url, upstream=upstream_url, client_id=client_id,
                            client_secret=client_secret, idp_issuer=idp_issuer, idp_jwks=idp_jwks,
                            resource=resource or MCP_RESOURCE, host=host)
    except (ValueError, TypeError, OSError) as e:
        _fail(str(e))
    click.echo(f"demo helpdesk MCP server on http://{host}:{port}{MCP_PATH} (development only; resource "
               f"{resource or MCP_RESOURCE}; client {client_id} at {issuer_url})", err=True)
    if idp_issuer is None:
        click.echo("user tokens: aud and exp checked here; signature and provider checked by the issuer at each "
                   "exchange (set DEMO_IDP to check signatures here too)", err=True)
    serve_asgi(app, host, port)
