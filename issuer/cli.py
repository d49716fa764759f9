"""The ``issuer`` command: admin verbs of DESIGN section 4.

Command bodies parse arguments and call :mod:`issuer.registry` (the same
service layer as the admin API); they hold no business logic. Bad input exits
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

from .errors import ConfigurationError
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
            more = len(getattr(e, "errors", ())) - 1
            _fail(f"{e} (and {more} more; fix this one first)" if more > 0 else str(e))
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

            self._db = Database(self.settings.database_url, pool_size=1)
        return self._db

    def keystore(self) -> Any:
        from .keys import KeyStore

        s = self.settings
        return KeyStore(s.keys_dir, retention=s.key_retention, refresh_interval=0)


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
    from .registry import add_idp

    jwks = _read_json(jwks_file) if jwks_file else None
    view = add_idp(
        env.db, name=name, issuer=issuer_url, jwks_uri=jwks_uri, jwks=jwks, algorithms=algorithms,
        subject_claim=subject_claim, groups_claim=groups_claim, attribute_claims=attributes, namespace=namespace,
        allow_insecure_loopback=env.settings.allow_insecure_loopback, http_timeout=env.settings.http_timeout,
    )
    click.echo(f"identity provider {view.name} added (issuer {view.issuer}, keys "
               f"{view.jwks_uri or 'inline'}, namespace {view.namespace})")


@idp.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def idp_list(env: _Env, as_json: bool) -> None:
    """List trusted identity providers."""
    from .registry import list_idps

    rows = [
        {"name": i.name, "issuer": i.issuer, "namespace": i.namespace, "jwks": i.jwks_uri or "inline",
         "algorithms": ",".join(i.algorithms), "groups_claim": i.groups_claim, "enabled": i.enabled}
        for i in list_idps(env.db)
    ]
    _emit(rows, as_json, ["name", "issuer", "namespace", "jwks", "algorithms", "groups_claim"])


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
    from .registry import ScopeSpec, add_tool

    by_scope: dict[str, list[str]] = {}
    for a in actions:
        scope, sep, acts = a.partition("=")
        if not sep or scope not in scopes or not acts:
            raise ConfigurationError(f"--action {a!r}: expected SCOPE=ACTION[,ACTION] for one of the --scope values")
        by_scope.setdefault(scope, []).extend(x for x in acts.split(",") if x)
    view = add_tool(env.db, name=name, resource_uri=resource, description=description, rate_limit=rate_limit,
                    redact_arguments=redact, hash_arguments=hashed,
                    scopes=[ScopeSpec(s, actions=tuple(by_scope.get(s, ()))) for s in scopes])
    click.echo(f"tool {view.name} added ({view.resource_uri}; scopes {' '.join(sorted(view.scopes))}); "
               "no one can reach it until a policy grants it")


@tool.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def tool_list(env: _Env, as_json: bool) -> None:
    """List tools and their scopes."""
    from .registry import list_tools

    rows = [{"name": t.name, "resource": t.resource_uri, "scopes": " ".join(sorted(t.scopes)), "status": t.status}
            for t in list_tools(env.db)]
    _emit(rows, as_json, ["name", "resource", "scopes", "status"])


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
@pass_env
@_guarded
def client_add(env: _Env, client_id: str, resource: str, tools: tuple[str, ...], auth_methods: tuple[str, ...],
               jwks_file: Path | None, max_lifetime: int | None, may_chain: bool, secret_stdin: bool,
               rate_limit: str | None) -> None:
    """Register an MCP server. Its secret is printed once and never stored."""
    from .registry import add_client

    secret = None
    if secret_stdin:
        secret = (sys.stdin.readline() if not sys.stdin.isatty() else getpass.getpass("client secret: ")).strip()
    view, shown = add_client(
        env.db, client_id=client_id, resource_uri=resource, tools=tools, pepper=env.keystore().pepper(),
        auth_methods=auth_methods, jwks=_read_json(jwks_file) if jwks_file else None,
        max_lifetime=max_lifetime, may_chain=may_chain, secret=secret, rate_limit=rate_limit,
    )
    click.echo(f"client {view.client_id} added (resource {view.resource_uri}; tools {' '.join(sorted(view.tools))})")
    if shown and not secret_stdin:
        click.echo(f"client_secret: {shown}")
        click.echo("store it now: it is not shown again", err=True)


@client.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def client_list(env: _Env, as_json: bool) -> None:
    """List clients (never their secrets)."""
    from .registry import list_clients

    rows = [{"client_id": c.client_id, "resource": c.resource_uri, "tools": " ".join(sorted(c.tools)),
             "auth": ",".join(c.auth_methods), "may_chain": c.may_chain, "max_lifetime": c.max_lifetime or ""}
            for c in list_clients(env.db)]
    _emit(rows, as_json, ["client_id", "resource", "tools", "auth", "may_chain"])


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
    from .registry import apply_policy

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"{file}: cannot read ({type(e).__name__})") from None
    version = apply_policy(env.db, text, source=str(file), created_by=created_by or getpass.getuser())
    click.echo(f"policy version {version} is active")


@policy.command("show")
@click.option("--version", "version", type=int, help="A past version (default: the active one).")
@click.option("--json", "as_json", is_flag=True, help="The canonical JSON form.")
@pass_env
@_guarded
def policy_show(env: _Env, version: int | None, as_json: bool) -> None:
    """Print the active (or a given) policy version."""
    from .registry import show_policy

    row = show_policy(env.db, version)
    if row is None:
        raise ConfigurationError(
            f"no policy version {version}" if version is not None else "no policy applied yet (all denied)"
        )
    applied_at = _utc(row.created_at)
    if as_json:
        doc = {"version": row.version, "applied_by": row.created_by, "applied_at": applied_at,
               **json.loads(row.canonical)}
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"# policy version {row.version}, applied by {row.created_by} at {applied_at}")
    click.echo(row.document.rstrip())


@policy.command("test")
@click.option("--sub", required=True, help="The user's subject, as the identity provider says it.")
@click.option("--idp", help="Identity provider name (needed when several are registered).")
@click.option("--groups", "groups", multiple=True, help="Groups (repeat, or comma-separated).")
@click.option("--claim", "claims", multiple=True, metavar="NAME=VALUE", help="An attribute claim (repeat).")
@click.option("--client", "client_id", required=True)
@click.option("--tool", "tool_name", required=True)
@click.option("--scope", "scopes", multiple=True, help="Requested scope (repeat; none = the default scopes).")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def policy_test(env: _Env, sub: str, idp: str | None, groups: tuple[str, ...], claims: tuple[str, ...],
                client_id: str, tool_name: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Show what the active policy decides for one request, and which rule decided."""
    from .exchange import explain
    from .keys import KeyStore
    from .registry import load_snapshot

    attrs: dict[str, Any] = {}
    for c in claims:
        k, sep, v = c.partition("=")
        if not sep or not k:
            raise ConfigurationError(f"--claim {c!r}: expected NAME=VALUE")
        attrs.setdefault(k, []).append(v)
    attributes = {k: [_claim_value(x) for x in v] if len(v) > 1 else _claim_value(v[0]) for k, v in attrs.items()}
    group_list = [g for item in groups for g in item.split(",") if g]
    pepper = KeyStore(env.settings.keys_dir, retention=env.settings.key_retention).pepper()
    result = explain(
        load_snapshot(env.db, pepper), sub=sub, idp=idp, groups=group_list, attributes=attributes,
        client_id=client_id, tool=tool_name, scopes=list(scopes) or None,
    )
    decision = result.decision
    granted = decision.granted and result.refusal is None
    reason = str(result.refusal.error) if result.refusal is not None else str(decision.reason)
    description = result.refusal.description if result.refusal is not None else decision.description
    out = {"decision": "granted" if granted else "denied", "reason": reason,
           "rule": decision.rule_id, "scopes": list(decision.scopes) if granted else [],
           "policy_version": decision.policy_version, "max_lifetime": decision.max_lifetime,
           "actions": list(result.actions), "constraints": result.constraints or {}, "description": description}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{'GRANTED' if granted else 'DENIED'} ({reason}) by rule {decision.rule_id or '-'} "
               f"in policy version {decision.policy_version}")
    if granted:
        click.echo(f"scopes: {' '.join(decision.scopes)}")
        if result.actions:
            click.echo(f"actions: {' '.join(result.actions)}")
        if result.constraints:
            click.echo(f"constraints: {json.dumps(result.constraints, sort_keys=True)}")
    else:
        click.echo(description)


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
    ]):
        f = opt(f)
    return f


def _when(value: str | None, name: str) -> Any:
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"{name}: {value!r} is not an ISO 8601 time such as 2026-11-25T10:00:00Z") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


@audit.command("verify")
@pass_env
@_guarded
def audit_verify(env: _Env) -> None:
    """Check every record's tag and every sealed range; exit 1 naming the first bad record."""
    from .audit_chain import verify_audit

    result = verify_audit(env.db, env.keystore().pepper())
    if not result.ok:
        click.echo(f"error: audit trail FAILED verification: {result.problem}", err=True)
        sys.exit(1)
    click.echo(f"audit trail verified: {result.rows} records, {result.sealed} sealed in "
               f"{result.checkpoints} checkpoints, {result.rows - result.sealed} awaiting the next seal")
    if result.head is not None:
        # Keep this line outside the database: a later verify whose head is older means the end was cut off.
        click.echo(f"head: record {result.head[0]} chain {result.head[1]}")


@audit.command("seal")
@pass_env
@_guarded
def audit_seal(env: _Env) -> None:
    """Seal every record old enough (the issuer also does this by itself while it serves)."""
    from .audit_chain import AuditSealer

    click.echo(f"sealed {AuditSealer(env.db, env.keystore().pepper()).seal_all()} records")


@audit.command("export")
@_audit_filters
@click.option("--since", help="ISO 8601 time (inclusive).")
@click.option("--until", help="ISO 8601 time (exclusive).")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@pass_env
@_guarded
def audit_export(env: _Env, since: str | None, until: str | None, fmt: str, sub: str | None,
                 client_id: str | None, tool: str | None, decision: str | None, reason: str | None) -> None:
    """Write matching records to stdout, oldest first, one JSON object per line."""
    from .audit import audit_row_dict, query_audit

    filters: dict[str, Any] = {"sub": sub, "client_id": client_id, "tool": tool, "decision": decision, "reason": reason}
    after = 0
    while rows := query_audit(env.db, since=_when(since, "--since"), until=_when(until, "--until"),
                              after_id=after, limit=1000, **filters):
        for row in rows:
            click.echo(json.dumps(audit_row_dict(row), sort_keys=True))
        after = rows[-1].id


@audit.command("tail")
@_audit_filters
@click.option("-n", "count", type=int, default=20, show_default=True, help="How many recent records first.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records as they are written.")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def audit_tail(env: _Env, count: int, follow: bool, as_json: bool, sub: str | None, client_id: str | None,
               tool: str | None, decision: str | None, reason: str | None) -> None:
    """Show the newest records; with --follow, keep watching."""
    import time

    from .audit import audit_row_dict, query_audit

    filters: dict[str, Any] = {"sub": sub, "client_id": client_id, "tool": tool, "decision": decision, "reason": reason}
    def show(row: Any) -> None:
        d = audit_row_dict(row)
        if as_json:
            click.echo(json.dumps(d, sort_keys=True))
        else:
            click.echo(f"{d['time']}  {d['decision']:<7} {d['reason']:<24} {d['sub'] or '-'}  via "
                       f"{d['client_id'] or '-'} -> {d['tool'] or '-'}  [{d['granted_scopes'] or ''}]")

    rows = list(reversed(query_audit(env.db, limit=max(count, 1), newest_first=True, **filters)))
    for row in rows[-count:] if count > 0 else []:
        show(row)
    after = rows[-1].id if rows else 0
    while follow:
        time.sleep(1.0)
        for row in query_audit(env.db, after_id=after, limit=1000, **filters):
            show(row)
            after = row.id


# ----------------------------------------------------------------------------- revocation


@cli.group()
def revoke() -> None:
    """Revoke capabilities: verifiers polling the revocation feed refuse them."""


@revoke.command("jti")
@click.argument("jti")
@click.option("--by", "revoked_by", default=None, help="Who revokes (default: the OS user).")
@pass_env
@_guarded
def revoke_jti(env: _Env, jti: str, revoked_by: str | None) -> None:
    """Revoke one capability by its `jti` (from the audit trail)."""
    from .revocation import RevocationList

    if not RevocationList(env.db).revoke_jti(jti, revoked_by or getpass.getuser()):
        raise ConfigurationError(f"no capability with jti {jti!r} was issued (see the audit trail)")
    click.echo(f"capability {jti} revoked")


@revoke.command("subject")
@click.argument("sub")
@click.option("--by", "revoked_by", default=None, help="Who revokes (default: the OS user).")
@pass_env
@_guarded
def revoke_subject(env: _Env, sub: str, revoked_by: str | None) -> None:
    """Revoke every capability of a user issued until now. SUB as capabilities carry it: NAMESPACE:SUB."""
    from .registry import list_idps
    from .revocation import RevocationList

    namespace, sep, raw = sub.partition(":")
    namespaces = sorted(i.namespace for i in list_idps(env.db))
    if not sep or not raw or namespace not in namespaces:
        raise ConfigurationError(
            f"{sub!r}: give the subject as capabilities carry it, NAMESPACE:SUB, with a namespace of {namespaces}"
        )
    RevocationList(env.db).revoke_subject(sub, revoked_by or getpass.getuser())
    click.echo(f"every capability of {sub} issued until now is revoked")


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
    from .app import JWKS_MAX_AGE

    info = env.keystore().rotate(alg, min_published=0 if force else JWKS_MAX_AGE)
    click.echo(f"active key is now {info.kid} ({info.alg}); the previous key stays published "
               f"for {env.settings.key_retention}s")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_env
@_guarded
def keys_list(env: _Env, as_json: bool) -> None:
    """List signing keys and their state (next, active, retired)."""
    rows = [{"kid": k.kid, "alg": k.alg, "state": k.state, "created_at": k.created_at,
             "retired_at": k.retired_at or ""} for k in env.keystore().infos()]
    _emit(rows, as_json, ["kid", "alg", "state", "created_at", "retired_at"])


# ----------------------------------------------------------------------------- helpers


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"{path}: not readable JSON ({type(e).__name__})") from None


def _claim_value(text: str) -> str | int | bool:
    """`--claim level=3` and `--claim admin=true` test rules on integer and boolean claims."""
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?(0|[1-9][0-9]{0,17})", text):  # "007" stays a string, as a JSON claim would
        return int(text)
    return text


def _utc(when: Any) -> str:
    """ISO 8601 in UTC; SQLite returns naive datetimes, which we store in UTC."""
    from datetime import UTC

    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return str(when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def _redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"


def main() -> None:
    cli(prog_name="issuer")
