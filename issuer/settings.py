"""Settings: one frozen object built from ``ISSUER_*`` environment variables.

Every knob has a default and a description (rendered into docs/configuration.md) and is validated when
the process starts; :func:`load_settings` turns a bad value into one line that
names the variable, so a typo stops start-up instead of weakening a check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError
from .loopback import is_loopback

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISSUER_", frozen=True, extra="ignore")

    # Descriptions are rendered into docs/configuration.md by scripts/gen_config_reference.py;
    # tests/test_docs.py fails when that file no longer matches them.
    url: str = Field(
        "http://127.0.0.1:8000",
        description="Issuer identifier: `iss` of every capability, base of every endpoint URL, audience of actor "
        "tokens and client assertions. Must be `https` unless the host is a loopback address; no path, query or "
        "fragment (the metadata lives at the host root, RFC 8414); a trailing `/` is removed.",
    )
    database_url: str = Field(
        "sqlite:///issuer.db",
        description="SQLAlchemy URL: `sqlite:///path` (embedded default) or `postgresql+psycopg://user:pass@host/db` "
        "(production; `postgresql://` and `postgres://` are rewritten to the psycopg driver).",
    )
    keys_dir: Path = Field(
        Path("keys"),
        description="Folder with the signing keys, `keyset.json` and the pepper. Shared by every replica; "
        "relative paths are relative to the working directory.",
    )
    redis_url: str = Field(
        "",
        description="`redis://` or `rediss://` URL of the Redis that holds rate-limit counters and the "
        "`private_key_jwt` replay cache, shared by every worker and replica. Empty: rate limits are counted in "
        "each process and the replay cache is the `replay_cache` table.",
    )
    db_timeout: float = Field(
        5.0, ge=1.0, le=120.0,
        description="Deadline of every database wait, seconds: a connection attempt (at least 2 s, libpq's "
        "floor), one statement's round trip, a commit, a pooled connection's liveness check, the wait for a "
        "free pooled connection. A database that stops answering makes a request a `503` within about twice "
        "this (the liveness check, then one connection attempt), never after the outage. The server is asked "
        "to cancel a statement at 90% of it, and TCP keepalives and `tcp_user_timeout` close a silent "
        "connection at the kernel level too. SQLite waits for a lock at most 15 s.",
    )
    redis_timeout: float = Field(
        0.5, gt=0.0, le=10.0,
        description="Deadline of every Redis connect, command and health check, seconds: a Redis that stops "
        "answering costs a rate-limit check this long once, then the per-process fallback (and the replay "
        "cache a `503`).",
    )
    signing_alg: Literal["ES256", "EdDSA"] = Field(
        "ES256",
        description="Algorithm of the key set `issuer init` creates when it is not given `--alg`. Rotation keeps "
        "the next key's algorithm unless `issuer keys rotate --alg` says otherwise.",
    )
    token_lifetime: int = Field(
        300, ge=10, le=900,
        description="Default and maximum capability lifetime, seconds; policy and clients may only lower it.",
    )
    leeway: int = Field(
        30, ge=0, le=120,
        description="Clock skew tolerated on subject and actor tokens and client assertions, seconds.",
    )
    dpop_nonce: bool = Field(
        False,
        description="Require a server nonce in DPoP proofs at the token endpoint (RFC 9449 section 8): a proof "
        "made in advance or outside the nonce's 1 to 2 minute life is refused with `use_dpop_nonce`.",
    )
    refresh_interval: float = Field(
        2.0, ge=0.0, le=60.0,
        description="How often each process checks for a new registry or policy version and a changed key set, "
        "seconds; `0` checks on every request.",
    )
    jwks_max_age: float = Field(
        300.0, ge=60.0, le=86400.0,
        description="Longest time an identity provider's key set is used without refetching, seconds; the "
        "provider's `Cache-Control: max-age` is honoured between 60 s and this value.",
    )
    jwks_refetch_cooldown: float = Field(
        10.0, ge=1.0, le=3600.0,
        description="Minimum time between two refetches of one provider's keys caused by an unknown `kid`, and "
        "the back-off after a failed fetch, seconds.",
    )
    http_timeout: float = Field(
        3.0, gt=0.0, le=30.0,
        description="Timeout for outgoing HTTP (provider JWKS and discovery documents), seconds; a whole fetch "
        "may take at most twice this.",
    )
    allow_insecure_loopback: bool = Field(
        False,
        description="Development only: allow `http://` JWKS and discovery URLs on loopback addresses. It also "
        "lets `ISSUER_URL` be `http://` on any host. Never set it in production.",
    )
    rate_limit: str = Field(
        "120/minute;20/second",
        description="Exchanges per user per tool (limits syntax) for tools without their own `--rate-limit` "
        "and not covered by a policy rule's `rate_limit`. Checked at start-up.",
    )
    max_chain_depth: int = Field(
        4, ge=1, le=16,
        description="Most actors a presented capability's `act` chain may hold for it to be chained again.",
    )
    max_body_bytes: int = Field(
        64 * 1024, ge=4096, le=4 * 1024 * 1024,
        description="Largest accepted request body, bytes; larger bodies get `413`.",
    )
    key_retention: int = Field(
        3600, ge=900, le=30 * 86400,
        description="How long a retired signing key stays published after retirement, seconds; keep it at or "
        "above the longest capability lifetime.",
    )
    trusted_proxies: int = Field(
        0, ge=0, le=5,
        description="Number of reverse proxies whose `X-Forwarded-For`, `-Proto` and `-Host` headers are "
        "trusted (0 = none); the forwarded client address is what audit rows record.",
    )
    host: str = Field("127.0.0.1", description="`issuer serve` listen address (`0.0.0.0` in a container).")
    port: int = Field(8000, ge=1, le=65535, description="`issuer serve` listen port.")
    workers: int = Field(2, ge=1, le=64, description="`issuer serve` worker processes.")
    threads: int = Field(
        4, ge=1, le=64,
        description="Threads per `issuer serve` worker (`gthread`; `sync` when 1). Each worker's database pool "
        "is this plus 2.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level under `issuer serve`, for gunicorn and the issuer's JSON log lines."
    )
    console_idle_timeout: int = Field(
        900, ge=60, le=86400,
        description="Admin console (`/console`): a signed-in session with no request for this long is signed "
        "out, seconds. A session also ends 12 hours after sign-in, whatever its activity.",
    )

    @field_validator("url")
    @classmethod
    def _issuer_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment (RFC 8414 section 2)")
        if parts.path not in ("", "/"):
            # RFC 8414 would put the metadata at /.well-known/oauth-authorization-server/<path>,
            # which this app does not serve: give each issuer its own host name instead.
            raise ValueError("must not have a path: serve the issuer at the root of its host")
        return v.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        if v.startswith("postgres:") or v.startswith("postgresql:"):
            v = "postgresql+psycopg:" + v.split(":", 1)[1]
        return v

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, v: str) -> str:
        from .ratelimit import parse_limits

        try:
            parse_limits("rate limit", v)
        except ConfigurationError as e:
            raise ValueError(str(e).split(": ", 1)[1]) from None
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        return v

    @model_validator(mode="after")
    def _https_issuer(self) -> Settings:
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not self.allow_insecure_loopback and not is_loopback(parts.hostname):
            raise ValueError("ISSUER_URL must be https unless it is a loopback address")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")


def load_settings(**overrides: object) -> Settings:
    """Build the settings or raise ConfigurationError with one line naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        err = e.errors()[0]
        loc = "_".join(str(p) for p in err.get("loc", ())) or "settings"
        name = f"ISSUER_{loc.upper()}" if loc != "settings" else "settings"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise ConfigurationError(f"{name}: {msg}") from None
