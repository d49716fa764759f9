#!/usr/bin/env python3
"""A development identity provider in one file: a key pair, its public JWKS, and user tokens.

For trying the issuer without a real IdP (README quick start). Needs only
PyJWT and cryptography. Never use it in production: its private key sits in
a plain file.

    python scripts/dev_idp.py init                      # writes dev-idp/{key.pem,jwks.json}
    python scripts/dev_idp.py token --sub alice --groups support --aud https://mcp.helpdesk.example
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ISSUER = "https://idp.dev.example"


def init(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / "key.pem"
    if not key_path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        key_path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        )
        key_path.chmod(0o600)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="dev-1", alg="ES256", use="sig")
    (folder / "jwks.json").write_text(json.dumps({"keys": [jwk]}, indent=2))
    print(f"dev IdP ready: issuer {ISSUER}, public keys in {folder / 'jwks.json'}")


def token(folder: Path, sub: str, groups: list[str], aud: str, lifetime: int) -> None:
    key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), password=None)
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": sub, "aud": aud, "iat": now, "exp": now + lifetime,
              "jti": secrets.token_urlsafe(12), "groups": groups, "client_id": "dev-portal"}
    print(jwt.encode(claims, key, algorithm="ES256", headers={"kid": "dev-1", "typ": "at+jwt"}))  # type: ignore[arg-type]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=Path("dev-idp"))
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("init")
    t = sub.add_parser("token")
    t.add_argument("--sub", required=True)
    t.add_argument("--groups", default="", help="comma-separated")
    t.add_argument("--aud", required=True, help="the MCP client's resource URI")
    t.add_argument("--lifetime", type=int, default=600)
    a = p.parse_args()
    if a.cmd == "init":
        init(a.dir)
    else:
        if not (a.dir / "key.pem").exists():
            sys.exit("run `python scripts/dev_idp.py init` first")
        token(a.dir, a.sub, [g for g in a.groups.split(",") if g], a.aud, a.lifetime)


if __name__ == "__main__":
    main()
