"""The signing-key folder: creation, the published JWKS, rotation, retention, replicas and corruption."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from freezegun import freeze_time

from issuer.errors import ConfigurationError
from issuer.keys import KeyInfo, KeyStore, jwk_thumbprint

START = "2030-01-01T00:00:00Z"
T0 = 1893456000  # START as epoch seconds
RETENTION = 900


def store(path: Path, *, retention: int = RETENTION, refresh_interval: float = 0) -> KeyStore:
    return KeyStore(path, retention=retention, refresh_interval=refresh_interval)


def kids(jwks: dict[str, Any]) -> list[str]:
    return [k["kid"] for k in jwks["keys"]]


def by_state(ks: KeyStore) -> dict[str, list[KeyInfo]]:
    out: dict[str, list[KeyInfo]] = {"active": [], "next": [], "retired": []}
    for info in ks.infos():
        out[info.state].append(info)
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def backdate_keyset(directory: Path) -> None:
    """Make the last keyset.json write look an hour old.

    Replicas notice a new key set by its modification time. On a filesystem with
    coarse timestamps, two writes in one tick share one mtime (see
    test_change_within_one_timestamp_tick_is_seen): in production `init` and
    `keys rotate` are minutes apart, so tests that are about something else put
    them apart too, instead of depending on the filesystem's timestamp resolution.
    """
    path = directory / "keyset.json"
    st = path.stat()
    old = st.st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(old, old))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def independent_thumbprint(pem_path: Path) -> tuple[str, dict[str, str]]:
    """RFC 7638 computed from the private key file, without issuer.keys: (thumbprint, public members)."""
    key = serialization.load_pem_private_key(pem_path.read_bytes(), password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        nums = key.public_key().public_numbers()
        x, y = b64(nums.x.to_bytes(32, "big")), b64(nums.y.to_bytes(32, "big"))
        canonical = '{"crv":"P-256","kty":"EC","x":"' + x + '","y":"' + y + '"}'
        members = {"kty": "EC", "crv": "P-256", "x": x, "y": y}
    else:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        x = b64(raw)
        canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + x + '"}'
        members = {"kty": "OKP", "crv": "Ed25519", "x": x}
    return b64(hashlib.sha256(canonical.encode()).digest()), members


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


# --------------------------------------------------------------------------- ensure


def test_ensure_creates_an_active_and_a_next_key_and_a_pepper(keydir: Path) -> None:
    ks = store(keydir)
    with freeze_time(START):
        assert ks.ensure("ES256") is True
    states = by_state(ks)
    assert len(states["active"]) == 1
    assert len(states["next"]) == 1
    assert states["retired"] == []
    active, nxt = states["active"][0], states["next"][0]
    assert active.kid != nxt.kid
    assert (active.alg, nxt.alg) == ("ES256", "ES256")
    assert active.created_at == nxt.created_at == T0
    assert active.activated_at == T0
    assert nxt.activated_at is None
    assert (keydir / f"{active.kid}.pem").is_file()
    assert (keydir / f"{nxt.kid}.pem").is_file()
    assert len(ks.pepper()) == 32
    assert ks.signing_key().kid == active.kid
    assert isinstance(ks.signing_key().private_key, ec.EllipticCurvePrivateKey)


def test_ensure_writes_secrets_readable_by_the_owner_only(keydir: Path) -> None:
    ks = store(keydir)
    ks.ensure("ES256")
    assert mode(keydir) == 0o700
    secret_files = [keydir / "pepper", keydir / "keyset.json", *(keydir / f"{i.kid}.pem" for i in ks.infos())]
    assert len(secret_files) == 4
    for path in secret_files:
        assert mode(path) == 0o600, path
    # No temporary file is left behind by the atomic writes.
    assert not [p.name for p in keydir.iterdir() if p.name.endswith(".tmp")]


def test_ensure_tightens_a_key_folder_that_already_exists(keydir: Path) -> None:
    # The repository ships keys/.gitkeep, so `issuer init` from a checkout finds keys/ already there, 0755.
    keydir.mkdir(mode=0o755)
    os.chmod(keydir, 0o755)
    store(keydir).ensure("ES256")
    assert mode(keydir) == 0o700


def test_ensure_is_idempotent(keydir: Path) -> None:
    ks = store(keydir)
    assert ks.ensure("ES256") is True
    before = {p.name: p.read_bytes() for p in keydir.iterdir()}
    infos = ks.infos()
    assert store(keydir).ensure("ES256") is False
    assert store(keydir).ensure("EdDSA") is False
    assert {p.name: p.read_bytes() for p in keydir.iterdir()} == before
    assert store(keydir).infos() == infos


def test_ensure_with_eddsa_creates_ed25519_keys(keydir: Path) -> None:
    ks = store(keydir)
    ks.ensure("EdDSA")
    assert {i.alg for i in ks.infos()} == {"EdDSA"}
    assert isinstance(ks.signing_key().private_key, ed25519.Ed25519PrivateKey)
    assert {(k["kty"], k["crv"], k["alg"]) for k in ks.jwks()["keys"]} == {("OKP", "Ed25519", "EdDSA")}


@pytest.mark.parametrize("alg", ["RS256", "HS256", "none", "es256"])
def test_unsupported_algorithms_are_refused(keydir: Path, alg: str) -> None:
    with pytest.raises(ConfigurationError, match="unsupported signing algorithm"):
        store(keydir).ensure(alg)
    ks = store(keydir)
    ks.ensure("ES256")
    infos = ks.infos()
    with pytest.raises(ConfigurationError, match="unsupported signing algorithm"):
        ks.rotate(alg)
    assert ks.infos() == infos


def test_a_folder_without_keys_cannot_rotate_or_sign(keydir: Path) -> None:
    ks = store(keydir)
    with pytest.raises(ConfigurationError, match="issuer init"):
        ks.rotate()
    with pytest.raises(ConfigurationError, match="no active signing key"):
        ks.signing_key()
    with pytest.raises(ConfigurationError, match="pepper"):
        ks.pepper()
    assert ks.jwks() == {"keys": []}


# --------------------------------------------------------------------------- JWKS


def test_jwks_publishes_public_members_only(keydir: Path) -> None:
    ks = store(keydir)
    ks.ensure("ES256")
    ks.rotate("EdDSA")
    jwks = ks.jwks()
    assert len(jwks["keys"]) == 3
    for jwk in jwks["keys"]:
        assert jwk["use"] == "sig"
        public = {"EC": {"kty", "crv", "x", "y"}, "OKP": {"kty", "crv", "x"}}[jwk["kty"]]
        assert set(jwk) == public | {"kid", "alg", "use"}
        assert jwk["alg"] == {"EC": "ES256", "OKP": "EdDSA"}[jwk["kty"]]
    assert json.loads(ks.jwks_bytes()) == jwks
    for info in ks.infos():
        key = serialization.load_pem_private_key((keydir / f"{info.kid}.pem").read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            secret = key.private_numbers().private_value.to_bytes(32, "big")
        else:
            assert isinstance(key, ed25519.Ed25519PrivateKey)
            secret = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption())
        assert b64(secret) not in ks.jwks_bytes().decode()
    assert "pepper" not in ks.jwks_bytes().decode()
    assert ks.pepper().hex() not in ks.jwks_bytes().decode()


def test_kid_is_the_rfc7638_thumbprint_of_the_key_on_disk(keydir: Path) -> None:
    ks = store(keydir)
    ks.ensure("ES256")
    ks.rotate("EdDSA")  # next key is Ed25519: both key types are covered
    published = {k["kid"]: k for k in ks.jwks()["keys"]}
    assert len(published) == 3
    for info in ks.infos():
        thumbprint, members = independent_thumbprint(keydir / f"{info.kid}.pem")
        assert info.kid == thumbprint
        jwk = published[info.kid]
        assert {k: jwk[k] for k in members} == members


@pytest.mark.parametrize(
    ("jwk", "expected"),
    [
        (  # RFC 7638 section 3.1
            {
                "kty": "RSA",
                "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
                "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQ"
                "MicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRw"
                "r3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
                "e": "AQAB",
                "alg": "RS256",
                "kid": "2011-04-29",
            },
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
        ),
        (  # RFC 8037 appendix A.3
            {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "use": "sig"},
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
        ),
    ],
)
def test_jwk_thumbprint_matches_the_rfc_examples(jwk: dict[str, Any], expected: str) -> None:
    assert jwk_thumbprint(jwk) == expected


def test_the_signing_key_verifies_against_the_published_jwks(keydir: Path) -> None:
    ks = store(keydir)
    ks.ensure("ES256")
    sk = ks.signing_key()
    token = jwt.encode({"sub": "alice"}, sk.private_key, algorithm=sk.alg, headers={"kid": sk.kid})
    jwk = next(k for k in ks.jwks()["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"])
    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]]) == {"sub": "alice"}
    assert ks.public_key(sk.kid) is not None
    assert ks.public_key("no-such-kid") is None


# --------------------------------------------------------------------------- rotation


def test_rotate_promotes_the_prepublished_next_key(keydir: Path) -> None:
    ks = store(keydir)
    with freeze_time(START) as frozen:
        ks.ensure("ES256")
        backdate_keyset(keydir)
        old = by_state(ks)
        old_active, old_next = old["active"][0], old["next"][0]
        published_before = kids(ks.jwks())
        assert ks.signing_key().kid == old_active.kid
        assert old_next.kid in published_before  # verifiers can cache it before it ever signs

        frozen.tick(600)
        promoted = ks.rotate()

        assert promoted.kid == old_next.kid
        assert promoted.state == "active"
        assert promoted.activated_at == T0 + 600
        assert ks.signing_key().kid == old_next.kid
        new = by_state(ks)
        assert [i.kid for i in new["active"]] == [old_next.kid]
        assert [(i.kid, i.retired_at, i.activated_at) for i in new["retired"]] == [(old_active.kid, T0 + 600, T0)]
        assert len(new["next"]) == 1
        fresh_next = new["next"][0].kid
        assert fresh_next not in (old_active.kid, old_next.kid)
        assert set(kids(ks.jwks())) == {old_active.kid, old_next.kid, fresh_next}
        assert ks.public_key(old_active.kid) is not None  # tokens it signed still verify


def test_retired_key_is_published_until_retention_has_passed(keydir: Path) -> None:
    """Each check uses a freshly started process (a new KeyStore), which reads the key set as it is."""
    with freeze_time(START) as frozen:
        ks = store(keydir)
        ks.ensure("ES256")
        old_active = ks.signing_key().kid
        ks.rotate()

        frozen.tick(RETENTION)  # exactly `retention` after retirement: still published
        assert old_active in kids(store(keydir).jwks())
        assert store(keydir).public_key(old_active) is not None

        frozen.tick(1)
        replica = store(keydir)
        assert old_active not in kids(replica.jwks())
        assert replica.public_key(old_active) is None
        assert len(replica.jwks()["keys"]) == 2  # the active and the next key


def test_running_process_stops_publishing_a_retired_key_after_retention(keydir: Path) -> None:
    with freeze_time(START) as frozen:
        ks = store(keydir)
        ks.ensure("ES256")
        backdate_keyset(keydir)
        old_active = ks.signing_key().kid
        ks.rotate()
        assert old_active in kids(ks.jwks())

        frozen.tick(RETENTION + 1)
        assert old_active not in kids(ks.jwks())
        assert ks.public_key(old_active) is None


def test_later_rotate_deletes_files_of_expired_retired_keys(keydir: Path) -> None:
    with freeze_time(START) as frozen:
        ks = store(keydir)
        ks.ensure("ES256")
        first = ks.signing_key().kid
        second = ks.rotate().kid  # `first` retired at T0
        assert (keydir / f"{first}.pem").exists()

        frozen.tick(RETENTION)
        third = ks.rotate().kid  # `first` is exactly at the end of retention: kept; `second` retired
        assert (keydir / f"{first}.pem").exists()
        assert first in [i.kid for i in ks.infos()]

        frozen.tick(1)
        fourth = ks.rotate().kid  # `first` expired: forgotten and its file deleted; `third` retired
        assert not (keydir / f"{first}.pem").exists()
        assert first not in [i.kid for i in ks.infos()]
        states = by_state(ks)
        retired = {(i.kid, i.retired_at) for i in states["retired"]}
        assert retired == {(second, T0 + RETENTION), (third, T0 + RETENTION + 1)}
        assert [i.kid for i in states["active"]] == [fourth]
        assert {p.stem for p in keydir.glob("*.pem")} == {i.kid for i in ks.infos()}
        assert len(ks.infos()) == 4


def test_eddsa_can_be_chosen_for_the_next_key(keydir: Path) -> None:
    ks = store(keydir)
    ks.ensure("ES256")
    backdate_keyset(keydir)
    promoted = ks.rotate("EdDSA")
    assert promoted.alg == "ES256"  # the already published next key is promoted as it was
    nxt = by_state(ks)["next"][0]
    assert nxt.alg == "EdDSA"
    key = serialization.load_pem_private_key((keydir / f"{nxt.kid}.pem").read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    jwk = next(k for k in ks.jwks()["keys"] if k["kid"] == nxt.kid)
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")

    backdate_keyset(keydir)
    promoted = ks.rotate()  # without --alg the next key's algorithm carries on
    assert (promoted.kid, promoted.alg) == (nxt.kid, "EdDSA")
    assert by_state(ks)["next"][0].alg == "EdDSA"
    sk = ks.signing_key()
    assert (sk.kid, sk.alg) == (nxt.kid, "EdDSA")
    assert isinstance(sk.private_key, ed25519.Ed25519PrivateKey)
    token = jwt.encode({"sub": "bob"}, sk.private_key, algorithm="EdDSA", headers={"kid": sk.kid})
    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"]) == {"sub": "bob"}


# --------------------------------------------------------------------------- replicas


def test_two_replicas_agree_after_their_refresh_interval(keydir: Path) -> None:
    with freeze_time(START) as frozen:
        store(keydir).ensure("ES256")
        backdate_keyset(keydir)  # `issuer init` ran at deploy time, long before the rotation
        a = store(keydir, refresh_interval=5)
        b = store(keydir, refresh_interval=5)
        before_kid = a.signing_key().kid
        assert b.signing_key().kid == before_kid
        jwks_before = b.jwks()

        frozen.tick(1)
        promoted = store(keydir).rotate()  # `issuer keys rotate`, a third process

        # Within the interval both still serve what they loaded.
        assert a.signing_key().kid == before_kid
        assert b.signing_key().kid == before_kid
        assert b.jwks() == jwks_before

        frozen.tick(5)
        assert a.signing_key().kid == promoted.kid
        assert b.signing_key().kid == promoted.kid
        assert a.jwks() == b.jwks()
        assert a.jwks_bytes() == b.jwks_bytes()
        assert len(a.jwks()["keys"]) == 3
        assert before_kid in kids(b.jwks())


def test_change_within_one_timestamp_tick_is_seen(keydir: Path) -> None:
    store(keydir).ensure("ES256")
    path = keydir / "keyset.json"
    replica = store(keydir, refresh_interval=0)
    old = replica.signing_key().kid
    stamp = path.stat()
    promoted = store(keydir).rotate()
    # What a filesystem with coarse timestamps does when both writes fall in the same tick:
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert promoted.kid != old
    assert replica.signing_key().kid == promoted.kid


# --------------------------------------------------------------------------- corruption


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", '{"keys": 5}', '{"keys": [{"kid": "x"}]}', '{"nokeys": []}', ""],
)
def test_corrupt_keyset_is_a_configuration_error_naming_the_file(keydir: Path, content: str) -> None:
    store(keydir).ensure("ES256")
    path = keydir / "keyset.json"
    path.write_text(content)
    for call in (lambda ks: ks.infos(), lambda ks: ks.rotate(), lambda ks: ks.ensure("ES256"),
                 lambda ks: ks.signing_key(), lambda ks: ks.jwks()):
        with pytest.raises(ConfigurationError) as e:
            call(store(keydir))
        assert str(path) in str(e.value)
        assert "\n" not in str(e.value)
    assert path.read_text() == content  # nothing was overwritten


def test_missing_key_file_is_a_configuration_error_naming_it(keydir: Path) -> None:
    ks = store(keydir)
    ks.ensure("ES256")
    active = by_state(ks)["active"][0].kid
    (keydir / f"{active}.pem").unlink()
    with pytest.raises(ConfigurationError) as e:
        store(keydir).signing_key()
    assert str(keydir / f"{active}.pem") in str(e.value)


# --------------------------------------------------------------------------- concurrency


def test_concurrent_rotations_leave_one_active_and_one_next_key(keydir: Path) -> None:
    store(keydir).ensure("ES256")
    rounds = 5
    barrier = threading.Barrier(2)
    promoted: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        ks = store(keydir)  # each thread is its own "process" on the shared folder
        try:
            barrier.wait(timeout=10)
            for _ in range(rounds):
                promoted.append(ks.rotate().kid)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert time.monotonic() - started < 30

    states = by_state(store(keydir))
    assert len(states["active"]) == 1
    assert len(states["next"]) == 1
    # Every rotation promoted a different key and retired the one before it: none was lost or done twice.
    assert len(promoted) == len(set(promoted)) == 2 * rounds
    assert len(states["retired"]) == 2 * rounds
    all_kids = [i.kid for infos in states.values() for i in infos]
    assert len(all_kids) == len(set(all_kids))
    assert states["active"][0].kid in promoted
    assert {p.stem for p in keydir.glob("*.pem")} == set(all_kids)
    fresh = store(keydir)
    assert fresh.signing_key().kid == states["active"][0].kid
    assert len(fresh.jwks()["keys"]) == 2 * rounds + 2
