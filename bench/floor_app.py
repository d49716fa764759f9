"""The least an exchange must do, as a bare Flask app: the floor under the issuer's figures.

``python -m bench.floor`` serves this app exactly as ``issuer serve`` serves the
issuer (gunicorn, gthread, 2 workers x 4 threads) and loads it the way
``make bench`` loads the issuer. Its routes do only the work no token
exchange can skip, with none of the issuer's checks, policy or framework:

``GET /healthz``
    the same hello-world answer as the issuer's.
``POST /floor/crypto``
    form parsing, one constant-time client-secret check (HMAC, as the
    issuer's), one ES256 signature check of the subject token, one ES256
    signature over a capability-sized claim set, a JSON answer.
``POST /floor/io``
    the same, plus what makes it durable and shared: one Redis ``EVALSHA``
    (a counter) and one audit-sized row committed in PostgreSQL (one prepared
    statement through libpq, as the issuer's).

If the throughput of ``/floor/io`` is well under half the hello route's,
no exchange server on this stack can reach that ratio on this machine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import uuid
from typing import Any

import jwt
from flask import Flask, Response, request

__all__ = ["create"]

_SECRET = hashlib.sha256(b"floor-client-secret").digest()
#: a counter per user that lives a minute: the floor leaves nothing behind in Redis
_INCR = "local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('EXPIRE', KEYS[1], 60) end return n"


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def create() -> Flask:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    with open(os.environ["FLOOR_KEY"], "rb") as f:
        key = load_pem_private_key(f.read(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    public = key.public_key()
    header = _b64(json.dumps({"alg": "ES256", "kid": "floor", "typ": "at+jwt"}).encode())
    es256 = jwt.get_algorithm_by_name("ES256")
    app = Flask("floor")
    import psycopg
    import redis

    script = redis.Redis.from_url(os.environ["FLOOR_REDIS_URL"]).register_script(_INCR)  # pooled, thread-safe
    with psycopg.connect(os.environ["FLOOR_DATABASE_URL"], autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS floor_audit (id bigserial PRIMARY KEY, row json NOT NULL)")
    db = threading.local()  # one PostgreSQL connection per request thread, the statement prepared on it

    def io(cap: dict[str, Any]) -> None:
        script(keys=[f"floor:{cap['sub']}"])
        if not hasattr(db, "pg"):
            db.pg = psycopg.connect(os.environ["FLOOR_DATABASE_URL"], autocommit=True)
            db.pg.pgconn.prepare(b"floor_insert", b"INSERT INTO floor_audit (row) VALUES ($1::json)")
        row = {"time": cap["iat"], "request_id": uuid.uuid4().hex, "decision": "granted", "sub": cap["sub"],
               "client_id": cap["client_id"], "actor": cap["act"], "tool": cap["aud"], "granted_scopes": cap["scope"],
               "jti": cap["jti"], "expires_at": cap["exp"], "authorization_details": cap["authorization_details"]}
        result = db.pg.pgconn.exec_prepared(b"floor_insert", [json.dumps(row).encode()])
        if result.status != 1:  # COMMAND_OK
            raise RuntimeError(result.error_message)

    def crypto() -> tuple[dict[str, Any], dict[str, Any]]:
        user, _, secret = base64.b64decode(request.headers["Authorization"][6:]).decode().partition(":")
        if not hmac.compare_digest(hmac.new(_SECRET, secret.encode(), hashlib.sha256).digest(),
                                   hmac.new(_SECRET, b"s3cret", hashlib.sha256).digest()):
            raise PermissionError(user)
        claims = jwt.decode(request.form["subject_token"], public, algorithms=["ES256"], audience="floor")
        now = int(time.time())
        cap = {"iss": "http://127.0.0.1", "sub": claims["sub"], "aud": request.form["resource"],
               "client_id": user, "act": {"sub": user}, "scope": request.form["scope"], "iat": now,
               "exp": now + 300, "jti": secrets.token_urlsafe(16), "txn": secrets.token_urlsafe(12),
               "authorization_details": [{"type": "tool", "locations": [request.form["resource"]],
                                          "actions": ["read"], "constraints": {"path": {"prefix": "/home/x/"}}}]}
        signing_input = header + b"." + _b64(json.dumps(cap, separators=(",", ":")).encode())
        token = (signing_input + b"." + _b64(es256.sign(signing_input, key))).decode()
        return {"access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer", "expires_in": 300, "scope": cap["scope"]}, cap

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(json.dumps({"status": "ok"}), mimetype="application/json",
                        headers={"Cache-Control": "no-store"})

    @app.post("/floor/crypto")
    def floor_crypto() -> Response:
        return Response(json.dumps(crypto()[0]), mimetype="application/json", headers={"Cache-Control": "no-store"})

    @app.post("/floor/io")
    def floor_io() -> Response:
        body, cap = crypto()
        io(cap)
        return Response(json.dumps(body), mimetype="application/json", headers={"Cache-Control": "no-store"})

    return app
