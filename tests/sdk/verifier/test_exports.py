"""The public surface is exactly ``__all__``, pinned here, and importing it needs only the base install."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import issuer.sdk.verifier as verifier_sdk
from issuer.sdk.verifier import errors

PUBLIC = [
    "Capability",
    "CapabilityError",
    "CapabilityVerifier",
    "ConstraintViolated",
    "ConstraintViolation",
    "ExpiredToken",
    "InsufficientScope",
    "InvalidDPoPProof",
    "InvalidToken",
    "IssuerUnavailable",
    "MissingToken",
    "RedisLike",
    "ReplayCacheUnavailable",
    "Replayed",
    "Revoked",
    "ServiceUnavailable",
    "WrongAudience",
]


def test_all_is_pinned() -> None:
    assert verifier_sdk.__all__ == PUBLIC


def test_every_public_name_exists_and_says_where_it_lives() -> None:
    for name in PUBLIC:
        member = getattr(verifier_sdk, name)
        assert member.__module__ in ("issuer.sdk.verifier", "issuer.sdk.verifier.errors", "issuer.constraints"), name


def test_no_other_public_names() -> None:
    public = {n for n, v in vars(verifier_sdk).items() if not n.startswith("_") and not isinstance(v, ModuleType)}
    assert public == set(PUBLIC)  # submodules (errors, and adapters other tests imported) aside


def test_error_tree() -> None:
    """The tree drawn in the errors module docstring."""
    e = errors
    parents = {
        e.InvalidToken: e.CapabilityError, e.MissingToken: e.InvalidToken, e.ExpiredToken: e.InvalidToken,
        e.WrongAudience: e.InvalidToken, e.Revoked: e.InvalidToken, e.Replayed: e.InvalidToken,
        e.InsufficientScope: e.CapabilityError, e.ConstraintViolated: e.CapabilityError,
        e.ServiceUnavailable: e.CapabilityError, e.IssuerUnavailable: e.ServiceUnavailable,
        e.ReplayCacheUnavailable: e.ServiceUnavailable,
    }
    for cls, parent in parents.items():
        assert cls.__bases__ == (parent,), cls
        assert cls.__name__ in (errors.__doc__ or "")
    assert e.CapabilityError.__bases__ == (Exception,)
    assert sorted(errors.__all__) == sorted(n for n in PUBLIC if n not in ("Capability", "CapabilityVerifier",
                                                                          "RedisLike"))


def test_import_needs_no_server_dependency() -> None:
    """In a fresh interpreter: importing the SDK loads none of the server stack (test_base_install proves it
    works without them installed at all)."""
    code = (
        "import sys, issuer.sdk.verifier, issuer.sdk.verifier.errors\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'werkzeug', 'sqlalchemy', 'authlib',"
        " 'httpx', 'redis', 'starlette', 'mcp', 'pydantic', 'anyio', 'yaml', 'alembic', 'joserfc'})\n"
        "server = sorted(m for m in sys.modules if m.startswith('issuer.') and not m.startswith("
        "('issuer.sdk', 'issuer.kernel', 'issuer.constraints', 'issuer.tool_invocation', 'issuer.clock',"
        " 'issuer.loopback', 'issuer.dpop')))\n"
        "print(bad, server)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"
