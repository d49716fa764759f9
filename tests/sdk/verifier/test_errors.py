"""Every error's status, RFC 6750 header and JSON body, exactly; nothing unsafe reaches a header."""

from __future__ import annotations

import pytest

from issuer.constraints import ConstraintViolation
from issuer.sdk.verifier import (
    CapabilityError,
    ConstraintViolated,
    ExpiredToken,
    InsufficientScope,
    InvalidToken,
    IssuerUnavailable,
    MissingToken,
    ReplayCacheUnavailable,
    Replayed,
    Revoked,
    WrongAudience,
)


@pytest.mark.parametrize(("error", "status", "header"), [
    (InvalidToken("the capability signature is invalid"), 401,
     'Bearer error="invalid_token", error_description="the capability signature is invalid"'),
    (MissingToken(), 401, "Bearer"),
    (ExpiredToken(), 401, 'Bearer error="invalid_token", error_description="the capability has expired"'),
    (WrongAudience(), 401,
     'Bearer error="invalid_token", error_description="the capability was issued for another tool"'),
    (Revoked(), 401, 'Bearer error="invalid_token", error_description="the capability has been revoked"'),
    (Replayed(), 401,
     'Bearer error="invalid_token", error_description="the call-bound capability has already been used"'),
    (InsufficientScope(scope="tickets:read"), 403, 'Bearer error="insufficient_scope", scope="tickets:read"'),
    (InsufficientScope(scope="tickets:read tickets:write"), 403,
     'Bearer error="insufficient_scope", scope="tickets:read tickets:write"'),
    (InsufficientScope(action="delete"), 403,
     'Bearer error="insufficient_scope", error_description="action \'delete\' is not granted"'),
    (ConstraintViolated([ConstraintViolation("path", "prefix", "not under '/home/alice/'")]), 403,
     'Bearer error="insufficient_scope", error_description="arguments not admitted: path prefix: not under '
     "'/home/alice/'\""),
    (IssuerUnavailable(), 503,
     'Bearer error="temporarily_unavailable", error_description="the capability issuer is unavailable"'),
    (ReplayCacheUnavailable(), 503,
     'Bearer error="temporarily_unavailable", error_description="the replay cache is unavailable"'),
])
def test_status_and_header(error: CapabilityError, status: int, header: str) -> None:
    assert error.status_code == status
    assert error.www_authenticate() == header
    assert error.headers()["WWW-Authenticate"] == header
    assert error.headers()["Cache-Control"] == "no-store"
    assert error.to_dict() == {"error": error.error, "error_description": error.description}
    assert str(error) == error.description


def test_descriptions_are_header_safe() -> None:
    err = InvalidToken('bad "quote" \\ back\r\nInjected: yes \u202e' + "x" * 500)
    assert err.description.startswith("bad ?quote? ? back??Injected: yes ?")
    assert len(err.description) == 200 and err.description.endswith("...")
    scope = InsufficientScope(scope='a"b\r\nX: y')
    assert scope.www_authenticate() == 'Bearer error="insufficient_scope", scope="a?b X: y"'  # no CR LF


def test_many_violations_are_summarised() -> None:
    err = ConstraintViolated([ConstraintViolation(f"a{i}", "eq", "not equal") for i in range(5)])
    assert err.description.endswith("(+2 more)") and len(err.violations) == 5


def test_retry_after() -> None:
    assert IssuerUnavailable(retry_after=30).headers()["Retry-After"] == "30"
    assert IssuerUnavailable(retry_after=0).headers()["Retry-After"] == "1"
