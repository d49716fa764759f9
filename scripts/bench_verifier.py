#!/usr/bin/env python3
"""Micro-benchmark of the verifier SDK's hot path, against its physical limits.

For ES256 and EdDSA it prints microseconds per operation of:
  raw      the signature check alone with `cryptography` (the floor of this path)
  pyjwt    a bare `jwt.decode` of the same token (what most tools do today)
  sdk      `CapabilityVerifier.check`: verify + authorize scope, action and constraints
and the SDK's cost relative to the bare decode. Pinned JWKS, so no I/O: the
figures are CPU only. Run: .venv/bin/python scripts/bench_verifier.py [N]
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from issuer.sdk.verifier import CapabilityVerifier

ISSUER, AUDIENCE = "https://issuer.example", "https://files.example"


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _per_op(fn: Callable[[], Any], n: int) -> float:
    for _ in range(min(n, 200)):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def bench(alg: str, n: int) -> tuple[float, float, float]:
    key: Any
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="k1", alg=alg, use="sig")
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "idp-a:alice", "aud": AUDIENCE, "client_id": "mcp-helpdesk",
              "act": {"sub": "mcp-helpdesk"}, "scope": "files:read", "iat": now, "nbf": now, "exp": now + 3600,
              "jti": "0123456789abcdef0123456789abcdef", "pol": 1,
              "authorization_details": [{"type": "tool_invocation", "locations": [AUDIENCE], "actions": ["read"],
                                         "constraints": {"path": {"prefix": "/home/alice/"}}}]}
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": "k1", "typ": "at+jwt"})
    head, payload, sig = token.split(".")
    signing_input, signature = f"{head}.{payload}".encode(), _b64d(sig)
    public = key.public_key()
    if alg == "ES256":
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        raw = lambda: public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))  # noqa: E731
    else:
        raw = lambda: public.verify(signature, signing_input)  # noqa: E731
    pyjwk = jwt.PyJWK(jwk)
    pyjwt = lambda: jwt.decode(token, pyjwk, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER)  # noqa: E731
    verifier = CapabilityVerifier(issuer=ISSUER, audience=AUDIENCE, jwks={"keys": [jwk]})
    args = {"path": "/home/alice/notes.txt"}
    sdk = lambda: verifier.check(token, scope="files:read", action="read", arguments=args)  # noqa: E731
    return _per_op(raw, n), _per_op(pyjwt, n), _per_op(sdk, n)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    print(f"{'alg':<6} {'raw µs':>8} {'pyjwt µs':>9} {'sdk µs':>8} {'sdk/pyjwt':>9}   (N={n}, one core)")
    for alg in ("ES256", "EdDSA"):
        raw, pyjwt, sdk = bench(alg, n)
        print(f"{alg:<6} {raw:8.1f} {pyjwt:9.1f} {sdk:8.1f} {sdk / pyjwt:9.2f}")


if __name__ == "__main__":
    main()
