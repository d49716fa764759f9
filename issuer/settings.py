"""Settings: one frozen object built from ``ISSUER_*`` environment variables.

Every knob has a documented default (docs/operations.md) and is validated when
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

    #: The issuer identifier: ``iss`` of every capability and the base of every endpoint URL.
    url: str = "http://127.0.0.1:8000"
    #: SQLAlchemy URL. SQLite is the embedded default; PostgreSQL (postgresql+psycopg://) in production.
    database_url: str = "sqlite:///issuer.db"
    #: Folder with the signing keys, the key-state file and the client-secret pepper.
    keys_dir: Path = Path("keys")
    #: Redis for rate limits and the replay cache shared by replicas; empty = per-process rate limits and
    #: the database for replay detection.
    redis_url: str = ""
    #: Algorithm of newly generated signing keys.
    signing_alg: Literal["ES256", "EdDSA"] = "ES256"
    #: Default capability lifetime in seconds; policy and clients may only lower it.
    token_lifetime: int = Field(300, ge=10, le=900)
    #: Clock skew tolerated on subject and actor tokens, in seconds.
    leeway: int = Field(30, ge=0, le=120)
    #: How often each process checks for a new policy or registry version, in seconds.
    refresh_interval: float = Field(2.0, ge=0.0, le=60.0)
    #: Max age of a cached identity-provider JWKS, in seconds.
    jwks_max_age: float = Field(300.0, ge=60.0, le=86400.0)
    #: Minimum interval between two JWKS refetches for one provider on an unknown kid.
    jwks_refetch_cooldown: float = Field(10.0, ge=1.0, le=3600.0)
    #: Timeout for outgoing HTTP (JWKS, discovery), in seconds.
    http_timeout: float = Field(3.0, gt=0.0, le=30.0)
    #: Development only: allow http:// JWKS and discovery URLs on loopback addresses.
    allow_insecure_loopback: bool = False
    #: Exchanges per user per tool, unless the tool or a policy rule sets its own (limits syntax).
    rate_limit: str = "120/minute;20/second"
    #: Longest delegation chain (nested ``act``) a capability may carry.
    max_chain_depth: int = Field(4, ge=1, le=16)
    #: Largest accepted request body, in bytes.
    max_body_bytes: int = Field(64 * 1024, ge=4096, le=4 * 1024 * 1024)
    #: Retired signing keys stay in the JWKS this long past their retirement (>= any token lifetime).
    key_retention: int = Field(3600, ge=900, le=30 * 86400)
    #: Trust X-Forwarded-Proto/Host from this many proxies (0 = none).
    trusted_proxies: int = Field(0, ge=0, le=5)
    #: ``issuer serve`` listen address and worker processes.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(2, ge=1, le=64)
    threads: int = Field(4, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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
