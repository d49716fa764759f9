"""Capability signing keys: generation, rotation and the published JWKS.

Keys live in ``ISSUER_KEYS_DIR`` (shared by every replica): one PKCS#8 PEM
per key (mode 0600) and ``keyset.json``, which says which key is *next*
(published, not yet signing), *active* (signing) or *retired* (published until
every token it signed has expired). Rotation promotes next to active, so a
verifier that cached the JWKS before the rotation already knows the new key.

Each process re-reads ``keyset.json`` at most once per refresh interval and
reloads when its content changed (content, not modification time: two writes
within one timestamp tick must not go unseen) or when a retired key's
retention has run out, so replicas converge on the same signing key and the
same JWKS within seconds. Writers take an exclusive ``flock`` and replace the
file atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from . import clock
from .dpop import jwk_thumbprint
from .errors import ConfigurationError
from .kernel import strictjson

__all__ = ["JWKS_MAX_AGE", "KeyInfo", "KeyStore", "SigningKey", "jwk_thumbprint"]

State = Literal["next", "active", "retired"]
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_STATE_FILE = "keyset.json"
_PEPPER_FILE = "pepper"


#: How long verifiers may cache metadata and the JWKS; a next key is published at least this long before it signs.
JWKS_MAX_AGE = 300


@dataclass(frozen=True)
class KeyInfo:
    kid: str
    alg: str
    state: State
    created_at: int
    activated_at: int | None = None
    retired_at: int | None = None


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private_key: PrivateKey


def _public_jwk(key: PrivateKey, alg: str) -> dict[str, Any]:
    pub = key.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(pub, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(pub, as_dict=True)
    jwk = {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y")}
    jwk.update(kid=jwk_thumbprint(jwk), alg=alg, use="sig")
    return jwk


def _generate(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ConfigurationError(f"unsupported signing algorithm {alg!r} (ES256 or EdDSA)")


class KeyStore:
    """The key folder, seen by one process. Thread-safe."""

    def __init__(self, directory: Path, *, retention: int, refresh_interval: float = 2.0) -> None:
        self.directory = Path(directory)
        self.retention = retention
        self.refresh_interval = refresh_interval
        self._lock = threading.Lock()
        self._checked_at = -1e18
        self._state_bytes: bytes | None = None
        self._reload_at = float("inf")  #: when the next retired key leaves the JWKS
        self._signing: SigningKey | None = None
        self._jwks: dict[str, Any] = {"keys": []}
        self._jwks_bytes = b'{"keys":[]}'
        self._public_by_kid: dict[str, Any] = {}

    # -- administration (CLI) ---------------------------------------------------
    def ensure(self, alg: str) -> bool:
        """Create the folder, the pepper and an active + next key if there are none. True if created."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # An existing folder (a checkout's keys/, a mounted volume) keeps its mode otherwise.
        os.chmod(self.directory, 0o700)
        with self._exclusive():
            pepper = self.directory / _PEPPER_FILE
            if not pepper.exists():
                self._write_private(pepper, secrets.token_hex(32).encode())
            infos = self._read_state()
            if any(i.state == "active" for i in infos):
                return False
            now = int(clock.now())
            active = self._new_key(alg)
            nxt = self._new_key(alg)
            self._write_state(
                [
                    *infos,
                    KeyInfo(active[0], alg, "active", now, activated_at=now),
                    KeyInfo(nxt[0], alg, "next", now),
                ]
            )
            return True

    def rotate(self, alg: str | None = None, *, min_published: int = 0) -> KeyInfo:
        """Promote next to active, retire the old active key, publish a fresh next key.

        ``min_published``: refuse unless the next key has been in the JWKS that
        long, so verifiers that cached the JWKS (max-age) already know it.
        """
        with self._exclusive():
            infos = self._read_state()
            active = [i for i in infos if i.state == "active"]
            nxt = [i for i in infos if i.state == "next"]
            if not active or not nxt:
                raise ConfigurationError("no key set here: run `issuer init` first")
            now = int(clock.now())
            age = now - nxt[0].created_at
            if age < min_published:
                raise ConfigurationError(
                    f"the next key was published {age}s ago; verifiers may cache the JWKS for "
                    f"{min_published}s: wait {min_published - age}s, or use --force for an emergency"
                )
            new_alg = alg or nxt[0].alg
            kept = [i for i in infos if i.state == "retired" and not self._expired(i, now)]
            for gone in (i for i in infos if i.state == "retired" and self._expired(i, now)):
                (self.directory / f"{gone.kid}.pem").unlink(missing_ok=True)
            promoted = KeyInfo(nxt[0].kid, nxt[0].alg, "active", nxt[0].created_at, activated_at=now)
            retired = [
                KeyInfo(a.kid, a.alg, "retired", a.created_at, a.activated_at, retired_at=now) for a in active
            ]
            fresh_kid, _ = self._new_key(new_alg)
            self._write_state([*kept, *retired, promoted, KeyInfo(fresh_kid, new_alg, "next", now)])
            self._checked_at = -1e18
            return promoted

    def infos(self) -> list[KeyInfo]:
        return self._read_state()

    def pepper(self) -> bytes:
        path = self.directory / _PEPPER_FILE
        try:
            return bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError):
            raise ConfigurationError(f"{path}: missing or unreadable pepper: run `issuer init`") from None

    # -- serving ------------------------------------------------------------------
    def signing_key(self) -> SigningKey:
        self._refresh()
        if self._signing is None:
            raise ConfigurationError(f"{self.directory}: no active signing key: run `issuer init`")
        return self._signing

    def jwks(self) -> dict[str, Any]:
        self._refresh()
        return self._jwks

    def jwks_bytes(self) -> bytes:
        self._refresh()
        return self._jwks_bytes

    def public_key(self, kid: str) -> Any | None:
        """The public key object for a published kid (used to verify our own capabilities)."""
        self._refresh()
        return self._public_by_kid.get(kid)

    def _refresh(self) -> None:
        now = clock.monotonic()
        if now - self._checked_at < self.refresh_interval and self._signing is not None:
            return
        with self._lock:
            if now - self._checked_at < self.refresh_interval and self._signing is not None:
                return
            try:
                data = (self.directory / _STATE_FILE).read_bytes()
            except OSError:
                self._checked_at = now
                return
            if data != self._state_bytes or clock.now() > self._reload_at:
                self._load(data)
            self._checked_at = now

    def _load(self, data: bytes) -> None:
        now = int(clock.now())
        signing: SigningKey | None = None
        keys: list[dict[str, Any]] = []
        public: dict[str, Any] = {}
        reload_at = float("inf")
        for info in self._parse_state(data):
            if info.state == "retired":
                if self._expired(info, now):
                    continue
                reload_at = min(reload_at, float((info.retired_at or now) + self.retention))
            priv = self._load_private(info.kid)
            jwk = _public_jwk(priv, info.alg)
            keys.append(jwk)
            public[info.kid] = priv.public_key()
            if info.state == "active":
                signing = SigningKey(info.kid, info.alg, priv)
        self._signing = signing
        self._jwks = {"keys": keys}
        self._jwks_bytes = json.dumps(self._jwks, separators=(",", ":")).encode()
        self._public_by_kid = public
        self._state_bytes = data
        self._reload_at = reload_at

    # -- files --------------------------------------------------------------------
    def _expired(self, info: KeyInfo, now: int) -> bool:
        return info.retired_at is not None and now > info.retired_at + self.retention

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_state(self) -> list[KeyInfo]:
        path = self.directory / _STATE_FILE
        if not path.exists():
            return []
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ConfigurationError(f"{path}: unreadable key state ({e.strerror})") from None
        return self._parse_state(data)

    def _parse_state(self, data: bytes) -> list[KeyInfo]:
        try:
            # Strict like every other JSON the issuer reads: the key state decides which key signs and which
            # ones the JWKS publishes, so a duplicate member must not pick a key silently.
            return [KeyInfo(**k) for k in strictjson.loads(data)["keys"]]
        except (ValueError, KeyError, TypeError) as e:
            path = self.directory / _STATE_FILE
            raise ConfigurationError(f"{path}: unreadable key state ({type(e).__name__})") from None

    def _write_state(self, infos: list[KeyInfo]) -> None:
        body = json.dumps({"keys": [i.__dict__ for i in infos]}, indent=2).encode()
        self._write_private(self.directory / _STATE_FILE, body)

    def _new_key(self, alg: str) -> tuple[str, PrivateKey]:
        key = _generate(alg)
        kid = _public_jwk(key, alg)["kid"]
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self._write_private(self.directory / f"{kid}.pem", pem)
        return kid, key

    def _load_private(self, kid: str) -> PrivateKey:
        path = self.directory / f"{kid}.pem"
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as e:
            raise ConfigurationError(f"{path}: cannot load signing key ({type(e).__name__})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise ConfigurationError(f"{path}: not an EC or Ed25519 key")
        return key

    @staticmethod
    def _write_private(path: Path, data: bytes) -> None:
        """Write atomically with mode 0600: a reader sees the old file or the new one, never half."""
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
