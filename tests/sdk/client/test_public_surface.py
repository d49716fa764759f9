"""The public surface: exactly ``__all__``, importable without server dependencies, and no secret in any repr."""

from __future__ import annotations

import pickle
import subprocess
import sys
import types

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import issuer.sdk.client
from issuer.sdk.client import (
    ClientSecret,
    ExchangeClient,
    ExchangeError,
    InvalidClient,
    InvalidGrant,
    IssuedCapability,
    IssuerUnavailable,
    PrivateKeyJwt,
    RateLimited,
)
from tests.conftest import LiveIssuer

from .conftest import TICKETS, Scripted, client_for

EXPORTED = [
    "ACCESS_TOKEN_TYPE",
    "JWT_TOKEN_TYPE",
    "ClientSecret",
    "DPoPKey",
    "DiscoveryError",
    "ExchangeClient",
    "ExchangeError",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "IssuedCapability",
    "IssuerUnavailable",
    "PrivateKeyJwt",
    "ProtocolError",
    "RateLimited",
    "UnauthorizedClient",
]


def test_all_is_pinned() -> None:
    assert issuer.sdk.client.__all__ == EXPORTED


def test_every_public_member_is_exported() -> None:
    """As httpx pins it: nothing public that is not in __all__ (public submodules aside)."""
    public = [name for name, value in vars(issuer.sdk.client).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)]
    assert sorted(public) == sorted(EXPORTED)


def test_exports_say_they_live_in_the_package() -> None:
    for name in EXPORTED:
        obj = getattr(issuer.sdk.client, name)
        if isinstance(obj, type):
            assert obj.__module__ == "issuer.sdk.client", name


def test_error_tree() -> None:
    from issuer.sdk import client as c

    for name in ("InvalidRequest", "InvalidClient", "InvalidGrant", "UnauthorizedClient", "InvalidTarget",
                 "InvalidScope", "RateLimited", "IssuerUnavailable", "ProtocolError"):
        assert issubclass(getattr(c, name), c.ExchangeError)
    assert issubclass(c.DiscoveryError, c.ProtocolError)
    assert not issubclass(c.ExchangeError, ValueError)


BLOCKER = """
import sys
BLOCKED = ("httpx", "flask", "sqlalchemy", "authlib", "werkzeug", "joserfc", "alembic", "redis", "yaml",
           "pydantic", "pydantic_settings", "limits", "click", "gunicorn", "psycopg")

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, Block())
import issuer.sdk.client as c
c.ExchangeClient(issuer="https://issuer.example", client_id="x", credentials=c.ClientSecret("s"))
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
assert not loaded, loaded
print("ok")
"""


def test_importing_needs_no_server_dependency() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_httpx_auth_module_needs_httpx_only() -> None:
    code = BLOCKER.replace('"httpx", ', "").replace(
        "import issuer.sdk.client as c", "import issuer.sdk.client.httpx_auth\nimport issuer.sdk.client as c")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# ----------------------------------------------------------------------------- no secret in reprs


def test_client_secret_repr_hides_the_secret() -> None:
    secret = ClientSecret("very-secret-value-123", method="client_secret_post")
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}"):
        assert "very-secret-value-123" not in text
        assert "client_secret_post" in text


def test_private_key_jwt_repr_hides_the_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    creds = PrivateKeyJwt(pem, kid="k1")
    body = pem.splitlines()[1]
    assert body not in repr(creds) and "PRIVATE" not in repr(creds)
    assert repr(creds) == "PrivateKeyJwt(kid='k1', alg='ES256')"


def test_bad_pem_error_does_not_quote_the_key() -> None:
    with pytest.raises(ValueError) as e:
        PrivateKeyJwt("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n",
                      kid="k1")
    assert "c2VjcmV0" not in str(e.value) and e.value.__cause__ is None


def test_private_key_jwt_checks_key_and_alg() -> None:
    with pytest.raises(ValueError, match="P-256"):
        PrivateKeyJwt(ec.generate_private_key(ec.SECP384R1()), kid="k")
    with pytest.raises(ValueError, match="Ed25519"):
        PrivateKeyJwt(ec.generate_private_key(ec.SECP256R1()), kid="k", alg="EdDSA")
    with pytest.raises(ValueError, match="alg"):
        PrivateKeyJwt(ec.generate_private_key(ec.SECP256R1()), kid="k", alg="HS256")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kid"):
        PrivateKeyJwt(ec.generate_private_key(ec.SECP256R1()), kid="")


def test_client_secret_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        ClientSecret("")
    with pytest.raises(ValueError, match="method"):
        ClientSecret("s", method="private_key_jwt")  # type: ignore[arg-type]


def test_capability_repr_hides_the_access_token() -> None:
    cap = IssuedCapability(access_token="eyJ.secret-capability.sig", token_type="Bearer", expires_at=1.0,
                           scope=("tickets:read",))
    for text in (repr(cap), str(cap)):
        assert "secret-capability" not in text
        assert "tickets:read" in text


def test_live_objects_and_errors_never_show_tokens_or_secrets(live_sqlite: LiveIssuer) -> None:
    secret = live_sqlite.secrets["mcp-helpdesk"]
    client = client_for(live_sqlite)
    token = live_sqlite.idp.token()
    cap = client.exchange(token, tool=TICKETS)
    forged = token[:-4] + "AAAA"
    with pytest.raises(InvalidGrant) as refused:
        client.exchange(forged, tool=TICKETS)
    wrong = client_for(live_sqlite, secret=secret[::-1])
    with pytest.raises(InvalidClient) as unauthenticated:
        wrong.exchange(token, tool=TICKETS)
    shown = [repr(client), str(client), repr(wrong), repr(cap), str(cap)]
    for err in (refused.value, unauthenticated.value):
        shown += [repr(err), str(err), *map(str, err.args)]
    for text in shown:
        for value in (token, forged, secret, secret[::-1], cap.access_token):
            assert value not in text


def test_echoed_secrets_are_removed_from_descriptions(scripted: Scripted) -> None:
    """Even an issuer that quotes the request back cannot make an exception carry a token or secret."""
    secret = "client-secret-value-0123456789"
    user = "eyJ.user-token-value.sig"
    actor = "eyJ.actor-token-value.sig"
    scripted.answer(400, {"error": "invalid_grant",
                          "error_description": f"bad token {user} from actor {actor} with secret {secret}"})
    client = scripted.client(credentials=ClientSecret(secret, method="client_secret_post"))
    with pytest.raises(InvalidGrant) as e:
        client.exchange(user, tool=TICKETS, actor_token=actor, actor_token_type="urn:ietf:params:oauth:token-type:jwt")
    for text in (str(e.value), repr(e.value), e.value.description, *map(str, e.value.args)):
        assert user not in text and actor not in text and secret not in text
    assert e.value.description == "bad token [redacted] from actor [redacted] with secret [redacted]"


def test_descriptions_are_printable_and_bounded(scripted: Scripted) -> None:
    scripted.answer(400, {"error": "invalid_scope", "error_description": "line\nbreak\x1b[31m" + "x" * 1000})
    with pytest.raises(ExchangeError) as e:
        scripted.client().exchange("user-token", tool=TICKETS)
    assert e.value.description.isprintable() and len(e.value.description) <= 300


def test_errors_pickle_with_their_attributes() -> None:
    for err in (InvalidGrant("expired", status_code=400), RateLimited("slow", retry_after=3.0),
                IssuerUnavailable("down", status_code=503, retry_after=1.0), ExchangeError("x", error="weird")):
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is type(err) and repr(copy) == repr(err) and str(copy) == str(err)
        assert getattr(copy, "retry_after", None) == getattr(err, "retry_after", None)


def test_client_constructor_checks(live_sqlite: LiveIssuer) -> None:
    creds = ClientSecret("s")
    good = {"issuer": "https://issuer.example", "client_id": "c", "credentials": creds}
    for bad in ({"client_id": ""}, {"timeout": 0}, {"timeout": -1}, {"refresh_margin": -1},
                {"max_cache_entries": -1}, {"issuer": "https://issuer.example?x=1"},
                {"issuer": "https://issuer.example#f"}):
        with pytest.raises(ValueError):
            ExchangeClient(**{**good, **bad})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ExchangeClient(**{**good, "credentials": ("c", "s")})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ExchangeClient("https://issuer.example", "c", creds)  # type: ignore[call-arg]
    assert ExchangeClient(**good).issuer == "https://issuer.example"  # type: ignore[arg-type]
