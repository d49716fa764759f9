"""Delegation over HTTP: chained capabilities (RFC 8693 section 4.1 `act`) and actor tokens."""

from __future__ import annotations

import jwt
import pytest

from tests.conftest import ACCESS_TOKEN, LiveIssuer
from tests.test_exchange_e2e import error_of, verify

CHAIN_POLICY = """
rules:
  - id: support-tickets-read
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read]
  - id: support-chain
    idp: idp-a
    groups: [support]
    clients: [tickets-svc]
    tool: files
    scopes: [files:read]
"""


@pytest.fixture
def chain(live: LiveIssuer) -> LiveIssuer:
    live.add_client("tickets-svc", "https://tickets.example", ["files"], may_chain=True)
    live.apply(CHAIN_POLICY)
    return live


def _capability(live: LiveIssuer) -> str:
    resp = live.exchange()
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def test_tool_chains_the_users_capability(chain: LiveIssuer) -> None:
    first = _capability(chain)
    resp = chain.exchange("tickets-svc", first, resource="https://files.example", scope="files:read")
    assert resp.status_code == 200, resp.text
    one = verify(chain, first)
    two = verify(chain, resp.json()["access_token"], audience="https://files.example")
    assert two["sub"] == one["sub"] == "idp-a:alice"
    assert two["act"] == {"sub": "tickets-svc", "act": {"sub": "mcp-helpdesk"}}
    assert two["client_id"] == "tickets-svc"
    assert two["exp"] <= one["exp"]  # lifetime never grows along a chain
    assert two["txn"] == one["txn"]  # one agent action, one transaction id across hops


def test_chaining_needs_may_chain(chain: LiveIssuer) -> None:
    chain.add_client("files-svc", "https://files-svc.example", ["tickets"])
    token = chain.exchange(resource="https://tickets.example").json()["access_token"]
    # files-svc is not the capability's audience either; both checks refuse
    error_of(chain.exchange("files-svc", token), 400, "invalid_grant")


def test_capability_for_another_tool_cannot_be_chained(chain: LiveIssuer) -> None:
    """The presenting client must be the capability's audience: no replay of someone else's capability."""
    chain.add_client("other-svc", "https://other-svc.example", ["files"], may_chain=True)
    error_of(chain.exchange("other-svc", _capability(chain), resource="https://files.example", scope="files:read"),
             400, "invalid_grant")


def test_chain_depth_is_bounded(chain: LiveIssuer) -> None:
    chain.add_client("files-svc", "https://files.example", ["tickets"], may_chain=True)
    chain.apply(CHAIN_POLICY + """
  - id: files-back-to-tickets
    idp: idp-a
    groups: [support]
    clients: [files-svc]
    tool: tickets
    scopes: [tickets:read]
""")
    hops = ["mcp-helpdesk", "tickets-svc", "files-svc", "tickets-svc", "files-svc"]
    targets = ["https://tickets.example", "https://files.example"] * 2 + ["https://tickets.example"]
    scopes = ["tickets:read", "files:read"] * 2 + ["tickets:read"]
    token = chain.idp.token()
    results = []
    for client, target, scope in zip(hops, targets, scopes, strict=True):
        resp = chain.exchange(client, token, resource=target, scope=scope)
        results.append(resp.status_code)
        if resp.status_code != 200:
            error_of(resp, 400, "invalid_grant")
            break
        token = resp.json()["access_token"]
    # max_chain_depth defaults to 4 actors in `act`: the fifth hop is refused
    assert results == [200, 200, 200, 200, 400]


def test_forged_capability_is_refused(chain: LiveIssuer) -> None:
    claims = verify(chain, _capability(chain))
    from cryptography.hazmat.primitives.asymmetric import ec

    forged = jwt.encode({**claims, "aud": "https://tickets.example"}, ec.generate_private_key(ec.SECP256R1()),
                        algorithm="ES256", headers={"kid": jwt.get_unverified_header(_capability(chain))["kid"],
                                                    "typ": "at+jwt"})
    error_of(chain.exchange("tickets-svc", forged, resource="https://files.example", scope="files:read"),
             400, "invalid_grant")


def test_actor_token_must_name_the_client(live: LiveIssuer) -> None:
    good = live.idp.token(sub="mcp-helpdesk", aud=live.url)
    ok = live.exchange(extra=[("actor_token", good), ("actor_token_type", ACCESS_TOKEN)])
    assert ok.status_code == 200, ok.text
    assert verify(live, ok.json()["access_token"])["act"] == {"sub": "mcp-helpdesk"}
    impostor = live.idp.token(sub="mcp-other", aud=live.url)
    error_of(live.exchange(extra=[("actor_token", impostor), ("actor_token_type", ACCESS_TOKEN)]),
             400, "invalid_grant")
    wrong_aud = live.idp.token(sub="mcp-helpdesk", aud="https://elsewhere.example")
    error_of(live.exchange(extra=[("actor_token", wrong_aud), ("actor_token_type", ACCESS_TOKEN)]),
             400, "invalid_grant")


def test_self_signed_actor_token_with_the_clients_registered_key(live: LiveIssuer) -> None:
    import time

    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="k1", alg="ES256")
    secret = live.add_client("mcp-signer", "https://mcp.signer.example", ["tickets"],
                             auth_methods=("client_secret_basic", "private_key_jwt"), jwks={"keys": [jwk]})
    assert secret
    live.apply("rules:\n  - id: r\n    idp: idp-a\n    groups: [support]\n    clients: [mcp-signer]\n"
               "    tool: tickets\n    scopes: [tickets:read]\n")
    now = int(time.time())

    def actor(sub: str, signer: ec.EllipticCurvePrivateKey) -> str:
        return jwt.encode({"iss": "mcp-signer", "sub": sub, "aud": live.url, "iat": now, "exp": now + 60},
                          signer, algorithm="ES256", headers={"kid": "k1"})

    user = live.idp.token(aud="https://mcp.signer.example")
    ok = live.exchange("mcp-signer", user, extra=[("actor_token", actor("mcp-signer", key)),
                                                  ("actor_token_type", ACCESS_TOKEN)])
    assert ok.status_code == 200, ok.text
    stranger = ec.generate_private_key(ec.SECP256R1())
    error_of(live.exchange("mcp-signer", user, extra=[("actor_token", actor("mcp-signer", stranger)),
                                                      ("actor_token_type", ACCESS_TOKEN)]), 400, "invalid_grant")
    error_of(live.exchange("mcp-signer", user, extra=[("actor_token", actor("someone-else", key)),
                                                      ("actor_token_type", ACCESS_TOKEN)]), 400, "invalid_grant")


def test_tool_rescoping_its_own_capability_may_only_narrow(live: LiveIssuer) -> None:
    live.add_client("tickets-svc", "https://tickets.example", ["tickets", "files"], may_chain=True)
    live.apply(CHAIN_POLICY + """
  - id: tickets-svc-self
    idp: idp-a
    groups: [support]
    clients: [tickets-svc]
    tool: tickets
    scopes: [tickets:read, tickets:write]
""")
    cap = _capability(live)  # tickets:read, aud https://tickets.example
    widened = live.exchange("tickets-svc", cap, resource="https://tickets.example", scope="tickets:read tickets:write")
    error_of(widened, 400, "invalid_scope")
    same = live.exchange("tickets-svc", cap, resource="https://tickets.example", scope="tickets:read")
    assert same.status_code == 200, same.text


def test_revoked_capability_cannot_be_chained(chain: LiveIssuer) -> None:
    cap = _capability(chain)
    resp = chain.post_form("/revoke", [("token", cap)], auth=("mcp-helpdesk", chain.secrets["mcp-helpdesk"]))
    assert resp.status_code == 200
    error_of(chain.exchange("tickets-svc", cap, resource="https://files.example", scope="files:read"),
             400, "invalid_grant")
