"""The registry service layer (identity providers, tools, clients, policy versions) and its snapshot cache.

Every test runs on SQLite and on PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from freezegun import freeze_time
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import select, text

from issuer.client_secrets import hash_secret
from issuer.db import Database
from issuer.errors import ConfigurationError
from issuer.exchange import explain
from issuer.models import Client, ConfigState, PolicyVersion
from issuer.policy import PolicyError, Reason
from issuer.registry import (
    ScopeSpec,
    SnapshotCache,
    add_client,
    add_idp,
    add_tool,
    apply_policy,
    list_clients,
    list_idps,
    list_tools,
    load_snapshot,
    show_policy,
)
from tests.conftest import initialise, make_settings
from tests.support.fake_idp import FakeIdP

POLICY = """\
rules:
  - id: support-read
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read]
"""


@dataclass
class Registry:
    db: Database
    pepper: bytes
    url: str


@pytest.fixture
def reg(tmp_path: Path, database_url: str) -> Iterator[Registry]:
    keys = initialise(make_settings(tmp_path, database_url))
    db = Database(database_url, pool_size=2)
    yield Registry(db, keys.pepper(), database_url)
    db.dispose()


def generation(db: Database) -> int:
    with db.session() as s:
        return int(s.execute(select(ConfigState.generation)).scalar_one())


def ec_jwk(private: bool = False) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key if private else key.public_key(), as_dict=True)
    jwk.update(kid="k1", use="sig", alg="ES256")
    return jwk


def public_jwks() -> dict[str, Any]:
    return {"keys": [ec_jwk()]}


def add_standard(reg: Registry) -> str:
    """idp-a (inline keys), tool tickets, client mcp-helpdesk; returns the client's secret."""
    add_idp(reg.db, name="idp-a", issuer="https://idp-a.example", jwks=public_jwks(), algorithms=("ES256",))
    add_tool(reg.db, name="tickets", resource_uri="https://tickets.example",
             scopes=[ScopeSpec("tickets:read"), ScopeSpec("tickets:write", actions=("comment", "close"))])
    _, secret = add_client(reg.db, client_id="mcp-helpdesk", resource_uri="https://mcp.helpdesk.example",
                           tools=["tickets"], pepper=reg.pepper)
    assert secret is not None
    return secret


# --------------------------------------------------------------------------- identity providers


def test_add_idp_with_inline_jwks_and_list_it(reg: Registry) -> None:
    jwks = public_jwks()
    view = add_idp(reg.db, name="idp-a", issuer="https://idp-a.example", jwks=jwks, algorithms=("ES256", "RS256"),
                   attribute_claims=("tenant", "tenant", "dept"))
    assert (view.name, view.namespace, view.jwks_uri) == ("idp-a", "idp-a", None)
    [listed] = list_idps(reg.db)
    assert listed.name == "idp-a"
    assert listed.issuer == "https://idp-a.example"
    assert listed.jwks == jwks
    assert listed.jwks_uri is None
    assert listed.algorithms == ("ES256", "RS256")
    assert listed.attribute_claims == ("tenant", "dept")
    assert (listed.subject_claim, listed.groups_claim, listed.enabled) == ("sub", "groups", True)


def test_idps_are_listed_by_name(reg: Registry) -> None:
    for name in ("zeta", "alpha", "mid"):
        add_idp(reg.db, name=name, issuer=f"https://{name}.example", jwks=public_jwks())
    assert [i.name for i in list_idps(reg.db)] == ["alpha", "mid", "zeta"]


def test_http_jwks_uri_on_loopback_needs_the_insecure_flag(reg: Registry) -> None:
    uri = "http://127.0.0.1:9/jwks.json"
    with pytest.raises(ConfigurationError, match="allow_insecure_loopback"):
        add_idp(reg.db, name="dev", issuer="https://dev.example", jwks_uri=uri)
    assert list_idps(reg.db) == []
    view = add_idp(reg.db, name="dev", issuer="https://dev.example", jwks_uri=uri, allow_insecure_loopback=True)
    assert view.jwks_uri == uri
    assert [i.jwks_uri for i in list_idps(reg.db)] == [uri]


@pytest.mark.parametrize("uri", ["http://idp.example.com/jwks.json", "http://10.0.0.1/jwks", "ftp://idp.example/jwks"])
def test_http_jwks_uri_off_loopback_is_refused_even_with_the_flag(reg: Registry, uri: str) -> None:
    with pytest.raises(ConfigurationError, match="https"):
        add_idp(reg.db, name="dev", issuer="https://dev.example", jwks_uri=uri, allow_insecure_loopback=True)
    assert list_idps(reg.db) == []


def test_https_jwks_uri_is_stored_without_a_fetch(reg: Registry) -> None:
    view = add_idp(reg.db, name="corp", issuer="https://login.corp.example", jwks_uri="https://login.corp.example/k")
    assert view.jwks_uri == "https://login.corp.example/k"
    assert view.jwks is None


def test_discovery_finds_the_jwks_uri(reg: Registry, idp: FakeIdP) -> None:
    view = add_idp(reg.db, name=idp.name, issuer=idp.issuer, allow_insecure_loopback=True, http_timeout=5)
    assert view.jwks_uri == idp.jwks_uri
    assert [(i.name, i.jwks_uri) for i in list_idps(reg.db)] == [(idp.name, idp.jwks_uri)]


def test_discovery_over_http_needs_the_insecure_flag(reg: Registry, idp: FakeIdP) -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_loopback"):
        add_idp(reg.db, name=idp.name, issuer=idp.issuer)
    assert list_idps(reg.db) == []


def test_without_keys_or_discovery_a_jwks_is_required(reg: Registry) -> None:
    with pytest.raises(ConfigurationError, match="JWKS is required"):
        add_idp(reg.db, name="x", issuer="https://x.example", discover=False)


def rsa_private_jwk() -> dict[str, Any]:
    return RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048), as_dict=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: ec_jwk(private=True),
        rsa_private_jwk,
        lambda: {"kty": "oct", "k": "c2VjcmV0LXNoYXJlZC1rZXktMzItYnl0ZXMtbG9uZyEh"},
        lambda: {**ec_jwk(), "d": "AAAA-private-scalar-AAAA"},
    ],
    ids=["ec-private", "rsa-private", "symmetric", "public-plus-d"],
)
def test_private_or_symmetric_jwk_is_refused(reg: Registry, make_key: Any) -> None:
    key = make_key()
    with pytest.raises(ConfigurationError) as e:
        add_idp(reg.db, name="leaky", issuer="https://leaky.example", jwks={"keys": [ec_jwk(), key]})
    message = str(e.value)
    assert message.startswith("jwks: key 1 ")
    for member in ("d", "p", "q", "k"):
        if member in key:
            assert key[member] not in message  # the secret itself is never echoed
    assert list_idps(reg.db) == []


@pytest.mark.parametrize("jwks", [{}, {"keys": []}, {"keys": "x"}, [ec_jwk()], {"keys": [{"kty": "XYZ"}]}])
def test_malformed_jwks_is_refused(reg: Registry, jwks: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"^jwks: "):
        add_idp(reg.db, name="x", issuer="https://x.example", jwks=jwks)


@pytest.mark.parametrize("algorithms", [("HS256",), ("none",), ("ES256", "HS512"), ("RS256", "none"), ()])
def test_symmetric_and_none_algorithms_are_refused(reg: Registry, algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError, match=r"^algorithms: "):
        add_idp(reg.db, name="x", issuer="https://x.example", jwks=public_jwks(), algorithms=algorithms)
    assert list_idps(reg.db) == []


@pytest.mark.parametrize(
    "second",
    [
        {"name": "idp-a", "issuer": "https://other.example", "namespace": "other"},
        {"name": "other", "issuer": "https://idp-a.example", "namespace": "other"},
        {"name": "other", "issuer": "https://other.example", "namespace": "idp-a"},
        {"name": "other", "issuer": "https://other.example"},
    ],
    ids=["same-name", "same-issuer", "same-namespace", "name-is-taken-namespace"],
)
def test_duplicate_name_issuer_or_namespace_is_refused(reg: Registry, second: dict[str, str]) -> None:
    add_idp(reg.db, name="idp-a", issuer="https://idp-a.example", jwks=public_jwks())
    if second["name"] == "other" and "namespace" not in second:
        add_idp(reg.db, name="third", issuer="https://third.example", namespace="other", jwks=public_jwks())
    before = generation(reg.db)
    with pytest.raises(ConfigurationError, match="already registered"):
        add_idp(reg.db, jwks=public_jwks(), **second)
    assert generation(reg.db) == before
    assert "https://other.example" not in [i.issuer for i in list_idps(reg.db)]


@pytest.mark.parametrize(("name", "namespace"), [("corp", "corp:eu"), ("corp:eu", None)])
def test_namespace_with_a_colon_is_refused(reg: Registry, name: str, namespace: str | None) -> None:
    with pytest.raises(ConfigurationError, match=r"^namespace: .*':'"):
        add_idp(reg.db, name=name, issuer="https://corp.example", namespace=namespace, jwks=public_jwks())
    assert list_idps(reg.db) == []


@pytest.mark.parametrize("issuer", ["idp.example", "https://idp.example/?x=1", "https://idp.example/#f", "ftp://x"])
def test_bad_issuer_url_is_refused(reg: Registry, issuer: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^issuer: "):
        add_idp(reg.db, name="x", issuer=issuer, jwks=public_jwks())


# --------------------------------------------------------------------------- tools


def test_add_tool_and_list_it(reg: Registry) -> None:
    view = add_tool(reg.db, name="tickets", resource_uri="https://tickets.example/api",
                    scopes=[ScopeSpec("tickets:write", "write", ("comment", "close")), ScopeSpec("tickets:read")],
                    description="Ticketing")
    assert view.scope_names == {"tickets:read", "tickets:write"}
    add_tool(reg.db, name="files", resource_uri="https://files.example", scopes=[ScopeSpec("files:read")])
    tools = list_tools(reg.db)
    assert [t.name for t in tools] == ["files", "tickets"]
    tickets = tools[1]
    assert tickets.resource_uri == "https://tickets.example/api"
    assert tickets.description == "Ticketing"
    assert tickets.status == "active"
    assert tickets.scopes["tickets:write"] == ScopeSpec("tickets:write", "write", ("comment", "close"))
    assert tickets.scopes["tickets:read"] == ScopeSpec("tickets:read", "", ())


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("tickets.example", "absolute"),
        ("ftp://tickets.example", "absolute"),
        ("https://", "absolute"),
        ("https://tickets.example/#section", "fragment"),
        ("https://tickets.example#", "fragment"),
        ("https://tickets.example/a b", "characters"),
        ("https://tickets.example/\u00e9", "characters"),
    ],
)
def test_bad_tool_resource_is_refused(reg: Registry, uri: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^resource: .*{fragment}"):
        add_tool(reg.db, name="t", resource_uri=uri, scopes=[ScopeSpec("s")])
    assert list_tools(reg.db) == []


@pytest.mark.parametrize(
    ("name", "uri"),
    [("tickets", "https://other.example"), ("other", "https://tickets.example")],
    ids=["same-name", "same-resource"],
)
def test_duplicate_tool_is_refused(reg: Registry, name: str, uri: str) -> None:
    add_tool(reg.db, name="tickets", resource_uri="https://tickets.example", scopes=[ScopeSpec("tickets:read")])
    before = generation(reg.db)
    with pytest.raises(ConfigurationError, match="already registered"):
        add_tool(reg.db, name=name, resource_uri=uri, scopes=[ScopeSpec("x")])
    assert generation(reg.db) == before
    assert [t.name for t in list_tools(reg.db)] == ["tickets"]


def test_tool_without_scopes_is_refused(reg: Registry) -> None:
    with pytest.raises(ConfigurationError, match=r"^scopes: "):
        add_tool(reg.db, name="t", resource_uri="https://t.example", scopes=[])
    assert list_tools(reg.db) == []


@pytest.mark.parametrize("scope", ["tickets read", "tickets\tread", "tickets\nread", " lead", "", 'a"b', "a\\b",
                                   "caf\u00e9", "x" * 201])
def test_invalid_scope_token_is_refused(reg: Registry, scope: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^scope: "):
        add_tool(reg.db, name="t", resource_uri="https://t.example", scopes=[ScopeSpec("ok"), ScopeSpec(scope)])
    assert list_tools(reg.db) == []


def test_scope_given_twice_is_refused(reg: Registry) -> None:
    with pytest.raises(ConfigurationError, match="given twice"):
        add_tool(reg.db, name="t", resource_uri="https://t.example", scopes=[ScopeSpec("a"), ScopeSpec("a")])


@pytest.mark.parametrize("name", ["", "-x", "has space", "x" * 101, "sl/ash"])
def test_bad_names_are_refused(reg: Registry, name: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^name: "):
        add_tool(reg.db, name=name, resource_uri="https://t.example", scopes=[ScopeSpec("a")])


# --------------------------------------------------------------------------- clients


def test_generated_secret_is_stored_only_as_a_keyed_hash(reg: Registry, tmp_path: Path) -> None:
    secret = add_standard(reg)
    assert len(secret) >= 43
    with reg.db.engine.connect() as c:
        rows = [dict(r) for r in c.execute(text("SELECT * FROM clients")).mappings()]
    assert len(rows) == 1
    row = rows[0]
    for column, value in row.items():
        assert secret not in str(value), column
    assert secret not in repr(row)
    assert row["secret_hash"] == hash_secret(reg.pepper, secret)
    if reg.url.startswith("sqlite:"):
        stored = b"".join(p.read_bytes() for p in tmp_path.glob("issuer.db*"))
        assert stored
        assert secret.encode() not in stored
        assert row["secret_hash"].encode() in stored  # the search above does look at the stored rows


def test_client_secret_verifies_through_the_snapshot(reg: Registry) -> None:
    secret = add_standard(reg)
    client = load_snapshot(reg.db, reg.pepper).clients["mcp-helpdesk"]
    assert client.check_client_secret(secret)
    assert not client.check_client_secret(secret[:-1])
    assert not client.check_client_secret(hash_secret(reg.pepper, secret))
    other_pepper = load_snapshot(reg.db, b"\x00" * 32).clients["mcp-helpdesk"]
    assert not other_pepper.check_client_secret(secret)
    assert client.tools == {"tickets"}
    assert client.check_endpoint_auth_method("client_secret_basic", "token")
    assert not client.check_endpoint_auth_method("private_key_jwt", "token")


def test_each_client_gets_its_own_secret(reg: Registry) -> None:
    add_tool(reg.db, name="t", resource_uri="https://t.example", scopes=[ScopeSpec("s")])
    secrets = {add_client(reg.db, client_id=f"c{i}", resource_uri=f"https://c{i}.example", tools=["t"],
                          pepper=reg.pepper)[1] for i in range(3)}
    assert len(secrets) == 3


def test_listed_clients_carry_no_secret(reg: Registry) -> None:
    secret = add_standard(reg)
    [view] = list_clients(reg.db)
    assert view.client_id == "mcp-helpdesk"
    assert view.tools == {"tickets"}
    assert view.auth_methods == ("client_secret_basic", "client_secret_post")
    assert secret not in repr(view)
    assert view.secret_hash is not None
    assert view.secret_hash not in repr(view)


def test_imported_secret_must_not_be_short(reg: Registry) -> None:
    add_tool(reg.db, name="t", resource_uri="https://t.example", scopes=[ScopeSpec("s")])
    with pytest.raises(ConfigurationError, match=r"^secret: .*20 characters"):
        add_client(reg.db, client_id="c", resource_uri="https://c.example", tools=["t"], pepper=reg.pepper,
                   secret="x" * 19)
    assert list_clients(reg.db) == []
    imported = "imported-secret-0123"  # exactly 20
    _, shown = add_client(reg.db, client_id="c", resource_uri="https://c.example", tools=["t"], pepper=reg.pepper,
                          secret=imported)
    assert shown == imported
    with reg.db.session() as s:
        assert s.scalars(select(Client.secret_hash)).one() == hash_secret(reg.pepper, imported)


def test_unknown_tool_is_refused(reg: Registry) -> None:
    add_tool(reg.db, name="tickets", resource_uri="https://tickets.example", scopes=[ScopeSpec("s")])
    before = generation(reg.db)
    with pytest.raises(ConfigurationError, match=r"^tools: unknown tool\(s\) \['nope'\]"):
        add_client(reg.db, client_id="c", resource_uri="https://c.example", tools=["tickets", "nope"],
                   pepper=reg.pepper)
    assert list_clients(reg.db) == []
    assert generation(reg.db) == before


def test_private_key_jwt_needs_public_keys(reg: Registry) -> None:
    add_tool(reg.db, name="t", resource_uri="https://t.example", scopes=[ScopeSpec("s")])
    with pytest.raises(ConfigurationError, match="private_key_jwt needs"):
        add_client(reg.db, client_id="c", resource_uri="https://c.example", tools=["t"], pepper=reg.pepper,
                   auth_methods=("private_key_jwt",))
    with pytest.raises(ConfigurationError, match="private members"):
        add_client(reg.db, client_id="c", resource_uri="https://c.example", tools=["t"], pepper=reg.pepper,
                   auth_methods=("private_key_jwt",), jwks={"keys": [ec_jwk(private=True)]})
    assert list_clients(reg.db) == []
    jwks = public_jwks()
    view, secret = add_client(reg.db, client_id="c", resource_uri="https://c.example", tools=["t"],
                              pepper=reg.pepper, auth_methods=("private_key_jwt",), jwks=jwks)
    assert secret is None
    assert view.secret_hash is None
    assert not view.check_client_secret("")
    [listed] = list_clients(reg.db)
    assert listed.jwks == jwks
    assert listed.auth_methods == ("private_key_jwt",)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"auth_methods": ("client_secret_jwt",)}, "auth-method"),
        ({"auth_methods": ()}, "auth-method"),
        ({"jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}]}}, "only for private_key_jwt"),
        ({"max_lifetime": 5}, "max-lifetime"),
        ({"max_lifetime": 901}, "max-lifetime"),
        ({"resource_uri": "https://c.example#frag"}, "fragment"),
        ({"client_id": "bad id"}, "client_id"),
    ],
)
def test_bad_client_registration_is_refused(reg: Registry, kwargs: dict[str, Any], fragment: str) -> None:
    add_tool(reg.db, name="t", resource_uri="https://t.example", scopes=[ScopeSpec("s")])
    args: dict[str, Any] = {"client_id": "c", "resource_uri": "https://c.example", "tools": ["t"],
                            "pepper": reg.pepper, **kwargs}
    with pytest.raises(ConfigurationError, match=fragment):
        add_client(reg.db, **args)
    assert list_clients(reg.db) == []


@pytest.mark.parametrize(("client_id", "uri"), [("mcp-helpdesk", "https://x.example"),
                                                ("other", "https://mcp.helpdesk.example")])
def test_duplicate_client_is_refused(reg: Registry, client_id: str, uri: str) -> None:
    add_standard(reg)
    with pytest.raises(ConfigurationError, match="already registered"):
        add_client(reg.db, client_id=client_id, resource_uri=uri, tools=["tickets"], pepper=reg.pepper)
    assert [c.client_id for c in list_clients(reg.db)] == ["mcp-helpdesk"]


# --------------------------------------------------------------------------- generation


def test_every_write_bumps_the_generation_and_a_refused_one_does_not(reg: Registry) -> None:
    g = generation(reg.db)
    assert g == 0
    add_idp(reg.db, name="idp-a", issuer="https://idp-a.example", jwks=public_jwks())
    assert generation(reg.db) == g + 1
    add_tool(reg.db, name="tickets", resource_uri="https://tickets.example", scopes=[ScopeSpec("tickets:read")])
    assert generation(reg.db) == g + 2
    add_client(reg.db, client_id="mcp-helpdesk", resource_uri="https://mcp.helpdesk.example", tools=["tickets"],
               pepper=reg.pepper)
    assert generation(reg.db) == g + 3
    apply_policy(reg.db, POLICY, source="p.yaml", created_by="tests")
    assert generation(reg.db) == g + 4
    apply_policy(reg.db, POLICY, source="p.yaml", created_by="tests")  # the same document again is a new version
    assert generation(reg.db) == g + 5

    refused = [
        lambda: add_idp(reg.db, name="idp-a", issuer="https://idp-a.example", jwks=public_jwks()),
        lambda: add_tool(reg.db, name="tickets", resource_uri="https://tickets.example", scopes=[ScopeSpec("x")]),
        lambda: add_client(reg.db, client_id="c2", resource_uri="https://c2.example", tools=["nope"],
                           pepper=reg.pepper),
        lambda: apply_policy(reg.db, POLICY.replace("tool: tickets", "tool: nope"), source="p", created_by="t"),
    ]
    for write in refused:
        with pytest.raises(ConfigurationError):
            write()
        assert generation(reg.db) == g + 5


# --------------------------------------------------------------------------- policy


def test_apply_policy_makes_versions_1_2_3(reg: Registry) -> None:
    add_standard(reg)
    assert show_policy(reg.db) is None
    texts = [POLICY, POLICY.replace("[support]", "[support, l2]"), POLICY.replace("[support]", "[l2]")]
    assert [apply_policy(reg.db, t, source="p.yaml", created_by=f"admin{i}") for i, t in enumerate(texts)] == [1, 2, 3]
    latest = show_policy(reg.db)
    assert latest is not None
    assert (latest.version, latest.document, latest.created_by) == (3, texts[2], "admin2")
    for version, doc in enumerate(texts, start=1):
        row = show_policy(reg.db, version)
        assert row is not None
        assert (row.version, row.document) == (version, doc)
    assert show_policy(reg.db, 4) is None
    assert load_snapshot(reg.db, reg.pepper).policy.version == 3
    assert '"groups":["l2"]' in latest.canonical.replace(" ", "").replace("\n", "")


DANGLING = """\
rules:
  - id: ok
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read]
  - id: bad
    idp: {idp}
    groups: [support]
    clients:
      - mcp-helpdesk
      - {client}
    tool: {tool}
    scopes:
      - tickets:read
      - {scope}
"""


@pytest.mark.parametrize(
    ("what", "values", "line", "fragment"),
    [
        ("idp", {"idp": "idp-z"}, 9, "unknown identity provider 'idp-z'"),
        ("client", {"client": "mcp-ghost"}, 13, "unknown client 'mcp-ghost'"),
        ("tool", {"tool": "wiki"}, 14, "unknown tool 'wiki'"),
        ("scope", {"scope": "tickets:admin"}, 17, "defines no scope 'tickets:admin'"),
    ],
)
def test_policy_naming_unknown_things_is_refused_with_its_line(
    reg: Registry, what: str, values: dict[str, str], line: int, fragment: str
) -> None:
    add_standard(reg)
    add_client(reg.db, client_id="mcp-other", resource_uri="https://mcp.other.example", tools=["tickets"],
               pepper=reg.pepper)
    assert apply_policy(reg.db, POLICY, source="v1.yaml", created_by="tests") == 1
    g = generation(reg.db)
    fields = {"idp": "idp-a", "client": "mcp-other", "tool": "tickets", "scope": "tickets:write", **values}
    document = DANGLING.format(**fields)
    with pytest.raises(PolicyError) as e:
        apply_policy(reg.db, document, source="policy.yaml", created_by="tests")
    assert e.value.line == line
    assert str(e.value).startswith(f"policy.yaml:{line}: ")
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)
    assert show_policy(reg.db).version == 1  # type: ignore[union-attr]
    with reg.db.session() as s:
        assert s.scalars(select(PolicyVersion.version)).all() == [1]
    assert generation(reg.db) == g
    good = DANGLING.format(idp="idp-a", client="mcp-other", tool="tickets", scope="tickets:write")
    assert apply_policy(reg.db, good, source="policy.yaml", created_by="tests") == 2


def test_policy_syntax_error_names_its_line(reg: Registry) -> None:
    add_standard(reg)
    with pytest.raises(PolicyError) as e:
        apply_policy(reg.db, POLICY + "    max_lifetim: 60\n", source="p.yaml", created_by="tests")
    assert e.value.line == 8
    assert "unknown key 'max_lifetim'" in str(e.value)
    assert show_policy(reg.db) is None


# --------------------------------------------------------------------------- snapshot cache


def test_snapshot_cache_sees_a_change_only_after_its_interval(reg: Registry) -> None:
    add_standard(reg)
    with freeze_time("2030-01-01T00:00:00Z") as frozen:
        cache = SnapshotCache(reg.db, reg.pepper, interval=5)
        first = cache.get()
        assert set(first.tools_by_name) == {"tickets"}
        add_tool(reg.db, name="files", resource_uri="https://files.example", scopes=[ScopeSpec("files:read")])

        assert cache.get() is first
        frozen.tick(4.9)
        assert cache.get() is first

        frozen.tick(0.2)
        second = cache.get()
        assert set(second.tools_by_name) == {"tickets", "files"}
        assert second.generation == first.generation + 1
        assert second.tools_by_resource["https://files.example"].name == "files"

        frozen.tick(10)
        assert cache.get() is second  # checked again, nothing changed: the same snapshot is kept


def test_snapshot_cache_with_interval_zero_sees_a_change_at_once(reg: Registry) -> None:
    add_standard(reg)
    with freeze_time("2030-01-01T00:00:00Z"):
        cache = SnapshotCache(reg.db, reg.pepper, interval=0)
        assert cache.get().policy.version == 0
        apply_policy(reg.db, POLICY, source="p.yaml", created_by="tests")
        snap = cache.get()
        assert snap.policy.version == 1
        assert [r.id for r in snap.policy.document.rules] == ["support-read"]


def test_snapshot_invalidate_forces_a_check(reg: Registry) -> None:
    add_standard(reg)
    with freeze_time("2030-01-01T00:00:00Z"):
        cache = SnapshotCache(reg.db, reg.pepper, interval=60)
        first = cache.get()
        add_tool(reg.db, name="files", resource_uri="https://files.example", scopes=[ScopeSpec("files:read")])
        assert cache.get() is first
        cache.invalidate()
        assert "files" in cache.get().tools_by_name


# --------------------------------------------------------------------------- test_policy


@pytest.fixture
def snapshot_with_policy(reg: Registry) -> Any:
    add_standard(reg)
    apply_policy(reg.db, POLICY, source="p.yaml", created_by="tests")
    return load_snapshot(reg.db, reg.pepper)


def ask(snapshot: Any, **kw: Any) -> Any:
    args: dict[str, Any] = {"sub": "alice", "idp": "idp-a", "groups": ["support"], "attributes": {},
                            "client_id": "mcp-helpdesk", "tool": "tickets", "scopes": ["tickets:read"], **kw}
    return explain(snapshot, **args).decision


def test_policy_test_grants_with_the_deciding_rule(snapshot_with_policy: Any) -> None:
    d = ask(snapshot_with_policy)
    assert d.granted
    assert d.reason == Reason.GRANTED
    assert d.rule_id == "support-read"
    assert d.scopes == ("tickets:read",)
    assert d.policy_version == 1
    d = ask(snapshot_with_policy, idp=None)  # one provider registered: it is implied
    assert d.granted


@pytest.mark.parametrize(
    ("kw", "reason", "rule"),
    [
        ({"groups": ["sales"]}, Reason.NO_MATCHING_RULE, None),
        ({"groups": []}, Reason.NO_MATCHING_RULE, None),
        ({"scopes": ["tickets:write"]}, Reason.SCOPE_NOT_ENTITLED, "support-read"),
        ({"scopes": ["tickets:nope"]}, Reason.SCOPE_UNDEFINED, "support-read"),
    ],
)
def test_policy_test_denies_with_a_reason(
    snapshot_with_policy: Any, kw: dict[str, Any], reason: Reason, rule: str | None
) -> None:
    d = ask(snapshot_with_policy, **kw)
    assert not d.granted
    assert d.reason == reason
    assert d.rule_id == rule
    assert d.scopes == ()
    assert d.description


def test_policy_test_before_any_policy_denies(reg: Registry) -> None:
    add_standard(reg)
    d = ask(load_snapshot(reg.db, reg.pepper))
    assert not d.granted
    assert d.reason == Reason.NO_MATCHING_RULE
    assert d.policy_version == 0


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"idp": "idp-z"}, "--idp: unknown"),
        ({"tool": "wiki"}, "--tool: unknown"),
        ({"client_id": "mcp-ghost"}, "--client: unknown"),
    ],
)
def test_policy_test_refuses_unknown_names(snapshot_with_policy: Any, kw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        ask(snapshot_with_policy, **kw)


def test_policy_test_checks_the_clients_tool_allowlist(reg: Registry) -> None:
    """The same rule, through a client whose registration does not list the tool: refused, like the exchange."""
    add_standard(reg)
    add_tool(reg.db, name="wiki", resource_uri="https://wiki.example", scopes=[ScopeSpec("wiki:read")])
    apply_policy(reg.db, POLICY.replace("tool: tickets", "tool: wiki").replace("tickets:read", "wiki:read"),
                 source="p.yaml", created_by="tests")
    d = ask(load_snapshot(reg.db, reg.pepper), tool="wiki", scopes=["wiki:read"])
    assert not d.granted and d.reason == Reason.CLIENT_NOT_ALLOWED_TOOL


def test_apply_refuses_actions_the_tool_does_not_define(reg: Registry) -> None:
    add_standard(reg)
    doc = POLICY.replace("scopes: [tickets:read]", "scopes: [tickets:write]\n    actions: [comment, delete]")
    with pytest.raises(PolicyError) as info:
        apply_policy(reg.db, doc, source="p.yaml", created_by="tests")
    assert info.value.line == 8  # the `actions:` line
    assert "no action 'delete'" in str(info.value)


def test_apply_refuses_claims_the_provider_does_not_pass(reg: Registry) -> None:
    """A matcher on a claim policy never sees would silently never match; a template would refuse everyone."""
    add_standard(reg)  # idp-a registered without attribute claims
    doc = POLICY.replace("groups: [support]", "claims: {tenant: acme}")
    with pytest.raises(PolicyError, match="does not pass"):
        apply_policy(reg.db, doc, source="p.yaml", created_by="tests")
    doc = POLICY + '    constraints:\n      project: {in: ["${claims.projects}"]}\n'
    with pytest.raises(PolicyError, match="'projects'"):
        apply_policy(reg.db, doc, source="p.yaml", created_by="tests")


def test_apply_refuses_actions_outside_the_rules_own_scopes(reg: Registry) -> None:
    """`comment` belongs to tickets:write; a rule granting only tickets:read cannot hand it out."""
    add_standard(reg)
    doc = POLICY.replace("scopes: [tickets:read]", "scopes: [tickets:read]\n    actions: [comment]")
    add_tool(reg.db, name="wiki", resource_uri="https://wiki.example",
             scopes=[ScopeSpec("wiki:read", actions=("view",)), ScopeSpec("wiki:edit", actions=("edit",))])
    # tickets:read covers no action: the tool's actions are the reference, so `comment` is accepted
    apply_policy(reg.db, doc, source="p.yaml", created_by="tests")
    wiki = POLICY.replace("tool: tickets", "tool: wiki").replace("[tickets:read]", "[wiki:read]\n    actions: [edit]")
    with pytest.raises(PolicyError, match="no action 'edit'"):
        apply_policy(reg.db, wiki, source="p.yaml", created_by="tests")


@pytest.mark.parametrize(("redact", "hashed"), [([""], []), (["a..b"], []), (["x"], ["x"])])
def test_audit_argument_lists_are_checked(reg: Registry, redact: list[str], hashed: list[str]) -> None:
    with pytest.raises(ConfigurationError):
        add_tool(reg.db, name="t", resource_uri="https://t.example", scopes=[ScopeSpec("s")],
                 redact_arguments=redact, hash_arguments=hashed)
