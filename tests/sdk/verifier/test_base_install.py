"""The verifier works from the base install alone: a fresh venv, ``pip install`` without extras, no server stack.

The venv is built once per session under pytest's tmp dir, from a copy of the
project's packaging files (so the build leaves nothing in the work tree).
It needs PyPI for PyJWT, cryptography and setuptools.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from issuer import clock
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r"""
import importlib.util, json, sys

data = json.load(sys.stdin)
server_stack = ["flask", "werkzeug", "sqlalchemy", "authlib", "httpx", "redis", "starlette", "mcp", "pydantic"]
installed = [m for m in server_stack if importlib.util.find_spec(m) is not None]

from issuer.sdk.verifier import CapabilityVerifier, ConstraintViolated, InvalidToken

verifier = CapabilityVerifier(issuer=data["issuer"], audience=data["audience"], jwks=data["jwks"])
cap = verifier.check(data["token"], scope="tickets:read", action="read", arguments={"path": "/home/alice/x"})
try:
    verifier.authorize(cap, arguments={"path": "/home/bob/x"})
    constraint = "admitted"
except ConstraintViolated as e:
    constraint = e.www_authenticate()
try:
    verifier.verify(data["forged"])
    forged = "accepted"
except InvalidToken as e:
    forged = e.description
try:
    import issuer.sdk.verifier.flask
    adapter = "imported"
except ImportError as e:
    adapter = e.name
print(json.dumps({"installed": installed, "sub": cap.sub, "constraint": constraint, "forged": forged,
                  "adapter": adapter}))
"""


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not IN_CI and not _pypi_reachable():
        pytest.skip("PyPI unreachable: the base-install test needs it to install PyJWT and cryptography")
    root = tmp_path_factory.mktemp("base-install")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "issuer", src / "issuer", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return python


def _token(key: Any, kid: str, **claims: Any) -> str:
    now = int(clock.now())
    body = {"iss": "https://issuer.example", "sub": "alice", "aud": "https://tickets.example",
            "client_id": "mcp-helpdesk", "scope": "tickets:read", "iat": now, "exp": now + 300, "jti": "j1",
            "authorization_details": [{"type": "tool_invocation", "actions": ["read"],
                                       "constraints": {"path": {"prefix": "/home/alice/"}}}], **claims}
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": kid, "typ": "at+jwt"})


def test_verify_with_only_the_base_install(base_venv: Path, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"kid": "k1", "alg": "ES256", "use": "sig"}
    data = {
        "issuer": "https://issuer.example", "audience": "https://tickets.example", "jwks": {"keys": [jwk]},
        "token": _token(key, "k1"), "forged": _token(ec.generate_private_key(ec.SECP256R1()), "k1"),
    }
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # Run outside the work tree so that only the installed copy can be imported.
    proc = subprocess.run([str(base_venv), "-I", "-c", SCRIPT], input=json.dumps(data), capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result == {
        "installed": [],
        "sub": "alice",
        "constraint": 'Bearer error="insufficient_scope", error_description="arguments not admitted: path prefix: '
                      "not under '/home/alice/'\"",
        "forged": "the capability signature is invalid",
        "adapter": "flask",
    }
    assert sys.executable != str(base_venv)


BOTH_SDKS = r"""
import json, sys

data = json.load(sys.stdin)
from issuer.sdk.client import ClientSecret, ExchangeClient, InvalidScope
from issuer.sdk.verifier import CapabilityVerifier

client = ExchangeClient(issuer=data["issuer"], client_id="mcp-helpdesk", credentials=ClientSecret(data["secret"]),
                        allow_insecure_loopback=True)
cap = client.exchange(data["user_token"], tool="https://tickets.example", scope="tickets:read")
verifier = CapabilityVerifier(issuer=data["issuer"], audience="https://tickets.example", allow_insecure_loopback=True)
checked = verifier.check(cap.access_token, scope="tickets:read")
try:
    client.exchange(data["user_token"], tool="https://tickets.example", scope="tickets:write")
    refused = "granted"
except InvalidScope as e:
    refused = e.error
print(json.dumps({"sub": checked.sub, "actors": list(checked.actor_chain), "refused": refused}))
"""


def test_both_sdks_against_the_real_issuer_with_only_the_base_install(base_venv: Path, tmp_path: Path,
                                                                       live_sqlite: Any) -> None:
    """An MCP server and an upstream tool that installed nothing but the base package work end to end."""
    data = {"issuer": live_sqlite.url, "secret": live_sqlite.secrets["mcp-helpdesk"],
            "user_token": live_sqlite.idp.token()}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([str(base_venv), "-I", "-c", BOTH_SDKS], input=json.dumps(data), capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {"sub": "idp-a:alice", "actors": ["mcp-helpdesk"], "refused": "invalid_scope"}
