"""The ``issuer`` command: admin verbs of DESIGN section 4.

Command bodies parse arguments and call :class:`issuer.admin.service.AdminService`
(the same service layer as the admin API); they hold no business logic. Bad input exits
2 with one line on stderr; an unavailable dependency exits 1.
"""

from __future__ import annotations

import getpass
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from .errors import ConfigurationError, describe
from .kernel import strictjson
from .settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _guarded(fn: F) -> F:
    """One-line errors instead of tracebacks for the failures an admin can cause."""
    import functools

    from sqlalchemy.exc import SQLAlchemyError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigurationError as e:
            _fail(describe(e))
        except SQLAlchemyError as e:
            hint = "" if fn.__name__ == "init" else "; run `issuer init`"
            _fail(f"database unavailable or not migrated ({type(e).__name__}){hint}", 1)
        except OSError as e:
            _fail(f"{e.filename or 'file'}: {e.strerror or type(e).__name__}", 1)

    return wrapper  # type: ignore[return-value]


class _Env:
    """Lazily built settings and database for one CLI invocation."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._db: Any = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings()
            except ConfigurationError as e:
                _fail(str(e))
        return self._settings

    @property
    def db(self) -> Any:
        if self._db is None:
            from .db import Database

            self._db = Database(self.settings.database_url, pool_size=1, timeout=self.settings.db_timeout)
        return self._db

    def keystore(self) -> Any:
        from .keys import KeyStore

        s = self.settings
        return KeyStore(s.keys_dir, retention=s.key_retention, refresh_interval=0)

    def service(self, by: str | None = None) -> Any:
        """The admin service, acting as ``cli:<OS user>`` (or who ``--by`` names) in the change log."""
        from .admin.service import AdminService

        return AdminService(self.db, self.keystore(), self.settings, actor=f"cli:{by or getpass.getuser()}")


pass_env = click.make_pass_decorator(_Env, ensure=True)


def _emit(rows: list[dict[str, Any]], as_json: bool, columns: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        click.echo("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcp-capability-issuer")
def cli() -> None:
    """Token-exchange and capability-token issuer for MCP deployments.

    Configuration comes from ISSUER_* environment variables (docs/operations.md).
    """


# ----------------------------------------------------------------------------- init / serve


@cli.command()
@click.option("--alg", type=click.Choice(["ES256", "EdDSA"]), default=None, help="Algorithm of new signing keys.")
@pass_env
@_guarded
def init(env: _Env, alg: str | None) -> None:
    """Migrate the database to the latest schema and create signing keys if there are none."""
    from .migrate import upgrade

    upgrade(env.settings.database_url)
    created = env.keystore().ensure(alg or env.settings.signing_alg)
    click.echo(f"database: migrated ({_redact_url(env.settings.database_url)})")
    click.echo(f"keys: {'created' if created else 'present'} in {env.settings.keys_dir}")


@cli.command()
@click.option("--host", default=None, help="Listen address (default ISSUER_HOST).")
@click.option("--port", type=int, default=None, help="Listen port (default ISSUER_PORT).")
@click.option("--workers", type=int, default=None, help="Worker processes (default ISSUER_WORKERS).")
@pass_env
@_guarded
def serve(env: _Env, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the issuer under gunicorn (the production WSGI server)."""
    from .wsgi import serve as run

    s = env.settings
    # Fail here, in one line, rather than in every worker after the fork.
    ks = env.keystore()
    ks.pepper()
    ks.signing_key()
    run(s, host=host or s.host, port=port or s.port, workers=workers or s.workers)


# ----------------------------------------------------------------------------- identity providers


@cli.group()
def idp() -> None:
    """Trusted identity providers (who may vouch for users)."""


@idp.command("add")
@click.argument("name")
@click.option("--issuer", "issuer_url", required=True, help="Exact `iss` of the provider's tokens.")
@click.option("--jwks-uri", help="The provider's JWKS (https). Default: found through its discovery document.")
@click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Inline JWK Set for air-gapped deployments.")
@click.option("--alg", "algorithms", multiple=True, default=("RS256", "ES256"), show_default=True,
              help="Allowed signing algorithm (repeat). Asymmetric only.")
@click.option("--subject-claim", default="sub", show_default=True)
@click.option("--groups-claim", default="groups", show_default=True)
@click.option("--attribute-claim", "attributes", multiple=True, help="A claim policy may match on (repeat).")
@click.option("--namespace", help="Prefix of this provider's subjects in capabilities (default: NAME).")
@pass_env
@_guarded
def idp_add(env: _Env, name: str, issuer_url: str, jwks_uri: str | None, jwks_file: Path | None,
            algorithms: tuple[str, ...], subject_claim: str, groups_claim: str, attributes: tuple[str, ...],
            namespace: str | None) -> None:
    """Trust an identity provider."""
    jwks = _read_json(jwks_file) if jwks_file else None
    view = env.service().add_idp(
        name=name, issuer=issuer_url, jwks_uri=jwks_uri, jwks=jwks, algorithms=algorithms,
        subject_claim=subject_claim, groups_claim=groups_claim, attribute_claims=attributes, namespace=namespace,
    )
    click.echo(f"identity provider {view['name']} added (issuer {view['issuer']}, keys "
               f"{view['jwks_uri'] or 'inline'}, namespace {view['namespace']})")


@idp.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def idp_list(env: _Env, as_json: bool) -> None:
    """List trusted identity providers."""
    rows = [
        {"name": i["name"], "issuer": i["issuer"], "namespace": i["namespace"], "jwks": i["jwks_uri"] or "inline",
         "algorithms": ",".join(i["algorithms"]), "groups_claim": i["groups_claim"], "enabled": i["enabled"]}
        for i in env.service().list_idps()
    ]
    _emit(rows, as_json, ["name", "issuer", "namespace", "jwks", "algorithms", "groups_claim"])


@idp.command("update")
@click.argument("name")
@click.option("--jwks-uri", help="New JWKS URL (https); replaces inline keys.")
@click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="New inline JWK Set; replaces the JWKS URL.")
@click.option("--alg", "algorithms", multiple=True, help="Allowed signing algorithm (repeat; replaces the list).")
@click.option("--subject-claim")
@click.option("--groups-claim")
@click.option("--attribute-claim", "attributes", multiple=True, help="A claim policy may match on (repeat; replaces).")
@pass_env
@_guarded
def idp_update(env: _Env, name: str, jwks_uri: str | None, jwks_file: Path | None, algorithms: tuple[str, ...],
               subject_claim: str | None, groups_claim: str | None, attributes: tuple[str, ...]) -> None:
    """Change how a provider's tokens are checked (its name, issuer and namespace stay)."""
    view = env.service().update_idp(
        name, jwks_uri=jwks_uri, jwks=_read_json(jwks_file) if jwks_file else None, algorithms=algorithms or None,
        subject_claim=subject_claim, groups_claim=groups_claim, attribute_claims=attributes or None,
    )
    click.echo(f"identity provider {view['name']} updated (keys {view['jwks_uri'] or 'inline'}, algorithms "
               f"{','.join(view['algorithms'])})")


@idp.command("disable")
@click.argument("name")
@pass_env
@_guarded
def idp_disable(env: _Env, name: str) -> None:
    """Refuse every token of this provider (a compromised provider) until it is enabled again."""
    env.service().set_idp_enabled(name, False)
    click.echo(f"identity provider {name} disabled")


@idp.command("enable")
@click.argument("name")
@pass_env
@_guarded
def idp_enable(env: _Env, name: str) -> None:
    """Accept a disabled provider's tokens again."""
    env.service().set_idp_enabled(name, True)
    click.echo(f"identity provider {name} enabled")


# ----------------------------------------------------------------------------- tools


@cli.group()
def tool() -> None:
    """Upstream tools (the audiences of capabilities)."""


@tool.command("add")
@click.argument("name")
@click.option("--resource", required=True, help="The tool's resource URI: the capability's `aud`.")
@click.option("--scope", "scopes", multiple=True, required=True, help="A scope the tool defines (repeat).")
@click.option("--action", "actions", multiple=True, metavar="SCOPE=ACTION[,ACTION]",
              help="Tool actions a scope covers (repeat).")
@click.option("--description", default="")
@click.option("--rate-limit", help="Exchanges per user for this tool, e.g. '60/minute;10/second' "
                                   "(default ISSUER_RATE_LIMIT; a policy rule may set its own).")
@click.option("--redact-argument", "redact", multiple=True, metavar="NAME",
              help="An argument whose value the audit trail never keeps (repeat; dotted for nested).")
@click.option("--hash-argument", "hashed", multiple=True, metavar="NAME",
              help="An argument the audit trail keeps only as a keyed hash (repeat).")
@pass_env
@_guarded
def tool_add(env: _Env, name: str, resource: str, scopes: tuple[str, ...], actions: tuple[str, ...],
             description: str, rate_limit: str | None, redact: tuple[str, ...], hashed: tuple[str, ...]) -> None:
    """Register a tool. Nobody can reach it until policy grants it."""
    view = env.service().add_tool(
        name=name, resource_uri=resource, description=description, rate_limit=rate_limit,
        redact_arguments=redact, hash_arguments=hashed, scopes=_scopes_with_actions(scopes, actions),
    )
    click.echo(f"tool {view['name']} added ({view['resource_uri']}; scopes "
               f"{' '.join(s['name'] for s in view['scopes'])}); no one can reach it until a policy grants it")


@tool.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def tool_list(env: _Env, as_json: bool) -> None:
    """List tools and their scopes."""
    rows = [{"name": t["name"], "resource": t["resource_uri"], "scopes": " ".join(s["name"] for s in t["scopes"]),
             "status": t["status"]} for t in env.service().list_tools()]
    _emit(rows, as_json, ["name", "resource", "scopes", "status"])


@tool.command("update")
@click.argument("name")
@click.option("--description")
@click.option("--rate-limit", help="Exchanges per user for this tool; '' removes the tool's own limit.")
@click.option("--redact-argument", "redact", multiple=True, metavar="NAME", help="Replaces the list (repeat).")
@click.option("--hash-argument", "hashed", multiple=True, metavar="NAME", help="Replaces the list (repeat).")
@click.option("--no-redact", is_flag=True, help="Keep every argument's value in the audit trail again.")
@click.option("--no-hash", is_flag=True, help="Keep no argument as a hash only.")
@click.option("--add-scope", "new_scopes", multiple=True, help="A new scope (repeat); existing scopes stay.")
@click.option("--action", "actions", multiple=True, metavar="SCOPE=ACTION[,ACTION]",
              help="Tool actions a new scope covers (repeat).")
@pass_env
@_guarded
def tool_update(env: _Env, name: str, description: str | None, rate_limit: str | None, redact: tuple[str, ...],
                hashed: tuple[str, ...], no_redact: bool, no_hash: bool, new_scopes: tuple[str, ...],
                actions: tuple[str, ...]) -> None:
    """Change a tool's description, rate limit or audit redaction, or add scopes (its name and resource stay)."""
    view = env.service().update_tool(
        name, description=description, rate_limit=rate_limit,
        redact_arguments=[] if no_redact else (redact or None), hash_arguments=[] if no_hash else (hashed or None),
        add_scopes=_scopes_with_actions(new_scopes, actions),
    )
    click.echo(f"tool {view['name']} updated (rate limit {view['rate_limit'] or 'default'})")


@tool.command("disable")
@click.argument("name")
@pass_env
@_guarded
def tool_disable(env: _Env, name: str) -> None:
    """Make a tool reachable by nobody, whatever policy says, until it is enabled again."""
    env.service().set_tool_enabled(name, False)
    click.echo(f"tool {name} disabled")


@tool.command("enable")
@click.argument("name")
@pass_env
@_guarded
def tool_enable(env: _Env, name: str) -> None:
    """Let policy grant a disabled tool again."""
    env.service().set_tool_enabled(name, True)
    click.echo(f"tool {name} enabled")


# ----------------------------------------------------------------------------- clients


@cli.group()
def client() -> None:
    """MCP-server clients (who may exchange tokens)."""


@client.command("add")
@click.argument("client_id")
@click.option("--resource", required=True, help="The client's own resource URI: user tokens must carry it in `aud`.")
@click.option("--tool", "tools", multiple=True,
              help="A tool this client may reach (repeat; none = it may only introspect and revoke).")
@click.option("--auth-method", "auth_methods", multiple=True,
              type=click.Choice(["client_secret_basic", "client_secret_post", "private_key_jwt"]),
              default=("client_secret_basic", "client_secret_post"), show_default=True)
@click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The client's public keys (private_key_jwt).")
@click.option("--max-lifetime", type=int, help="Lifetime ceiling for this client's capabilities, seconds.")
@click.option("--may-chain", is_flag=True, help="May present capabilities as subject tokens (delegation chains).")
@click.option("--secret-stdin", is_flag=True, help="Import an existing secret from stdin instead of generating one.")
@click.option("--rate-limit", help="Exchanges by this client across all its users, e.g. '6000/minute'.")
@click.option("--dpop-required", is_flag=True, help="Refuse exchanges without a DPoP proof (RFC 9449).")
@pass_env
@_guarded
def client_add(env: _Env, client_id: str, resource: str, tools: tuple[str, ...], auth_methods: tuple[str, ...],
               jwks_file: Path | None, max_lifetime: int | None, may_chain: bool, secret_stdin: bool,
               rate_limit: str | None, dpop_required: bool) -> None:
    """Register an MCP server. Its secret is printed once and never stored."""
    secret = None
    if secret_stdin:
        secret = (sys.stdin.readline() if not sys.stdin.isatty() else getpass.getpass("client secret: ")).strip()
    view, shown = env.service().add_client(
        client_id=client_id, resource_uri=resource, tools=tools, auth_methods=auth_methods,
        jwks=_read_json(jwks_file) if jwks_file else None, max_lifetime=max_lifetime, may_chain=may_chain,
        secret=secret, rate_limit=rate_limit, dpop_required=dpop_required,
    )
    click.echo(f"client {view['client_id']} added (resource {view['resource_uri']}; tools {' '.join(view['tools'])})")
    if shown:
        click.echo(f"client_secret: {shown}")
        click.echo("store it now: it is not shown again", err=True)


@client.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def client_list(env: _Env, as_json: bool) -> None:
    """List clients (never their secrets)."""
    rows = [{"client_id": c["client_id"], "resource": c["resource_uri"], "tools": " ".join(c["tools"]),
             "auth": ",".join(c["auth_methods"]), "may_chain": c["may_chain"], "max_lifetime": c["max_lifetime"] or "",
             "enabled": c["enabled"]}
            for c in env.service().list_clients()]
    _emit(rows, as_json, ["client_id", "resource", "tools", "auth", "may_chain", "enabled"])


@client.command("rotate-secret")
@click.argument("client_id")
@pass_env
@_guarded
def client_rotate_secret(env: _Env, client_id: str) -> None:
    """Replace a client's secret; the old one stops working on every replica within seconds."""
    secret = env.service().rotate_client_secret(client_id)
    click.echo(f"client_secret: {secret}")
    click.echo("store it now: it is not shown again; the previous secret no longer works", err=True)


@client.command("disable")
@click.argument("client_id")
@pass_env
@_guarded
def client_disable(env: _Env, client_id: str) -> None:
    """Refuse every exchange by this client (a compromised MCP server) until it is enabled again."""
    env.service().set_client_enabled(client_id, False)
    click.echo(f"client {client_id} disabled")


@client.command("enable")
@click.argument("client_id")
@pass_env
@_guarded
def client_enable(env: _Env, client_id: str) -> None:
    """Let a disabled client exchange tokens again."""
    env.service().set_client_enabled(client_id, True)
    click.echo(f"client {client_id} enabled")


@client.command("dpop")
@click.argument("client_id")
@click.argument("mode", type=click.Choice(["required", "optional"]))
@pass_env
@_guarded
def client_dpop(env: _Env, client_id: str, mode: str) -> None:
    """Require a DPoP proof on every exchange by this client (its capabilities are all key-bound), or not."""
    env.service().set_client_dpop_required(client_id, mode == "required")
    click.echo(f"client {client_id}: DPoP {mode}")


# ----------------------------------------------------------------------------- policy


@cli.group()
def policy() -> None:
    """Versioned, default-deny policy."""


@policy.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--by", "created_by", default=None, help="Who applies it (default: the OS user).")
@pass_env
@_guarded
def policy_apply(env: _Env, file: Path, created_by: str | None) -> None:
    """Validate FILE and make it the active policy (a new version)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"{file}: cannot read ({type(e).__name__})") from None
    version = env.service(created_by).apply_policy(text, source=str(file))
    click.echo(f"policy version {version} is active")


@policy.command("show")
@click.option("--version", "version", type=int, help="A past version (default: the active one).")
@click.option("--json", "as_json", is_flag=True, help="The canonical JSON form.")
@pass_env
@_guarded
def policy_show(env: _Env, version: int | None, as_json: bool) -> None:
    """Print the active (or a given) policy version."""
    row = env.service().show_policy(version)
    if as_json:
        doc = {"version": row["version"], "applied_by": row["applied_by"], "applied_at": row["applied_at"],
               **row["policy"]}
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"# policy version {row['version']}, applied by {row['applied_by']} at {row['applied_at']}")
    click.echo(row["document"].rstrip())


@policy.command("versions")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def policy_versions(env: _Env, as_json: bool) -> None:
    """List applied policy versions, newest first."""
    _emit(env.service().list_policy_versions(), as_json, ["version", "applied_by", "applied_at"])


@policy.command("diff")
@click.argument("old", type=int)
@click.argument("new", type=int, required=False)
@pass_env
@_guarded
def policy_diff(env: _Env, old: int, new: int | None) -> None:
    """Show what changed from version OLD to NEW (default: the active version)."""
    service = env.service()
    diff = service.diff_policy(old, new if new is not None else service.show_policy()["version"])
    click.echo(diff["diff"].rstrip() or f"versions {diff['from']} and {diff['to']} are identical")


@policy.command("test")
@click.option("--sub", required=True, help="The user's subject, as the identity provider says it.")
@click.option("--idp", help="Identity provider name (needed when several are registered).")
@click.option("--groups", "groups", multiple=True, help="Groups (repeat, or comma-separated).")
@click.option("--claim", "claims", multiple=True, metavar="NAME=VALUE", help="An attribute claim (repeat).")
@click.option("--client", "client_id", required=True)
@click.option("--tool", "tool_name", required=True)
@click.option("--scope", "scopes", multiple=True, help="Requested scope (repeat; none = the default scopes).")
@click.option("--arguments", "arguments_json", metavar="JSON",
              help="One call's arguments, checked against the filled constraints.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def policy_test(env: _Env, sub: str, idp: str | None, groups: tuple[str, ...], claims: tuple[str, ...],
                client_id: str, tool_name: str, scopes: tuple[str, ...], arguments_json: str | None,
                as_json: bool) -> None:
    """Show what the active policy decides for one request, and which rule decided."""
    attrs: dict[str, Any] = {}
    for c in claims:
        k, sep, v = c.partition("=")
        if not sep or not k:
            raise ConfigurationError(f"--claim {c!r}: expected NAME=VALUE")
        attrs.setdefault(k, []).append(v)
    attributes = {k: [_claim_value(x) for x in v] if len(v) > 1 else _claim_value(v[0]) for k, v in attrs.items()}
    group_list = [g for item in groups for g in item.split(",") if g]
    arguments = None
    if arguments_json is not None:
        try:
            arguments = strictjson.loads(arguments_json)
        except strictjson.StrictJSONError as e:
            raise ConfigurationError(f"--arguments: {e}") from None
        if not isinstance(arguments, dict):
            raise ConfigurationError("--arguments: must be a JSON object")
    out = env.service().test_policy(sub=sub, idp=idp, groups=group_list, claims=attributes, client_id=client_id,
                                    tool=tool_name, scopes=scopes, arguments=arguments)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    granted = out["decision"] == "granted"
    click.echo(f"{'GRANTED' if granted else 'DENIED'} ({out['reason']}) by rule {out['rule'] or '-'} "
               f"in policy version {out['policy_version']}")
    if granted:
        click.echo(f"scopes: {' '.join(out['scopes'])}")
        if out["actions"]:
            click.echo(f"actions: {' '.join(out['actions'])}")
        if out["constraints"]:
            click.echo(f"constraints: {json.dumps(out['constraints'], sort_keys=True)}")
    else:
        click.echo(out["description"])
    if out["arguments"] is not None:
        checked = out["arguments"]
        click.echo("arguments: admitted" if checked["admitted"] else
                   "arguments: refused: " + "; ".join(checked["violations"] or ["the request is denied"]))


# ----------------------------------------------------------------------------- audit


@cli.group()
def audit() -> None:
    """The audit trail: one record per exchange decision, tamper-evident."""


def _audit_filters(f: F) -> F:
    for opt in reversed([
        click.option("--sub", help="User, as capabilities carry it (NAMESPACE:SUB)."),
        click.option("--client", "client_id"),
        click.option("--tool"),
        click.option("--decision", type=click.Choice(["granted", "denied"])),
        click.option("--reason", help="e.g. scope_not_entitled, rate_limited"),
        click.option("--txn", help="One agent action: every hop of a delegation chain shares it."),
    ]):
        f = opt(f)
    return f


def _when(value: str | None, name: str) -> Any:
    from .admin.service import parse_time

    return parse_time(value, name)


@audit.command("verify")
@pass_env
@_guarded
def audit_verify(env: _Env) -> None:
    """Check every record's tag and every sealed range; exit 1 naming the first bad record."""
    result = env.service().verify_audit()
    if not result["ok"]:
        click.echo(f"error: audit trail FAILED verification: {result['problem']}", err=True)
        sys.exit(1)
    click.echo(f"audit trail verified: {result['rows']} records, {result['sealed']} sealed in "
               f"{result['checkpoints']} checkpoints, {result['rows'] - result['sealed']} awaiting the next seal; "
               f"{result['admin_changes']} admin changes")
    if result["head"] is not None:
        # Keep this line outside the database: a later verify whose head is older means the end was cut off.
        click.echo(f"head: record {result['head']['id']} chain {result['head']['chain']}")


@audit.command("seal")
@pass_env
@_guarded
def audit_seal(env: _Env) -> None:
    """Seal every record old enough (the issuer also does this by itself while it serves)."""
    click.echo(f"sealed {env.service().seal_audit()} records")


@audit.command("export")
@_audit_filters
@click.option("--since", help="ISO 8601 time (inclusive).")
@click.option("--until", help="ISO 8601 time (exclusive).")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@pass_env
@_guarded
def audit_export(env: _Env, /, since: str | None, until: str | None, fmt: str, **filters: str | None) -> None:
    """Write matching records to stdout, oldest first, one JSON object per line."""
    for row in env.service().export_audit(filters, since=_when(since, "--since"), until=_when(until, "--until")):
        click.echo(json.dumps(row, sort_keys=True))


@audit.command("tail")
@_audit_filters
@click.option("-n", "count", type=int, default=20, show_default=True, help="How many recent records first.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records as they are written.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def audit_tail(env: _Env, /, count: int, follow: bool, as_json: bool, **filters: str | None) -> None:
    """Show the newest records; with --follow, keep watching."""
    import time

    service = env.service()

    def show(d: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(d, sort_keys=True))
        else:
            # A refusal before the exchange keeps a client id that did not authenticate apart (actor).
            claimed = (d["actor"] or {}).get("claimed_client_id") if isinstance(d["actor"], dict) else None
            client = d["client_id"] or (f"claimed {claimed}" if claimed else "-")
            click.echo(f"{d['time']}  {d['decision']:<7} {d['reason']:<24} {d['sub'] or '-'}  via "
                       f"{client} -> {d['tool'] or '-'}  [{d['granted_scopes'] or ''}]")

    rows = list(reversed(service.query_audit(filters, limit=min(max(count, 1), 1000), newest_first=True)))
    for row in rows[-count:] if count > 0 else []:
        show(row)
    after = rows[-1]["id"] if rows else 0
    while follow:
        time.sleep(1.0)
        for row in service.query_audit(filters, after_id=after, limit=1000):
            show(row)
            after = row["id"]


@audit.command("changes")
@click.option("-n", "count", type=int, default=20, show_default=True, help="How many recent changes.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def audit_changes(env: _Env, count: int, as_json: bool) -> None:
    """Admin changes (registry, policy, keys, revocations, admin keys): who, what, before and after."""
    rows = list(reversed(env.service().list_changes(limit=min(max(count, 1), 1000), newest_first=True)))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    for r in rows:
        click.echo(f"{r['time']}  {r['action']:<22} {r['target']}  by {r['actor']}")


# ----------------------------------------------------------------------------- revocation


@cli.group()
def revoke() -> None:
    """Revoke capabilities: verifiers polling the revocation feed refuse them."""


def _dry_run(f: F) -> F:
    return click.option("--dry-run", is_flag=True, help="Only count the live capabilities it would void.")(f)


def _counted(env: _Env, dry_run: bool, **target: str) -> bool:
    """Print how many live capabilities the revocation reaches; True when that was all (a dry run)."""
    live = env.service().count_live(**target)
    click.echo(f"{live} live capabilities affected" + (" (dry run: nothing revoked)" if dry_run else ""))
    return dry_run


@revoke.command("jti")
@click.argument("jti")
@click.option("--by", "revoked_by", default=None, help="Who revokes (default: the OS user).")
@pass_env
@_guarded
@_dry_run
def revoke_jti(env: _Env, jti: str, revoked_by: str | None, dry_run: bool) -> None:
    """Revoke one capability by its `jti` (from the audit trail), and every capability chained from it."""
    if _counted(env, dry_run, jti=jti):
        return
    result = env.service(revoked_by).revoke_jti(jti)
    click.echo(f"capability {jti} revoked, with {len(result['chained'])} chained from it")


@revoke.command("subject")
@click.argument("sub")
@click.option("--by", "revoked_by", default=None, help="Who revokes (default: the OS user).")
@pass_env
@_guarded
@_dry_run
def revoke_subject(env: _Env, sub: str, revoked_by: str | None, dry_run: bool) -> None:
    """Revoke every capability of a user issued until now. SUB as capabilities carry it: NAMESPACE:SUB."""
    if _counted(env, dry_run, sub=sub):
        return
    env.service(revoked_by).revoke_subject(sub)
    click.echo(f"every capability of {sub} issued until now is revoked")


@revoke.command("client")
@click.argument("client_id")
@click.option("--by", "revoked_by", default=None, help="Who revokes (default: the OS user).")
@pass_env
@_guarded
@_dry_run
def revoke_client(env: _Env, client_id: str, revoked_by: str | None, dry_run: bool) -> None:
    """Revoke every capability issued until now with CLIENT_ID anywhere in its act chain (a compromised
    MCP server). Disable the client too (`issuer client disable`) to stop new exchanges."""
    if _counted(env, dry_run, client_id=client_id):
        return
    env.service(revoked_by).revoke_client(client_id)
    click.echo(f"every capability through client {client_id} issued until now is revoked")


# ----------------------------------------------------------------------------- keys


@cli.group()
def keys() -> None:
    """Capability signing keys."""


@keys.command("rotate")
@click.option("--alg", type=click.Choice(["ES256", "EdDSA"]), help="Algorithm of the new next key.")
@click.option("--force", is_flag=True,
              help="Rotate even if the next key was published less than the JWKS max-age ago (a leaked key).")
@pass_env
@_guarded
def keys_rotate(env: _Env, alg: str | None, force: bool) -> None:
    """Start signing with the pre-published next key; publish a fresh next key."""
    info = env.service().rotate_keys(alg, force=force)
    click.echo(f"active key is now {info['active']} ({info['alg']}); the previous key stays published "
               f"for {info['previous_published_for']}s")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def keys_list(env: _Env, as_json: bool) -> None:
    """List signing keys and their state (next, active, retired)."""
    _emit(env.service().list_keys(), as_json, ["kid", "alg", "state", "created_at", "retired_at"])


# ----------------------------------------------------------------------------- status


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def status(env: _Env, as_json: bool) -> None:
    """Readiness, the active policy, signing keys, the last hour's decisions and the audit chain."""
    out = env.service().overview()
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo("readiness: " + ", ".join(f"{k} {v}" for k, v in out["readiness"].items()))
    click.echo(f"policy: version {out['policy_version']}" if out["policy_version"] else "policy: none (all denied)")
    rotation = out["rotation"]
    when = "now" if rotation["rotation_ready"] else f"from {rotation['rotation_ready_at']}"
    click.echo(f"signing key: {rotation['active']}; next {rotation['next']}, rotation safe {when}")
    ex = out["exchanges"]
    click.echo(f"last hour: {ex['totals']['granted']} granted, {ex['totals']['denied']} denied, "
               f"{ex['rate_limited']} refused by a rate limit")
    audit = out["audit"]
    if audit is None:
        click.echo(f"audit chain: {out['audit_size']} records; run `issuer audit verify` to check them")
    else:
        click.echo(f"audit chain: {'verified' if audit['ok'] else 'FAILED: ' + str(audit['problem'])} "
                   f"({audit['rows']} records)")


# ----------------------------------------------------------------------------- admin keys


@cli.group("admin-key")
def admin_key() -> None:
    """Keys for the admin REST API (/admin/v1): `admin` may change things, `auditor` only reads."""


@admin_key.command("create")
@click.option("--role", type=click.Choice(["admin", "auditor"]), required=True)
@click.option("--name", required=True, help="Who or what holds the key (shown in the change log).")
@pass_env
@_guarded
def admin_key_create(env: _Env, role: str, name: str) -> None:
    """Create an admin key. It is printed once; only its hash is stored."""
    info, key = env.service().create_admin_key(name=name, role=role)
    click.echo(f"admin key {info['key_id']} ({role}) created for {name}")
    click.echo(f"admin_key: {key}")
    click.echo("store it now: it is not shown again", err=True)


@admin_key.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def admin_key_list(env: _Env, as_json: bool) -> None:
    """List admin keys (never the keys themselves)."""
    _emit(env.service().list_admin_keys(), as_json, ["key_id", "name", "role", "created_at", "revoked_at"])


@admin_key.command("revoke")
@click.argument("key_id")
@pass_env
@_guarded
def admin_key_revoke(env: _Env, key_id: str) -> None:
    """Revoke an admin key at once."""
    env.service().revoke_admin_key(key_id)
    click.echo(f"admin key {key_id} revoked")


# ----------------------------------------------------------------------------- helpers


def _scopes_with_actions(scopes: tuple[str, ...], actions: tuple[str, ...]) -> list[dict[str, Any]]:
    """--scope (or --add-scope) values with the tool actions --action SCOPE=ACTION[,ACTION] gives them."""
    by_scope: dict[str, list[str]] = {}
    for a in actions:
        scope, sep, acts = a.partition("=")
        if not sep or scope not in scopes or not acts:
            raise ConfigurationError(f"--action {a!r}: expected SCOPE=ACTION[,ACTION] for one of the --scope values")
        by_scope.setdefault(scope, []).extend(x for x in acts.split(",") if x)
    return [{"name": s, "actions": by_scope.get(s, [])} for s in scopes]


def _read_json(path: Path) -> Any:
    try:
        return strictjson.loads(path.read_bytes())
    except OSError as e:
        raise ConfigurationError(f"{path}: not readable ({type(e).__name__})") from None
    except strictjson.StrictJSONError as e:
        raise ConfigurationError(f"{path}: {e}") from None


def _claim_value(text: str) -> str | int | bool:
    """`--claim level=3` and `--claim admin=true` test rules on integer and boolean claims."""
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?(0|[1-9][0-9]{0,17})", text):  # "007" stays a string, as a JSON claim would
        return int(text)
    return text


def _redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"


from .demo.command import demo as _demo  # noqa: E402  (after every verb defined above)
from .gateway.command import gateway as _gateway  # noqa: E402

cli.add_command(_demo)
cli.add_command(_gateway)


def main() -> None:
    cli(prog_name="issuer")
