"""The registered set-up the benchmark runs against, and the requests it sends.

A deployment of realistic size rather than the tests' two tools: 3 identity
providers that differ the way real ones do (RS256 with one key, ES256 with a
rotated second key and the groups in ``roles``, ES256 with an ``aud`` array,
no ``nbf`` and a ``tenant`` attribute), 50 tools with three scopes and
declared actions, 20 MCP-server clients (half ``client_secret_basic``, half
``client_secret_post``) each allowed 10 tools, 10,000 users spread over
groups, and a policy of 300 rules with constraint templates, lifetimes and
narrowing.

The scenario knows which rule grants what, so every request it builds is a
real grant (a 200): one user token per user, addressed to the client the
request goes through, with a scope that some matching rule entitles. Built
from a fixed seed, so two runs send the same mix. The JWKS are registered
inline (no network) and every token is signed before the load starts.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = ["ACCESS_TOKEN", "TOKEN_EXCHANGE", "Scenario", "hello_request"]

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TENANTS = ("acme", "globex", "initech", "umbrella")
#: How long the pre-signed user tokens stay valid: longer than any `make bench` run.
TOKEN_LIFETIME = 3600


@dataclass
class Idp:
    name: str
    issuer: str
    alg: str
    groups_claim: str
    n_groups: int
    share: float  #: fraction of the users that come from this provider
    aud_list: bool = False
    nbf: bool = True
    attributes: tuple[str, ...] = ()
    keys: list[tuple[str, Any]] = field(default_factory=list)

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys:
            jwk = (RSAAlgorithm if self.alg == "RS256" else ECAlgorithm).to_jwk(key.public_key(), as_dict=True)
            jwk.update(kid=kid, alg=self.alg, use="sig")
            out.append(jwk)
        return {"keys": out}

    def group(self, i: int) -> str:
        return f"{self.name}-g{i:02d}"


@dataclass(frozen=True)
class User:
    idp: str
    sub: str
    groups: tuple[str, ...]
    tenant: str


@dataclass
class Rule:
    id: str
    idp: str
    tool: str
    clients: list[str]
    scopes: list[str]
    groups: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    default_scopes: list[str] | None = None
    allow_narrowing: bool = False
    max_lifetime: int | None = None
    constraints: dict[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "idp": self.idp}
        if self.groups:
            doc["groups"] = self.groups
        if self.tenants:
            doc["claims"] = {"tenant": self.tenants}
        doc.update(clients=self.clients, tool=self.tool, scopes=self.scopes)
        if self.default_scopes is not None:
            doc["default_scopes"] = self.default_scopes
        if self.allow_narrowing:
            doc["allow_narrowing"] = True
        if self.max_lifetime is not None:
            doc["max_lifetime"] = self.max_lifetime
        if self.constraints:
            doc["constraints"] = self.constraints
        return doc


@dataclass(frozen=True)
class Client:
    client_id: str
    resource: str
    tools: tuple[str, ...]
    secret: str
    auth: str  #: "basic" or "post"


class Scenario:
    """Everything the benchmark registers and sends, derived from one seed."""

    def __init__(self, *, users: int = 10_000, tools: int = 50, clients: int = 20, seed: int = 8693) -> None:
        self.rng = random.Random(seed)  # noqa: S311 (a reproducible workload mix, not a secret)
        #: Suffix of the providers' namespaces: the run's rate-limit keys in Redis carry it, so they can be
        #: deleted afterwards without touching another run's or a test's.
        self.tag = secrets.token_hex(3)
        self.idps = [
            Idp("corp", "https://login.corp.example", "RS256", "groups", 20, 0.5),
            Idp("partner", "https://sso.partner.example/realms/main", "ES256", "roles", 12, 0.35, nbf=False),
            Idp("contractors", "https://id.contractors.example", "ES256", "groups", 4, 0.15,
                aud_list=True, nbf=False, attributes=("tenant",)),
        ]
        self.idps[0].keys.append(("corp-2026", rsa.generate_private_key(65537, 2048)))
        self.idps[1].keys += [(f"partner-{i}", ec.generate_private_key(ec.SECP256R1())) for i in (1, 2)]
        self.idps[2].keys.append(("contractors-1", ec.generate_private_key(ec.SECP256R1())))
        self.tools = [f"tool-{i:02d}" for i in range(tools)]
        # Each client reaches 10 consecutive tools (mod 50), starts spread evenly: every tool has 4 clients.
        per_client = min(10, tools)
        self.clients = [
            Client(f"mcp-{c:02d}", f"https://mcp-{c:02d}.mcp.example",
                   tuple(self.tools[(c * tools // clients + k) % tools] for k in range(per_client)),
                   secrets.token_urlsafe(32), "basic" if c % 2 == 0 else "post")
            for c in range(clients)
        ]
        self.clients_of: dict[str, list[str]] = {t: [] for t in self.tools}
        for c in self.clients:
            for t in c.tools:
                self.clients_of[t].append(c.client_id)
        self.users = self._users(users)
        self.rules = self._rules()

    # ------------------------------------------------------------------ model
    def _users(self, n: int) -> list[User]:
        out: list[User] = []
        for idp in self.idps:
            count = round(n * idp.share) if idp is not self.idps[-1] else n - len(out)
            for _ in range(count):
                k = self.rng.choice((1, 1, 2, 3))  # most users are in one group, some in several
                groups = tuple(sorted(idp.group(g) for g in self.rng.sample(range(idp.n_groups), k)))
                out.append(User(idp.name, f"u{len(out):05d}", groups, self.rng.choice(TENANTS)))
        return out

    def _rules(self) -> list[Rule]:
        def g(idp: str, base: int, k: int, n: int) -> list[str]:
            return [f"{idp}-g{(base + j) % n:02d}" for j in range(k)]

        """Six rules per tool (300 for 50 tools); group slots assigned round-robin so every group is used."""
        corp, partner, contractors = (i.name for i in self.idps)
        n_corp, n_partner = self.idps[0].n_groups, self.idps[1].n_groups
        rules: list[Rule] = []
        for t, tool in enumerate(self.tools):
            cl = self.clients_of[tool]
            read, write, admin = (f"{tool}:{s}" for s in ("read", "write", "admin"))
            # Half the tools bound each user to their own home directory: the template is filled per exchange.
            cons = {"path": {"prefix": "/home/${sub}/", "max_length": 4096}} if t % 2 == 0 else None
            rules += [
                Rule(f"{tool}-corp-read", corp, tool, cl, [read], groups=g(corp, 4 * t, 3, n_corp),
                     constraints=cons),
                Rule(f"{tool}-corp-write", corp, tool, cl[:2], [read, write], groups=g(corp, 4 * t + 3, 1, n_corp),
                     default_scopes=[read], max_lifetime=120, constraints=cons),
                Rule(f"{tool}-partner-read", partner, tool, cl[1:], [read], groups=g(partner, 3 * t, 2, n_partner),
                     constraints=cons),
                Rule(f"{tool}-partner-admin", partner, tool, cl[:1], [read, write, admin],
                     groups=g(partner, 3 * t + 2, 1, n_partner), default_scopes=[read], allow_narrowing=True,
                     constraints=cons),
                Rule(f"{tool}-partner-write", partner, tool, cl[2:], [read, write],
                     groups=g(partner, 3 * t + 1, 1, n_partner), max_lifetime=300, constraints=cons),
                Rule(f"{tool}-contractors", contractors, tool, cl[2:], [read],
                     tenants=[TENANTS[t % 4], TENANTS[(t + 1) % 4]],
                     constraints={"tenant": {"eq": "${claims.tenant}"}} if cons is None else cons),
            ]
        return rules

    def namespace(self, idp: str) -> str:
        return f"{idp}-{self.tag}"

    def policy_text(self) -> str:
        """The policy as JSON (which the YAML loader accepts), one version."""
        return json.dumps({"rules": [r.document() for r in self.rules]}, indent=1)

    # ------------------------------------------------------------------ registration
    def register(self, database_url: str, keys_dir: Any) -> None:
        """Register providers, tools, clients and the policy through the service layer the CLI uses."""
        from issuer.db import Database
        from issuer.keys import KeyStore
        from issuer.registry import ScopeSpec, add_client, add_idp, add_tool, apply_policy

        pepper = KeyStore(keys_dir, retention=3600, refresh_interval=0).pepper()
        db = Database(database_url, pool_size=1)
        try:
            for idp in self.idps:
                add_idp(db, name=idp.name, issuer=idp.issuer, jwks=idp.jwks(), algorithms=(idp.alg,),
                        groups_claim=idp.groups_claim, attribute_claims=idp.attributes, discover=False,
                        namespace=self.namespace(idp.name))
            for tool in self.tools:
                add_tool(db, name=tool, resource_uri=f"https://{tool}.tools.example", scopes=[
                    ScopeSpec(f"{tool}:read", actions=("list", "read")),
                    ScopeSpec(f"{tool}:write", actions=("create", "update")),
                    ScopeSpec(f"{tool}:admin", actions=("delete",)),
                ])
            for c in self.clients:
                add_client(db, client_id=c.client_id, resource_uri=c.resource, tools=list(c.tools), pepper=pepper,
                           secret=c.secret)
            apply_policy(db, self.policy_text(), source="bench-policy.json", created_by="bench")
        finally:
            db.dispose()

    # ------------------------------------------------------------------ requests
    def _grants_for(self, user: User) -> list[tuple[Rule, str]]:
        out = []
        for r in self.rules:
            if r.idp != user.idp:
                continue
            if (r.groups and set(r.groups) & set(user.groups)) or (r.tenants and user.tenant in r.tenants):
                out += [(r, c) for c in r.clients]
        return out

    def _scope(self, rule: Rule) -> str | None:
        """A request scope the rule entitles: all of it, one scope, or none (the defaults)."""
        pick = self.rng.random()
        if len(rule.scopes) == 1:
            return None if pick < 0.2 else rule.scopes[0]
        if pick < 0.2:
            return None
        if pick < 0.6:
            return rule.scopes[0]
        return " ".join(rule.scopes)

    def _token(self, user: User, client: Client, now: int) -> str:
        idp = next(i for i in self.idps if i.name == user.idp)
        kid, key = self.rng.choice(idp.keys)
        aud: Any = [client.resource, f"https://portal.{idp.name}.example"] if idp.aud_list else client.resource
        body: dict[str, Any] = {"iss": idp.issuer, "sub": user.sub, "aud": aud, "iat": now,
                                "exp": now + TOKEN_LIFETIME, "jti": secrets.token_hex(12), "client_id": "portal",
                                "email": f"{user.sub}@{idp.name}.example", "scope": "openid profile email"}
        if idp.nbf:
            body["nbf"] = now
        if idp.groups_claim and user.groups:
            body[idp.groups_claim] = list(user.groups)
        if "tenant" in idp.attributes:
            body["tenant"] = user.tenant
        return jwt.encode(body, key, algorithm=idp.alg, headers={"kid": kid, "typ": "at+jwt"})

    def exchange_requests(self) -> list[bytes]:
        """One raw HTTP/1.1 token-exchange request per user, each a grant, in a shuffled order."""
        clients = {c.client_id: c for c in self.clients}
        now = int(time.time())
        out: list[bytes] = []
        for user in self.users:
            grants = self._grants_for(user)
            if not grants:  # cannot happen with the round-robin groups; kept so a changed model fails loudly
                raise RuntimeError(f"user {user.sub} of {user.idp} is granted nothing")
            rule, client_id = self.rng.choice(grants)
            client = clients[client_id]
            form = [("grant_type", TOKEN_EXCHANGE), ("subject_token", self._token(user, client, now)),
                    ("subject_token_type", ACCESS_TOKEN), ("resource", f"https://{rule.tool}.tools.example")]
            scope = self._scope(rule)
            if scope is not None:
                form.append(("scope", scope))
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            if client.auth == "basic":
                basic = base64.b64encode(f"{client.client_id}:{client.secret}".encode()).decode()
                headers["Authorization"] = f"Basic {basic}"
            else:
                form += [("client_id", client.client_id), ("client_secret", client.secret)]
            out.append(raw_request("POST", "/token", headers, urlencode(form).encode()))
        self.rng.shuffle(out)
        return out


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """Bytes of one keep-alive HTTP/1.1 request, built once so the generator only writes them."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "User-Agent: issuer-bench"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def hello_request() -> list[bytes]:
    """The hello-world route of the same app: /healthz does no I/O."""
    return [raw_request("GET", "/healthz", {})]


def summary(s: Scenario, requests: Sequence[bytes]) -> dict[str, Any]:
    """What was registered, for the report."""
    return {"identity_providers": len(s.idps), "tools": len(s.tools), "clients": len(s.clients),
            "users": len(s.users), "groups": sum(i.n_groups for i in s.idps), "policy_rules": len(s.rules),
            "distinct_requests": len(requests)}
