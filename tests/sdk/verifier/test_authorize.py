"""authorize(): scopes, actions, argument constraints, call binding and single use (memory and Redis)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from freezegun import freeze_time

from issuer.sdk.verifier import (
    Capability,
    CapabilityError,
    CapabilityVerifier,
    ConstraintViolated,
    ExpiredToken,
    InsufficientScope,
    ReplayCacheUnavailable,
    Replayed,
)
from issuer.tool_invocation import MAX_INLINE_ARGUMENTS, arguments_digest, bind_arguments
from tests.conftest import free_port, need_service
from tests.sdk.verifier.conftest import AUDIENCE, FakeIssuer

START = "2030-01-01T00:00:00Z"
FILES = {"path": {"prefix": "/home/alice/"}, "limit": {"max": 100}}


def detail(**members: Any) -> list[dict[str, Any]]:
    return [{"type": "tool_invocation", "locations": [AUDIENCE], **members}]


def session(fake: FakeIssuer, verifier: CapabilityVerifier, **members: Any) -> Capability:
    return verifier.verify(fake.token(authorization_details=detail(**members) if members else None))


def bound(fake: FakeIssuer, verifier: CapabilityVerifier, arguments: dict[str, Any], **members: Any) -> Capability:
    return verifier.verify(fake.token(authorization_details=detail(**bind_arguments(arguments), **members)))


# --------------------------------------------------------------------------- scopes


def test_granted_scope(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = session(fake, verifier)
    verifier.authorize(cap, scope="tickets:read")
    verifier.authorize(cap, scope="tickets:read tickets:write")
    verifier.authorize(cap)


def test_missing_scope(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = verifier.verify(fake.token(scope="tickets:read"))
    with pytest.raises(InsufficientScope) as info:
        verifier.authorize(cap, scope="tickets:write")
    err = info.value
    assert (err.status_code, err.scope) == (403, "tickets:write")
    assert err.www_authenticate() == 'Bearer error="insufficient_scope", scope="tickets:write"'
    assert err.to_dict() == {"error": "insufficient_scope", "error_description": "scope tickets:write is not granted"}
    with pytest.raises(InsufficientScope):
        verifier.authorize(cap, scope="tickets:read tickets:write")
    with pytest.raises(InsufficientScope):
        verifier.authorize(cap, scope="tickets")  # no prefix matching


def test_empty_scope_argument_is_a_programming_error(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    with pytest.raises(ValueError):
        verifier.authorize(session(fake, verifier), scope=" ")


# --------------------------------------------------------------------------- actions


def test_actions_listed(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = session(fake, verifier, actions=["read", "list"])
    verifier.authorize(cap, action="read")
    verifier.authorize(cap, action="list")
    with pytest.raises(InsufficientScope) as info:
        verifier.authorize(cap, action="delete")
    assert info.value.action == "delete" and info.value.scope is None
    assert info.value.www_authenticate() == (
        'Bearer error="insufficient_scope", error_description="action \'delete\' is not granted"')


def test_no_actions_member_leaves_actions_to_scopes(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    verifier.authorize(session(fake, verifier, constraints={"project": {"eq": "p1"}}), action="delete",
                       arguments={"project": "p1"})
    verifier.authorize(session(fake, verifier), action="delete")  # no details at all


def test_empty_actions_list_allows_nothing(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    with pytest.raises(InsufficientScope):
        verifier.authorize(session(fake, verifier, actions=[]), action="read")


# --------------------------------------------------------------------------- constraints


def test_constraints_admit(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = session(fake, verifier, actions=["read"], constraints=FILES)
    verifier.authorize(cap, action="read", arguments={"path": "/home/alice/notes.txt", "limit": 10})
    verifier.authorize(cap, arguments={"path": "/home/alice", "limit": 100, "other": "unbounded"})
    verifier.authorize(cap, arguments={"path": "/home/alice/x", "limit": 1})  # reusable: a session capability


@pytest.mark.parametrize("path", [
    "/home/alice/../bob/secret", "/home/alice/./x", "/home/alicex/notes", "/home/bob/notes", "home/alice/x",
    "/home/alice//x", "/home/alice/\x00x", "/home/alice\\..\\bob", "/home/alice/\uff0e\uff0e/bob", "/etc/passwd",
    5, None,
])
def test_path_traversal_refused(fake: FakeIssuer, verifier: CapabilityVerifier, path: Any) -> None:
    cap = session(fake, verifier, constraints=FILES)
    with pytest.raises(ConstraintViolated) as info:
        verifier.authorize(cap, arguments={"path": path, "limit": 1})
    err = info.value
    assert [(v.argument, v.operator) for v in err.violations] == [("path", "prefix")]
    assert err.status_code == 403
    assert err.www_authenticate().startswith('Bearer error="insufficient_scope", error_description="arguments not ')
    assert "\\" not in err.www_authenticate()[len("Bearer "):].replace('\\"', "")


def test_constraint_violation_header_exact(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = session(fake, verifier, constraints=FILES)
    with pytest.raises(ConstraintViolated) as info:
        verifier.authorize(cap, arguments={"path": "/home/bob/x", "limit": 1000})
    assert info.value.www_authenticate() == (
        'Bearer error="insufficient_scope", error_description="arguments not admitted: limit max: above the '
        "maximum 100; path prefix: not under '/home/alice/'\"")


def test_missing_constrained_argument_refused(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = session(fake, verifier, constraints=FILES)
    with pytest.raises(ConstraintViolated) as info:
        verifier.authorize(cap, arguments={"path": "/home/alice/x"})
    assert [(v.argument, v.reason) for v in info.value.violations] == [("limit", "missing")]


def test_no_arguments_fails_closed_when_constrained(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    """Forgetting ``arguments=`` must not skip the constraints."""
    cap = session(fake, verifier, constraints=FILES)
    with pytest.raises(ConstraintViolated) as info:
        verifier.authorize(cap, scope="tickets:read")
    assert {v.argument for v in info.value.violations} == {"path", "limit"}


def test_unknown_operator_fails_closed(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = session(fake, verifier, constraints={"path": {"regex": ".*"}})
    with pytest.raises(ConstraintViolated, match="invalid constraint set"):
        verifier.authorize(cap, arguments={"path": "/x"})


def test_unfilled_template_fails_closed(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = session(fake, verifier, constraints={"path": {"prefix": "/home/${sub}/"}})
    with pytest.raises(ConstraintViolated):
        verifier.authorize(cap, arguments={"path": "/home/${sub}/x"})


def test_hostile_arguments_never_crash(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = session(fake, verifier, constraints=FILES)
    for arguments in ([1, 2], "path", {"path": object(), "limit": float("nan")}, {"path.x": 1}):
        with pytest.raises(ConstraintViolated):
            verifier.authorize(cap, arguments=arguments)  # type: ignore[arg-type]


def test_expired_capability_refused_at_authorize(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    with freeze_time(START) as frozen:
        cap = session(fake, verifier)
        frozen.tick(300 + 30)
        with pytest.raises(ExpiredToken):
            verifier.authorize(cap, scope="tickets:read")


# --------------------------------------------------------------------------- call-bound


CALL = {"path": "/home/alice/notes.txt", "limit": 5, "opts": {"follow": False, "tags": ["a", "é"]}}


def test_call_bound_admits_its_arguments_once(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = bound(fake, verifier, CALL, actions=["read"])
    assert cap.call_bound and cap.arguments == CALL and cap.arguments_sha256 == arguments_digest(CALL)
    reordered = {"opts": {"tags": ["a", "é"], "follow": False}, "limit": 5, "path": "/home/alice/notes.txt"}
    verifier.authorize(cap, action="read", arguments=reordered)  # same canonical JSON
    with pytest.raises(Replayed) as info:
        verifier.authorize(cap, action="read", arguments=CALL)
    assert info.value.www_authenticate() == (
        'Bearer error="invalid_token", error_description="the call-bound capability has already been used"')


@pytest.mark.parametrize("arguments", [
    {**CALL, "limit": 6}, {**CALL, "limit": 5.0}, {**CALL, "limit": True}, {**CALL, "extra": 1},
    {k: v for k, v in CALL.items() if k != "opts"}, {}, None, {**CALL, "opts": {"follow": False, "tags": ["a"]}},
    {**CALL, "limit": float("inf")}, {**CALL, "limit": {1, 2}},
])
def test_call_bound_refuses_other_arguments(
    fake: FakeIssuer, verifier: CapabilityVerifier, arguments: Any
) -> None:
    cap = bound(fake, verifier, CALL)
    with pytest.raises(ConstraintViolated) as info:
        verifier.authorize(cap, arguments=arguments)
    assert [v.operator for v in info.value.violations] == ["bound"]
    verifier.authorize(cap, arguments=CALL)  # a refused attempt did not use the capability up


def test_call_bound_by_digest(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    big = {"body": "x" * (MAX_INLINE_ARGUMENTS + 10)}
    cap = bound(fake, verifier, big)
    assert cap.call_bound and cap.arguments is None and cap.arguments_sha256 == arguments_digest(big)
    with pytest.raises(ConstraintViolated):
        verifier.authorize(cap, arguments={"body": "y" * (MAX_INLINE_ARGUMENTS + 10)})
    verifier.authorize(cap, arguments=big)
    with pytest.raises(Replayed):
        verifier.authorize(cap, arguments=big)


def test_call_bound_also_honours_constraints(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = bound(fake, verifier, {"path": "/etc/passwd", "limit": 1}, constraints=FILES)
    with pytest.raises(ConstraintViolated):
        verifier.authorize(cap, arguments={"path": "/etc/passwd", "limit": 1})


def test_check_is_verify_then_authorize(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    token = fake.token(authorization_details=detail(**bind_arguments(CALL)))
    cap = verifier.check(token, scope="tickets:read", arguments=CALL)
    assert cap.call_bound
    with pytest.raises(Replayed):
        verifier.check(token, scope="tickets:read", arguments=CALL)


def test_memory_replay_cache_is_thread_safe(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = bound(fake, verifier, CALL)
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def use() -> None:
        barrier.wait()
        try:
            verifier.authorize(cap, arguments=CALL)
            outcomes.append("ok")
        except Replayed:
            outcomes.append("replayed")

    threads = [threading.Thread(target=use) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["replayed"] * 19


def test_memory_replay_entries_expire(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    with freeze_time(START) as frozen:
        for _ in range(3):
            verifier.authorize(bound(fake, verifier, CALL), arguments=CALL)
        replay = verifier._replay
        assert len(replay) == 3  # type: ignore[arg-type]
        frozen.tick(300 + 30 + 61)
        verifier.authorize(bound(fake, verifier, CALL), arguments=CALL)
        assert len(replay) == 1  # type: ignore[arg-type]


def test_separate_verifiers_without_a_shared_cache_do_not_share(
    fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]
) -> None:
    """Documented limit of the default: the in-memory cache is per process (use Redis for several)."""
    one, two = make_verifier(), make_verifier()
    token = fake.token(authorization_details=detail(**bind_arguments(CALL)))
    one.check(token, arguments=CALL)
    two.check(token, arguments=CALL)


# --------------------------------------------------------------------------- Redis


@pytest.fixture
def redis_client() -> Iterator[Any]:
    url = need_service("ISSUER_TEST_REDIS_URL", "Redis")
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as e:
        client.close()
        pytest.fail(f"Redis at ISSUER_TEST_REDIS_URL unreachable: {e}")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: Any) -> Iterator[str]:
    value = f"test-verifier:{secrets.token_hex(6)}:"
    yield value
    for key in redis_client.scan_iter(match=value + "*"):
        redis_client.delete(key)


@pytest.mark.redis
def test_redis_replay_cache_shared_by_workers(
    fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier], redis_client: Any, prefix: str
) -> None:
    workers = [make_verifier(replay_cache=redis_client, replay_key_prefix=prefix, leeway=30) for _ in range(2)]
    token = fake.token(authorization_details=detail(**bind_arguments(CALL)))
    cap = workers[0].check(token, arguments=CALL)
    with pytest.raises(Replayed):
        workers[1].check(token, arguments=CALL)
    assert redis_client.get(prefix + cap.jti) == b"1"
    ttl = redis_client.ttl(prefix + cap.jti)
    assert 300 < ttl <= 330  # until exp + leeway
    session_token = fake.token()
    for worker in workers * 2:
        worker.check(session_token, scope="tickets:read")  # session capabilities are not recorded
    assert redis_client.get(prefix + fake.claims()["jti"]) is None


@pytest.mark.redis
def test_redis_refused_arguments_do_not_use_up(
    fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier], redis_client: Any, prefix: str
) -> None:
    verifier = make_verifier(replay_cache=redis_client, replay_key_prefix=prefix)
    cap = bound(fake, verifier, CALL)
    with pytest.raises(ConstraintViolated):
        verifier.authorize(cap, arguments={**CALL, "limit": 6})
    assert redis_client.exists(prefix + cap.jti) == 0
    verifier.authorize(cap, arguments=CALL)
    with pytest.raises(Replayed):
        verifier.authorize(cap, arguments=CALL)


def test_unreachable_redis_fails_closed(fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]) -> None:
    class DownRedis:
        def set(self, name: str, value: int, *, nx: bool, ex: int) -> Any:
            raise ConnectionError(f"connect to 127.0.0.1:{free_port()} refused")

    verifier = make_verifier(replay_cache=DownRedis())
    cap = bound(fake, verifier, CALL)
    with pytest.raises(ReplayCacheUnavailable) as info:
        verifier.authorize(cap, arguments=CALL)
    assert info.value.status_code == 503 and info.value.headers()["Retry-After"] == "5"
    verifier.authorize(session(fake, verifier), scope="tickets:read")  # session capabilities never touch it


def test_redis_like_objects_get_the_documented_call(
    fake: FakeIssuer, make_verifier: Callable[..., CapabilityVerifier]
) -> None:
    calls: list[tuple[str, Any, bool, int]] = []

    class Recorder:
        def set(self, name: str, value: int, *, nx: bool, ex: int) -> bool | None:
            calls.append((name, value, nx, ex))
            return True if len(calls) == 1 else None

    verifier = make_verifier(replay_cache=Recorder(), leeway=30)
    with freeze_time(START):
        cap = bound(fake, verifier, CALL)
        verifier.authorize(cap, arguments=CALL)
        with pytest.raises(Replayed):
            verifier.authorize(cap, arguments=CALL)
    assert calls == [(f"capability-verifier:jti:{cap.jti}", 1, True, 330)] * 2


def test_all_refusals_are_capability_errors(fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    cap = bound(fake, verifier, CALL, actions=["read"])
    for kw in ({"scope": "admin"}, {"action": "write"}, {"arguments": {}}):
        with pytest.raises(CapabilityError):
            verifier.authorize(cap, **kw)


def test_every_operator_with_an_array_operand_works_in_a_session_capability(
        fake: FakeIssuer, verifier: CapabilityVerifier) -> None:
    """The claims are frozen read-only lists; the constraints still evaluate (an `in` was once refused)."""
    cap = session(fake, verifier, constraints={"project": {"in": ["apollo", "gemini"]}, "path": {"glob": "/r/*"}})
    verifier.authorize(cap, arguments={"project": "apollo", "path": "/r/x"})
    with pytest.raises(ConstraintViolated):
        verifier.authorize(cap, arguments={"project": "mercury", "path": "/r/x"})
