"""Settings: defaults, ISSUER_* environment variables, and one-line errors that name the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from issuer.cli import cli
from issuer.errors import ConfigurationError
from issuer.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ISSUER_* variable of the machine running the tests may leak into what is tested here."""
    for name in list(os.environ):
        if name.upper().startswith("ISSUER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def config_error(**overrides: object) -> str:
    with pytest.raises(ConfigurationError) as e:
        load_settings(**overrides)
    message = str(e.value)
    assert "\n" not in message
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no pydantic traceback chained
    return message


# --------------------------------------------------------------------------- defaults and environment


def test_defaults() -> None:
    s = load_settings()
    assert s.url == "http://127.0.0.1:8000"
    assert s.database_url == "sqlite:///issuer.db"
    assert s.is_sqlite
    assert s.keys_dir == Path("keys")
    assert s.redis_url == ""
    assert s.signing_alg == "ES256"
    assert s.token_lifetime == 300
    assert s.leeway == 30
    assert s.refresh_interval == 2.0
    assert s.jwks_max_age == 300.0
    assert s.jwks_refetch_cooldown == 10.0
    assert s.http_timeout == 3.0
    assert s.allow_insecure_loopback is False
    assert s.max_chain_depth == 4
    assert s.max_body_bytes == 64 * 1024
    assert s.key_retention == 3600
    assert s.trusted_proxies == 0
    assert (s.host, s.port, s.workers, s.threads) == ("127.0.0.1", 8000, 2, 4)
    assert s.log_level == "info"


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.token_lifetime = 600  # type: ignore[misc]
    assert s.token_lifetime == 300


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "ISSUER_URL": "https://issuer.example.com/",
        "ISSUER_DATABASE_URL": "postgresql+psycopg://app:pw@db.internal:5432/issuer",
        "ISSUER_KEYS_DIR": str(tmp_path / "k"),
        "ISSUER_REDIS_URL": "rediss://cache.internal:6380/2",
        "ISSUER_SIGNING_ALG": "EdDSA",
        "ISSUER_TOKEN_LIFETIME": "120",
        "ISSUER_LEEWAY": "0",
        "ISSUER_REFRESH_INTERVAL": "0.5",
        "ISSUER_JWKS_MAX_AGE": "600",
        "ISSUER_JWKS_REFETCH_COOLDOWN": "2",
        "ISSUER_HTTP_TIMEOUT": "1.5",
        "ISSUER_ALLOW_INSECURE_LOOPBACK": "true",
        "ISSUER_MAX_CHAIN_DEPTH": "2",
        "ISSUER_MAX_BODY_BYTES": "8192",
        "ISSUER_KEY_RETENTION": "7200",
        "ISSUER_TRUSTED_PROXIES": "1",
        "ISSUER_HOST": "0.0.0.0",
        "ISSUER_PORT": "9000",
        "ISSUER_WORKERS": "8",
        "ISSUER_THREADS": "16",
        "ISSUER_LOG_LEVEL": "debug",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert s.url == "https://issuer.example.com"  # trailing slash dropped: `iss` is compared exactly
    assert s.database_url == "postgresql+psycopg://app:pw@db.internal:5432/issuer"
    assert not s.is_sqlite
    assert s.keys_dir == tmp_path / "k"
    assert s.redis_url == "rediss://cache.internal:6380/2"
    assert s.signing_alg == "EdDSA"
    assert (s.token_lifetime, s.leeway) == (120, 0)
    assert (s.refresh_interval, s.jwks_max_age, s.jwks_refetch_cooldown, s.http_timeout) == (0.5, 600.0, 2.0, 1.5)
    assert s.allow_insecure_loopback is True
    assert (s.max_chain_depth, s.max_body_bytes, s.key_retention, s.trusted_proxies) == (2, 8192, 7200, 1)
    assert (s.host, s.port, s.workers, s.threads, s.log_level) == ("0.0.0.0", 9000, 8, 16, "debug")


def test_explicit_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISSUER_TOKEN_LIFETIME", "120")
    assert load_settings().token_lifetime == 120
    assert load_settings(token_lifetime=60).token_lifetime == 60


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("ISSUER_TOKEN_LIFETIME", "5", "greater than or equal to 10"),
        ("ISSUER_TOKEN_LIFETIME", "901", "less than or equal to 900"),
        ("ISSUER_LEEWAY", "abc", "valid integer"),
        ("ISSUER_URL", "ftp://x", "absolute http(s) URL"),
        ("ISSUER_URL", "issuer.example.com", "absolute http(s) URL"),
        ("ISSUER_URL", "https://issuer.example.com/?tenant=a", "query or fragment"),
        ("ISSUER_URL", "https://issuer.example.com/#top", "query or fragment"),
        ("ISSUER_DATABASE_URL", "mysql://app:hunter2@db.internal/issuer", "sqlite:/// or postgresql+psycopg://"),
        ("ISSUER_REDIS_URL", "http://:hunter2@cache.internal:6379", "redis://"),
        ("ISSUER_SIGNING_ALG", "RS256", "ES256"),
        ("ISSUER_ALLOW_INSECURE_LOOPBACK", "maybe", "boolean"),
        ("ISSUER_KEY_RETENTION", "60", "greater than or equal to 900"),
        ("ISSUER_PORT", "70000", "less than or equal to 65535"),
        ("ISSUER_LOG_LEVEL", "verbose", "'debug'"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(var, value)
    message = config_error()
    assert message.startswith(f"{var}: ")
    assert fragment in message
    assert "hunter2" not in message  # a credential in a bad URL is never echoed


def test_plain_http_issuer_off_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISSUER_URL", "http://issuer.example.com")
    message = config_error()
    assert "ISSUER_URL" in message
    assert "https" in message


@pytest.mark.parametrize("url", ["http://localhost.example.com", "http://127.0.0.1.nip.io:8000", "http://10.0.0.5"])
def test_names_that_only_look_loopback_are_not_loopback(url: str) -> None:
    assert "ISSUER_URL" in config_error(url=url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000",
                                 "http://127.0.0.2", "https://issuer.example.com"])
def test_https_or_loopback_issuer_is_accepted(url: str) -> None:
    assert load_settings(url=url).url == url


def test_insecure_flag_admits_a_plain_http_issuer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The behaviour the brief asks for: refused unless ISSUER_ALLOW_INSECURE_LOOPBACK is set."""
    monkeypatch.setenv("ISSUER_URL", "http://issuer.dev.internal:8000")
    config_error()
    monkeypatch.setenv("ISSUER_ALLOW_INSECURE_LOOPBACK", "true")
    assert load_settings().url == "http://issuer.dev.internal:8000"


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("postgres://app:pw@db:5432/issuer", "postgresql+psycopg://app:pw@db:5432/issuer"),
        ("postgresql://app@db/issuer", "postgresql+psycopg://app@db/issuer"),
        ("postgresql+psycopg://app@db/issuer", "postgresql+psycopg://app@db/issuer"),
        ("sqlite:////var/lib/issuer/issuer.db", "sqlite:////var/lib/issuer/issuer.db"),
    ],
)
def test_database_url_is_normalised_to_psycopg(monkeypatch: pytest.MonkeyPatch, given: str, normalised: str) -> None:
    monkeypatch.setenv("ISSUER_DATABASE_URL", given)
    s = load_settings()
    assert s.database_url == normalised
    assert s.is_sqlite == normalised.startswith("sqlite:")


@pytest.mark.parametrize("url", ["postgresql+psycopg2://app@db/issuer", "postgresql+asyncpg://app@db/issuer"])
def test_other_postgres_drivers_are_refused(url: str) -> None:
    assert config_error(database_url=url).startswith("ISSUER_DATABASE_URL: ")


def test_retention_outlasts_any_capability() -> None:
    """A retired key must stay published at least as long as the longest capability it can have signed."""
    longest = load_settings(token_lifetime=900).token_lifetime
    config_error(token_lifetime=longest + 1)
    assert load_settings(key_retention=900).key_retention >= longest
    config_error(key_retention=longest - 1)


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("ISSUER_TOKEN_LIFETIME", "5"),
        ("ISSUER_URL", "ftp://x"),
        ("ISSUER_URL", "http://issuer.example.com"),
        ("ISSUER_DATABASE_URL", "mysql://app:hunter2@db/issuer"),
        ("ISSUER_REDIS_URL", "http://cache:6379"),
    ],
)
def test_init_with_a_bad_setting_exits_2_with_one_line(tmp_path: Path, var: str, value: str) -> None:
    env = {"ISSUER_DATABASE_URL": f"sqlite:///{tmp_path}/issuer.db", "ISSUER_KEYS_DIR": str(tmp_path / "keys"),
           var: value}
    result = CliRunner().invoke(cli, ["init"], env=env)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert var in lines[0]
    assert "hunter2" not in result.output
    assert result.stdout == ""
    # Nothing was created on the way to the error.
    assert not (tmp_path / "keys").exists()
    assert not (tmp_path / "issuer.db").exists()


def test_init_with_good_settings_succeeds(tmp_path: Path) -> None:
    """The counterpart of the test above: the same invocation, valid, does create both."""
    env = {"ISSUER_DATABASE_URL": f"sqlite:///{tmp_path}/issuer.db", "ISSUER_KEYS_DIR": str(tmp_path / "keys")}
    result = CliRunner().invoke(cli, ["init"], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "keys" / "keyset.json").exists()
    assert (tmp_path / "issuer.db").exists()


def test_redis_url_must_be_one_the_rate_limiter_can_use() -> None:
    from issuer.errors import ConfigurationError
    from issuer.settings import load_settings

    with pytest.raises(ConfigurationError, match="ISSUER_REDIS_URL"):
        load_settings(redis_url="unix:///run/redis.sock")


def test_issuer_url_has_no_path() -> None:
    """Metadata lives at the host root; a path would send RFC 8414 clients to a URL nobody serves."""
    from issuer.errors import ConfigurationError
    from issuer.settings import load_settings

    with pytest.raises(ConfigurationError, match=r"ISSUER_URL.*path"):
        load_settings(url="https://auth.example/issuer")
    assert load_settings(url="https://auth.example/").url == "https://auth.example"
