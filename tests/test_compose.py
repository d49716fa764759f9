"""docker-compose.yml against the code: no Docker engine needed, and a renamed setting breaks it.

The compose file is the documented way to run the issuer as several processes
(docs/operations.md). Nothing runs it in CI, so this test reads it and checks
every service against what the code really accepts:

* the command of every service built from our Dockerfile parses against the
  real ``issuer`` click tree (subcommands resolved, unknown options fail);
* every ``ISSUER_*`` variable is a field of :class:`issuer.settings.Settings`
  (names derived from the model's ``env_prefix``, as pydantic-settings does)
  and the values load; every other variable is the envvar of an option of the
  command the service runs (``DEMO_*``);
* ports agree: the balancer's ``server`` lines name every ``issuer serve``
  service at its ``ISSUER_PORT``, health-check URLs use the port the service
  listens on, ISSUER_URL is the port published for the balancer, and the demo
  services point at that issuer and at the upstream's port;
* ``depends_on`` and ``network_mode`` name services that exist, the replicas
  wait for the one-shot ``issuer init`` and share its key volume, and every
  service but that one-shot has a health check.

:func:`check` returns findings instead of asserting, so the tests at the end
can feed it broken compose files and show that each rule can fail.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from pydantic import BaseModel, create_model

from issuer.cli import cli as issuer_cli
from issuer.errors import ConfigurationError
from issuer.loopback import is_loopback
from issuer.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
HEALTH_PATHS = {"/healthz", "/readyz"}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

Finding = tuple[str, str]  # (service or "", message)


# --------------------------------------------------------------------------- reading compose


def settings_env_names(model: type[BaseModel] = Settings) -> dict[str, str]:
    """Environment variable -> Settings field, derived from the model's own configuration."""
    prefix = str(model.model_config.get("env_prefix", ""))
    names = {}
    for name, field in model.model_fields.items():
        alias = field.validation_alias or field.alias
        names[(alias if isinstance(alias, str) else prefix + name).upper()] = name
    return names


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution, with the file's defaults (the test does not read the shell's)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        value = env.get(name)
        if (op in (":-", ":?") and not value) or (op in ("-", "?") and value is None):
            if op.endswith("?"):
                raise ValueError(f"${{{name}}} is required: {arg}")
            return arg
        return value or ""

    return _VAR.sub(sub, value)


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): interpolate("" if v is None else str(v), {}) for k, v in raw.items()}


def argv_of(service: Mapping[str, Any]) -> list[str] | None:
    command = service.get("command")
    if command is None:
        return None
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return [interpolate(a, {}) for a in args]


def dockerfile_env(text: str) -> dict[str, str]:
    """``ENV K=V ...`` instructions of our Dockerfile: part of every issuer service's environment."""
    env: dict[str, str] = {}
    for line in text.replace("\\\n", " ").splitlines():
        words = line.strip().split(None, 1)
        if len(words) == 2 and words[0].upper() == "ENV":
            for token in shlex.split(words[1]):
                key, sep, value = token.partition("=")
                if sep:
                    env[key] = value
    return env


def health_urls(service: Mapping[str, Any]) -> list[str]:
    test = (service.get("healthcheck") or {}).get("test") or []
    text = test if isinstance(test, str) else " ".join(str(t) for t in test)
    return re.findall(r"https?://[^\s'\"]+", text)


def depends_of(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def published(service: Mapping[str, Any]) -> list[tuple[int | None, int]]:
    """(host port, container port) of every ``ports`` entry in short syntax."""
    result = []
    for entry in service.get("ports") or []:
        parts = interpolate(str(entry), {}).split("/")[0].split(":")
        container = int(parts[-1])
        host = int(parts[-2]) if len(parts) >= 2 and parts[-2] else None
        result.append((host, container))
    return result


def named_volume_at(service: Mapping[str, Any], target: str) -> str | None:
    for entry in service.get("volumes") or []:
        source, _, rest = str(entry).partition(":")
        if rest.split(":")[0] == target and not source.startswith((".", "/")):
            return source
    return None


def bind_mounts(service: Mapping[str, Any]) -> list[str]:
    return [str(v).split(":")[0] for v in service.get("volumes") or [] if str(v).startswith((".", "/"))]


# --------------------------------------------------------------------------- the click tree


def _remaining(ctx: click.Context) -> list[str]:
    protected = getattr(ctx, "_protected_args", None)  # click >= 8.2 keeps them here
    return [*(protected if protected is not None else ctx.protected_args), *ctx.args]


@contextmanager
def process_env(env: Mapping[str, str]) -> Iterator[None]:
    """The service's environment instead of the test runner's ISSUER_*/DEMO_* variables."""
    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            if name.startswith(("ISSUER_", "DEMO_")):
                del os.environ[name]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def resolve(args: list[str], root: click.Command) -> tuple[list[str], list[click.Command], click.Context]:
    """Parse ``issuer ...`` like click would: the subcommand path, the commands on it, the leaf's context."""
    cmd, name, ctx, rest = root, "issuer", None, list(args)
    path: list[str] = []
    chain: list[click.Command] = [root]
    while True:
        ctx = cmd.make_context(name, rest, parent=ctx)
        if not isinstance(cmd, click.Group):
            return path, chain, ctx
        remaining = _remaining(ctx)
        if not remaining:
            if cmd.invoke_without_command:
                return path, chain, ctx
            raise click.UsageError("missing command", ctx)
        sub_name, sub, rest = cmd.resolve_command(ctx, remaining)
        assert sub is not None and sub_name is not None
        path.append(sub_name)
        chain.append(sub)
        cmd, name = sub, sub_name


def option_envvars(chain: list[click.Command]) -> set[str]:
    names: set[str] = set()
    for cmd in chain:
        for p in cmd.params:
            if isinstance(p, click.Option) and p.envvar:
                names.update([p.envvar] if isinstance(p.envvar, str) else p.envvar)
    return names


# --------------------------------------------------------------------------- the balancer


def parse_haproxy(text: str) -> dict[str, Any]:
    binds, servers, checks = [], [], []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "bind":
            binds.append(int(words[1].rsplit(":", 1)[1]))
        elif words[0] == "server" and len(words) >= 3:
            host, _, port = words[2].rpartition(":")
            servers.append((words[1], host, int(port)))
        elif words[:2] == ["option", "httpchk"]:
            checks.append(words[-1])
    return {"binds": binds, "servers": servers, "checks": checks}


# --------------------------------------------------------------------------- the checker


def check(
    compose: Mapping[str, Any],
    *,
    read: Callable[[str], str] | None = None,
    root: click.Command = issuer_cli,
    image_env: Mapping[str, str] | None = None,
    settings_model: type[BaseModel] = Settings,
) -> list[Finding]:
    """Everything in ``compose`` that the code would not accept, as (service, message) pairs."""
    read = read or (lambda rel: (ROOT / rel).read_text(encoding="utf-8"))
    if image_env is None:
        image_env = dockerfile_env(DOCKERFILE.read_text(encoding="utf-8"))
    services: dict[str, Any] = dict(compose.get("services") or {})
    env_names = settings_env_names(settings_model)
    findings: list[Finding] = []
    ours = {name for name, s in services.items() if "build" in s}
    our_images = {services[n].get("image") for n in ours} - {None}
    ours |= {name for name, s in services.items() if s.get("image") in our_images}

    # Facts per service, filled in the first pass and cross-checked in the second.
    paths: dict[str, list[str]] = {}
    params: dict[str, dict[str, Any]] = {}  # service -> {"--flag": parsed value} of the command it runs
    settings: dict[str, Settings] = {}
    listen: dict[str, tuple[str, int]] = {}

    for name in ours:
        svc = services[name]
        args = argv_of(svc)
        if not args or args[0] != "issuer":
            findings.append((name, f"command must start with `issuer`, not {args!r}"))
            continue
        own_env = environment_of(svc)
        env = {**image_env, **own_env}
        with process_env(env):
            try:
                path, chain, ctx = resolve(args[1:], root)
            except click.ClickException as e:
                findings.append((name, f"`{shlex.join(args)}` does not parse: {e.format_message()}"))
                continue
            try:
                settings[name] = load_settings()
            except ConfigurationError as e:
                findings.append((name, f"settings do not load: {e}"))
        # Options by their flag (`--port`), whatever the parameter's Python name is.
        flags = {opt: ctx.params.get(str(p.name)) for p in chain[-1].params if isinstance(p, click.Option)
                 for opt in p.opts}
        paths[name], params[name] = path, flags
        allowed = option_envvars(chain)
        for var in sorted(set(image_env) | set(own_env)):
            source = "Dockerfile ENV" if var not in own_env else "environment"
            if var.startswith("ISSUER_"):
                if var not in env_names:
                    findings.append((name, f"{source} {var} is not a Settings field (known: {sorted(env_names)})"))
            elif var in own_env and var not in allowed:
                findings.append((name, f"environment {var} is not the envvar of any option of "
                                       f"`issuer {' '.join(path)}` (known: {sorted(allowed)})"))
        port, host = flags.get("--port"), flags.get("--host")
        if path == ["serve"] and name in settings:
            port = port or settings[name].port
            host = host or settings[name].host
        if isinstance(port, int):
            listen[name] = (str(host or ""), port)

    def is_init(n: str) -> bool:
        return paths.get(n) == ["init"]

    serving = sorted(n for n in paths if paths[n] == ["serve"])

    for name, svc in services.items():
        # depends_on and network_mode name services that exist.
        for dep, condition in depends_of(svc).items():
            if dep not in services:
                findings.append((name, f"depends_on names {dep!r}, which is not a service"))
            elif condition not in DEPENDS_CONDITIONS:
                findings.append((name, f"depends_on {dep}: unknown condition {condition!r}"))
            elif condition == "service_healthy" and not services[dep].get("healthcheck"):
                findings.append((name, f"waits for {dep} to be healthy, but {dep} has no healthcheck"))
            elif condition == "service_completed_successfully" and not is_init(dep):
                findings.append((name, f"waits for {dep} to complete, but {dep} is not the one-shot `issuer init`"))
        mode = str(svc.get("network_mode") or "")
        if mode.startswith("service:") and mode.split(":", 1)[1] not in services:
            findings.append((name, f"network_mode names {mode.split(':', 1)[1]!r}, which is not a service"))
        # Every long-running service has a health check.
        hc = svc.get("healthcheck") or {}
        if not is_init(name) and (not hc.get("test") or hc.get("disable") or hc.get("test") == ["NONE"]):
            findings.append((name, "has no healthcheck"))
        # Health checks of our services ask our health routes, on the port the service listens on.
        if name in ours:
            for url in health_urls(svc):
                parts = urlsplit(url)
                if not is_loopback(parts.hostname) and parts.hostname != "127.0.0.1":
                    findings.append((name, f"healthcheck {url} must ask the container itself (127.0.0.1)"))
                if parts.path not in HEALTH_PATHS:
                    findings.append((name, f"healthcheck {url} is not one of {sorted(HEALTH_PATHS)}"))
                if name in listen and parts.port != listen[name][1]:
                    findings.append((name, f"healthcheck {url} uses port {parts.port}, but the service listens "
                                           f"on {listen[name][1]}"))

    # The replicas: one issuer URL, the one-shot init first, the same key volume.
    urls = {settings[n].url for n in serving + [n for n in paths if is_init(n)] if n in settings}
    if len(urls) > 1:
        findings.append(("", f"issuer services disagree on ISSUER_URL: {sorted(urls)}"))
    issuer_url = next(iter(urls)) if len(urls) == 1 else None
    inits = [n for n in paths if is_init(n)]
    if serving and not inits:
        findings.append(("", "no one-shot `issuer init` service"))
    for name in serving:
        deps = depends_of(services[name])
        if not any(deps.get(i) == "service_completed_successfully" for i in inits):
            findings.append((name, "must wait for `issuer init` (condition: service_completed_successfully)"))
        host = listen.get(name, ("", 0))[0]
        if is_loopback(host) or host == "":
            findings.append((name, f"listens on {host or 'ISSUER_HOST'!r}: the balancer cannot reach it"))
    for name in serving + inits:
        if name not in settings:
            continue
        keys_dir = str(settings[name].keys_dir)
        volume = named_volume_at(services[name], keys_dir)
        if volume is None:
            findings.append((name, f"ISSUER_KEYS_DIR {keys_dir} is not a named volume"))
        elif name not in inits and inits and inits[0] in settings and \
                volume != named_volume_at(services[inits[0]], str(settings[inits[0]].keys_dir)):
            findings.append((name, f"key volume {volume!r} is not the one `issuer init` writes"))
        # The database and Redis are services of this file, and the replicas wait for them.
        for url in (settings[name].database_url, settings[name].redis_url):
            host_name = urlsplit(url).hostname
            if url and host_name and host_name not in services:
                findings.append((name, f"{url.split('@')[-1]}: host {host_name!r} is not a service"))
            elif url and host_name and name in serving and depends_of(services[name]).get(host_name) != \
                    "service_healthy":
                findings.append((name, f"must wait for {host_name} to be healthy"))

    # The balancer: every replica at its real port, health-checked, and the port ISSUER_URL names.
    balancers = [n for n, s in services.items() if str(s.get("image", "")).startswith("haproxy")]
    if serving and not balancers:
        findings.append(("", "no load balancer in front of the replicas"))
    for lb in balancers:
        configs = [m for m in bind_mounts(services[lb]) if m.endswith(".cfg")]
        if not configs:
            findings.append((lb, "no haproxy.cfg is mounted"))
            continue
        cfg = parse_haproxy(read(configs[0].removeprefix("./")))
        targets = {host for _, host, _ in cfg["servers"]}
        for _, host, port in cfg["servers"]:
            if host not in serving:
                findings.append((lb, f"server {host}:{port} is not an `issuer serve` service"))
            elif port != listen.get(host, ("", None))[1]:
                findings.append((lb, f"server {host}:{port}, but {host} listens on {listen.get(host, ('', None))[1]}"))
        for name in serving:
            if name not in targets:
                findings.append((lb, f"replica {name} is not a server of the balancer"))
        for path in cfg["checks"]:
            if path not in HEALTH_PATHS:
                findings.append((lb, f"option httpchk {path} is not one of {sorted(HEALTH_PATHS)}"))
        for url in health_urls(services[lb]):
            if urlsplit(url).port not in cfg["binds"]:
                findings.append((lb, f"healthcheck {url} is not a port the balancer binds ({cfg['binds']})"))
        sharing = [n for n, s in services.items() if s.get("network_mode") == f"service:{lb}"]
        for _, container in published(services[lb]):
            owners = [n for n in sharing if listen.get(n, ("", None))[1] == container]
            if container in cfg["binds"]:
                continue
            if not owners:
                findings.append((lb, f"publishes {container}, which neither the balancer nor a service in its "
                                     "network namespace listens on"))
            for owner in owners:
                if is_loopback(listen[owner][0]):
                    findings.append((owner, f"listens on {listen[owner][0]}, but port {container} is published"))
        if issuer_url:
            parts = urlsplit(issuer_url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            if is_loopback(parts.hostname) and not any(
                h == port and c in cfg["binds"] for h, c in published(services[lb])
            ):
                findings.append((lb, f"ISSUER_URL {issuer_url} names port {port}, which is not published "
                                     f"to a port the balancer binds ({cfg['binds']})"))

    # The demo services talk to that issuer, and the MCP server to the upstream in its namespace.
    for name, p in params.items():
        if issuer_url and p.get("--issuer") and str(p["--issuer"]).rstrip("/") != issuer_url:
            findings.append((name, f"--issuer {p['--issuer']} is not ISSUER_URL {issuer_url}"))
        upstream = p.get("--upstream")
        if upstream:
            parts = urlsplit(str(upstream))
            mode = services[name].get("network_mode")
            peers = [n for n in params if paths[n][-1:] == ["upstream"] and services[n].get("network_mode") == mode]
            if not any(listen.get(n, ("", None))[1] == parts.port for n in peers):
                findings.append((name, f"--upstream {upstream}: no `issuer demo upstream` listens on port "
                                       f"{parts.port} in this network namespace"))
    return findings


# --------------------------------------------------------------------------- the real file


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


COMPOSE = load_compose()


def test_compose_file_has_the_services_the_deployment_needs() -> None:
    services = COMPOSE["services"]
    images = " ".join(str(s.get("image", "")) for s in services.values())
    assert "postgres" in images and "redis" in images and "haproxy" in images
    commands = [argv_of(s) for s in services.values()]
    assert commands.count(["issuer", "init"]) == 1
    assert commands.count(["issuer", "serve"]) == 2
    demo = [c[:3] for c in commands if c and c[:2] == ["issuer", "demo"]]
    assert sorted(demo) == [["issuer", "demo", "mcp-server"], ["issuer", "demo", "upstream"]]


def test_dockerfile_env_names_settings() -> None:
    env = dockerfile_env(DOCKERFILE.read_text(encoding="utf-8"))
    assert env, "the Dockerfile sets no ENV"
    issuer_vars = {k for k in env if k.startswith("ISSUER_")}
    assert issuer_vars <= set(settings_env_names()), issuer_vars - set(settings_env_names())


def test_whole_file_checks() -> None:
    """Findings that belong to no single service (one ISSUER_URL, an init service, a balancer)."""
    assert [m for s, m in check(COMPOSE) if s == ""] == []


@pytest.mark.parametrize("service", sorted(COMPOSE["services"]))
def test_service_matches_the_code(service: str) -> None:
    assert [m for s, m in check(COMPOSE) if s == service] == []


# --------------------------------------------------------------------------- the checker can fail


def broken(edit: Callable[[dict[str, Any]], None]) -> list[str]:
    compose = copy.deepcopy(COMPOSE)
    # Only the issuer part, so that these tests do not depend on `issuer demo` existing.
    for name in [n for n, s in compose["services"].items() if (argv_of(s) or [""])[:2] == ["issuer", "demo"]]:
        del compose["services"][name]
    compose["services"]["lb"]["ports"] = [p for p in compose["services"]["lb"]["ports"] if "9100" not in str(p)]
    for svc in compose["services"].values():
        for dep in [d for d in depends_of(svc) if d not in compose["services"]]:
            del svc["depends_on"][dep]
    assert check(compose) == [], "the issuer part of the real file must pass before it is broken"
    edit(compose)
    return [f"{s}: {m}" for s, m in check(compose)]


def replica(compose: dict[str, Any], name: str = "issuer-1") -> dict[str, Any]:
    svc = copy.deepcopy(compose["services"][name])  # the replicas share one YAML anchor
    compose["services"][name] = svc
    return svc


def rewrite_healthcheck(svc: dict[str, Any], old: str, new: str) -> None:
    svc["healthcheck"] = {**svc["healthcheck"], "test": [t.replace(old, new) for t in svc["healthcheck"]["test"]]}


def test_a_misspelled_setting_is_found() -> None:
    def edit(c: dict[str, Any]) -> None:
        env = replica(c)["environment"]
        env["ISSUER_DATABSE_URL"] = env.pop("ISSUER_DATABASE_URL")

    found = broken(edit)
    assert any("ISSUER_DATABSE_URL is not a Settings field" in f for f in found), found


def test_a_renamed_settings_field_is_found() -> None:
    """As if `trusted_proxies` were renamed in issuer/settings.py while the compose file kept the old name."""
    fields: dict[str, Any] = {
        ("forwarding_proxies" if n == "trusted_proxies" else n): (f.annotation, f)
        for n, f in Settings.model_fields.items()
    }
    renamed = create_model("RenamedSettings", __config__=Settings.model_config, **fields)
    assert "ISSUER_FORWARDING_PROXIES" in settings_env_names(renamed)
    found = [f"{s}: {m}" for s, m in check(COMPOSE, settings_model=renamed)]
    expected = "issuer-1: environment ISSUER_TRUSTED_PROXIES is not a Settings field"
    assert any(f.startswith(expected) for f in found), found


def test_a_bad_setting_value_is_found() -> None:
    found = broken(lambda c: replica(c)["environment"].update(ISSUER_TOKEN_LIFETIME="3600"))
    assert any("ISSUER_TOKEN_LIFETIME" in f and "settings do not load" in f for f in found), found


def test_an_unknown_option_is_found() -> None:
    found = broken(lambda c: replica(c).update(command=["issuer", "serve", "--workerz", "3"]))
    assert any("does not parse" in f and "--workerz" in f for f in found), found


def test_an_unknown_subcommand_is_found() -> None:
    found = broken(lambda c: replica(c).update(command=["issuer", "sreve"]))
    assert any("does not parse" in f and "sreve" in f for f in found), found


def test_a_variable_that_no_option_reads_is_found() -> None:
    found = broken(lambda c: replica(c)["environment"].update(DEMO_CLIENT_SECRET="x" * 32))
    assert any("DEMO_CLIENT_SECRET is not the envvar of any option of `issuer serve`" in f for f in found), found


def test_option_envvars_are_accepted() -> None:
    """A DEMO_* variable is fine where the command has an option reading it (a stand-in command tree)."""

    @click.group()
    def root() -> None: ...

    @root.command("greet")
    @click.option("--name", envvar="DEMO_NAME")
    def greet(name: str) -> None: ...

    compose = {"services": {"x": {"build": ".", "command": ["issuer", "greet"], "environment": {"DEMO_NAME": "a"},
                                  "healthcheck": {"test": ["CMD", "true"]}},
                            "y": {"build": ".", "command": ["issuer", "greet"], "environment": {"DEMO_NAM": "a"},
                                  "healthcheck": {"test": ["CMD", "true"]}}}}
    found = check(compose, root=root, image_env={})
    assert found == [("y", "environment DEMO_NAM is not the envvar of any option of `issuer greet` "
                           "(known: ['DEMO_NAME'])")], found


def test_replica_port_must_match_the_balancer() -> None:
    def edit(c: dict[str, Any]) -> None:
        svc = replica(c)
        svc["environment"] = {**svc["environment"], "ISSUER_PORT": "8001"}
        rewrite_healthcheck(svc, "8000", "8001")

    found = broken(edit)
    assert any(f.startswith("lb: server issuer-1:8000, but issuer-1 listens on 8001") for f in found), found


def test_the_balancer_config_must_list_every_replica() -> None:
    cfg = (ROOT / "deploy/haproxy.cfg").read_text(encoding="utf-8")
    compose = copy.deepcopy(COMPOSE)
    read = lambda rel: cfg.replace("    server issuer-2 issuer-2:8000\n", "")  # noqa: E731
    found = [f"{s}: {m}" for s, m in check(compose, read=read)]
    assert any("replica issuer-2 is not a server of the balancer" in f for f in found), found


def test_health_check_port_must_be_the_listening_port() -> None:
    def edit(c: dict[str, Any]) -> None:
        rewrite_healthcheck(replica(c, "issuer-2"), "8000", "8080")

    found = broken(edit)
    assert any(f.startswith("issuer-2: healthcheck") and "listens on 8000" in f for f in found), found


def test_health_check_must_use_a_health_route() -> None:
    def edit(c: dict[str, Any]) -> None:
        rewrite_healthcheck(replica(c), "/readyz", "/metrics")

    found = broken(edit)
    assert any("is not one of ['/healthz', '/readyz']" in f for f in found), found


def test_depends_on_must_name_a_service() -> None:
    found = broken(lambda c: c["services"]["lb"]["depends_on"].update({"issuer-3": {"condition": "service_healthy"}}))
    assert "lb: depends_on names 'issuer-3', which is not a service" in found, found


def test_every_long_running_service_has_a_health_check() -> None:
    found = broken(lambda c: c["services"]["redis"].pop("healthcheck"))
    assert "redis: has no healthcheck" in found, found


def test_replicas_wait_for_init() -> None:
    def edit(c: dict[str, Any]) -> None:
        svc = replica(c)
        svc["depends_on"] = {k: v for k, v in svc["depends_on"].items() if k != "issuer-init"}

    found = broken(edit)
    assert any(f.startswith("issuer-1: must wait for `issuer init`") for f in found), found


def test_replicas_share_the_key_volume() -> None:
    found = broken(lambda c: replica(c, "issuer-2").update(volumes=["otherkeys:/var/lib/issuer/keys"]))
    assert any("key volume 'otherkeys' is not the one `issuer init` writes" in f for f in found), found


def test_issuer_url_must_be_the_published_balancer_port() -> None:
    def edit(c: dict[str, Any]) -> None:
        for name in ("issuer-init", "issuer-1", "issuer-2"):
            svc = replica(c, name)
            svc["environment"] = {**svc["environment"], "ISSUER_URL": "http://localhost:8443"}

    found = broken(edit)
    assert any("ISSUER_URL http://localhost:8443 names port 8443" in f for f in found), found


def test_interpolation_uses_the_files_defaults() -> None:
    assert interpolate("a${X:-b}c$$d${Y-e}", {}) == "ab" + "c$de"
    assert interpolate("${X:-b}", {"X": "z"}) == "z"
    with pytest.raises(ValueError):
        interpolate("${X:?set X}", {})
