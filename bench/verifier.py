"""Micro-benchmark of the verifier SDK's hot path, against its physical limits.

For ES256 and EdDSA, microseconds per operation of:

``raw``
    the signature check alone with ``cryptography``: the floor of this path;
``pyjwt``
    a bare ``jwt.decode`` (signature, ``iss``, ``aud``, ``exp``) of the same
    tokens: what most tools do today;
``sdk_first``
    ``CapabilityVerifier.check`` (verify + authorize scope, action and
    constraints) of a capability the verifier has not seen before: every
    call gets a token with a new ``jti`` and signature;
``sdk_seen``
    the same call for a capability seen before (one token, checked again and
    again), which a verified-token cache can answer without the signature;
``dpop_first`` and ``dpop_seen``
    the same two for a DPoP-bound capability (``cnf.jkt``) presented with a
    fresh proof each time (RFC 9449: ``verify_request`` + ``authorize``): the
    proof's own signature check, its claims and ``ath``, and its ``jti``
    recorded once, next to the bearer figures. Proofs are made beforehand:
    the client's cost is not the verifier's.

Targets (issue "Benchmark suite"): ``sdk_first`` at most ``pyjwt``, and
``sdk_seen`` at least 10 times faster than ``pyjwt``. Pinned JWKS, so no I/O:
the figures are CPU only, on one core. Each figure is the best of several
rounds (the least disturbed by whatever else runs on the machine), and each
first-seen round uses a new verifier and new tokens, so a cache kept by the
verifier instance cannot turn "first seen" into "seen before".

Run alone: ``.venv/bin/python -m bench.verifier [N]`` (also ``scripts/bench_verifier.py``).
"""

from __future__ import annotations

import base64
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from issuer.dpop import access_token_hash, jwk_thumbprint
from issuer.sdk.verifier import CapabilityVerifier

__all__ = ["ALGORITHMS", "bench", "main", "run_all"]

ISSUER, AUDIENCE = "https://issuer.example", "https://files.example"
URL = AUDIENCE + "/read"
ALGORITHMS = ("ES256", "EdDSA")
ROUNDS = 5


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _time_each(fn: Callable[[Any], Any], items: list[Any]) -> float:
    """Microseconds per call of ``fn(item)`` over ``items``."""
    start = time.perf_counter()
    for it in items:
        fn(it)
    return (time.perf_counter() - start) / len(items) * 1e6


def _claims(now: int) -> dict[str, Any]:
    return {"iss": ISSUER, "sub": "idp-a:alice", "aud": AUDIENCE, "client_id": "mcp-helpdesk",
            "act": {"sub": "mcp-helpdesk"}, "scope": "files:read", "iat": now, "nbf": now, "exp": now + 3600,
            "jti": secrets.token_hex(16), "pol": 1,
            "authorization_details": [{"type": "tool_invocation", "locations": [AUDIENCE], "actions": ["read"],
                                       "constraints": {"path": {"prefix": "/home/alice/"}}}]}


def bench(alg: str, n: int, rounds: int = ROUNDS) -> dict[str, float]:
    """µs per operation for one algorithm (best of ``rounds``)."""
    key: Any
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="k1", alg=alg, use="sig")
    public = key.public_key()
    pyjwk = jwt.PyJWK(jwk)
    args = {"path": "/home/alice/notes.txt"}

    holder = ec.generate_private_key(ec.SECP256R1())
    holder_jwk = ECAlgorithm.to_jwk(holder.public_key(), as_dict=True)
    jkt = jwk_thumbprint(holder_jwk)

    def sign(bound: bool = False) -> str:
        claims = _claims(int(time.time()))
        if bound:
            claims["cnf"] = {"jkt": jkt}
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": "k1", "typ": "at+jwt"})

    def proof(token: str) -> tuple[str, str]:
        body = {"jti": secrets.token_urlsafe(16), "htm": "GET", "htu": URL, "iat": int(time.time()),
                "ath": access_token_hash(token)}
        return token, jwt.encode(body, holder, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": holder_jwk})

    def split(token: str) -> tuple[bytes, bytes]:
        head, payload, sig = token.split(".")
        signature = _b64d(sig)
        if alg == "ES256":
            signature = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                             int.from_bytes(signature[32:], "big"))
        return f"{head}.{payload}".encode(), signature

    def raw(parts: tuple[bytes, bytes]) -> None:
        if alg == "ES256":
            public.verify(parts[1], parts[0], ec.ECDSA(hashes.SHA256()))
        else:
            public.verify(parts[1], parts[0])

    def pyjwt(token: str) -> None:
        jwt.decode(token, pyjwk, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER)

    best = {"raw_us": float("inf"), "pyjwt_us": float("inf"), "sdk_first_us": float("inf"),
            "sdk_seen_us": float("inf"), "dpop_first_us": float("inf"), "dpop_seen_us": float("inf")}
    for _ in range(rounds):
        tokens = [sign() for _ in range(n)]  # new tokens every round: none was seen by anyone before
        verifier = CapabilityVerifier(issuer=ISSUER, audience=AUDIENCE, jwks={"keys": [jwk]})

        def sdk(token: str, verifier: CapabilityVerifier = verifier) -> None:
            verifier.check(token, scope="files:read", action="read", arguments=args)

        def dpop(pair: tuple[str, str], verifier: CapabilityVerifier = verifier) -> None:
            verifier.check_request(authorization=f"DPoP {pair[0]}", dpop=pair[1], method="GET", url=URL,
                                   scope="files:read", action="read", arguments=args)

        sdk(sign())  # warm the verifier (key parsing) on a token that is not measured
        bound = [sign(bound=True) for _ in range(n)]
        first_pairs = [proof(t) for t in bound]
        seen_pairs = [proof(bound[0]) for _ in range(n)]
        best["raw_us"] = min(best["raw_us"], _time_each(raw, [split(t) for t in tokens]))
        best["pyjwt_us"] = min(best["pyjwt_us"], _time_each(pyjwt, tokens))
        best["sdk_first_us"] = min(best["sdk_first_us"], _time_each(sdk, tokens))
        best["sdk_seen_us"] = min(best["sdk_seen_us"], _time_each(sdk, [tokens[0]] * n))
        best["dpop_first_us"] = min(best["dpop_first_us"], _time_each(dpop, first_pairs))
        best["dpop_seen_us"] = min(best["dpop_seen_us"], _time_each(dpop, seen_pairs))
        verifier.close()
    best["first_over_pyjwt"] = best["sdk_first_us"] / best["pyjwt_us"]
    best["pyjwt_over_seen"] = best["pyjwt_us"] / best["sdk_seen_us"]
    best["n"] = n
    return best


def run_all(n: int = 2000, rounds: int = ROUNDS) -> dict[str, dict[str, float]]:
    return {alg: bench(alg, n, rounds) for alg in ALGORITHMS}


def format_table(results: dict[str, dict[str, float]]) -> str:
    n = int(next(iter(results.values()))["n"])
    lines = [f"{'alg':<6} {'raw µs':>8} {'pyjwt µs':>9} {'sdk first µs':>13} {'sdk seen µs':>12} "
             f"{'first/pyjwt':>11} {'pyjwt/seen':>10} {'dpop first µs':>14} {'dpop seen µs':>13}"
             f"   (N={n}, best of {ROUNDS}, one core; DPoP proofs ES256)"]
    for alg, r in results.items():
        lines.append(f"{alg:<6} {r['raw_us']:8.1f} {r['pyjwt_us']:9.1f} {r['sdk_first_us']:13.1f} "
                     f"{r['sdk_seen_us']:12.1f} {r['first_over_pyjwt']:11.2f} {r['pyjwt_over_seen']:10.2f} "
                     f"{r.get('dpop_first_us', float('nan')):14.1f} {r.get('dpop_seen_us', float('nan')):13.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    n = int(argv[0]) if argv else 2000
    print(format_table(run_all(n)))


if __name__ == "__main__":
    main()
