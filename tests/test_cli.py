"""The `issuer` command, run in-process with click's CliRunner against a temporary SQLite database and key folder."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import ec
from freezegun import freeze_time
from jwt.algorithms import ECAlgorithm
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from issuer.cli import cli
from issuer.client_secrets import verify_secret
from issuer.keys import KeyStore
from issuer.models import Client
from tests.conftest import _pg_schema_url, need_service

Run = Callable[..., Result]

POLICY = """\
rules:
  - id: support-read
    idp: idp-a
    groups: [support]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read]
  - id: leads-write
    groups: [leads]
    clients: [mcp-helpdesk]
    tool: tickets
    scopes: [tickets:read, tickets:write]
"""


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Invoke `issuer ...` with ISSUER_* pointing at tmp_path (and nothing else of the machine's ISSUER_*)."""
    for name in list(os.environ):
        if name.upper().startswith("ISSUER_") and not name.upper().startswith("ISSUER_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    env = {"ISSUER_DATABASE_URL": f"sqlite:///{tmp_path}/issuer.db", "ISSUER_KEYS_DIR": str(tmp_path / "keys")}
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, **extra_env: str) -> Result:
        return runner.invoke(cli, list(args), env={**env, **extra_env}, input=input)

    return invoke


@pytest.fixture
def ready(run: Run) -> Run:
    result = run("init")
    assert result.exit_code == 0, result.output
    return run


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def one_error_line(result: Result, code: int = 2) -> str:
    """Bad input: exit `code`, exactly one line on stderr starting with `error:`, nothing on stdout."""
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""
    return lines[0]


def jwks_file(tmp_path: Path) -> Path:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
    jwk.update(kid="k1", alg="ES256", use="sig")
    path = tmp_path / "idp-jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return path


def write(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


@pytest.fixture
def registered(ready: Run, tmp_path: Path) -> Run:
    """idp-a, tool tickets, client mcp-helpdesk and POLICY as version 1."""
    ok(ready("idp", "add", "idp-a", "--issuer", "https://idp-a.example", "--jwks-file", str(jwks_file(tmp_path)),
             "--alg", "ES256"))
    ok(ready("tool", "add", "tickets", "--resource", "https://tickets.example", "--scope", "tickets:read",
             "--scope", "tickets:write", "--action", "tickets:write=comment,close"))
    ok(ready("client", "add", "mcp-helpdesk", "--resource", "https://mcp.helpdesk.example", "--tool", "tickets"))
    ok(ready("policy", "apply", write(tmp_path, "policy.yaml", POLICY), "--by", "tests"))
    return ready


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    "argv",
    [
        [], ["init"], ["serve"], ["idp"], ["idp", "add"], ["idp", "list"], ["tool"], ["tool", "add"], ["tool", "list"],
        ["client"], ["client", "add"], ["client", "list"], ["policy"], ["policy", "apply"], ["policy", "show"],
        ["policy", "test"], ["keys"], ["keys", "rotate"], ["keys", "list"],
    ],
    ids=lambda argv: " ".join(argv) or "issuer",
)
def test_every_verb_answers_help(run: Run, tmp_path: Path, argv: list[str]) -> None:
    out = ok(run(*argv, "--help"))
    assert out.startswith(f"Usage: {' '.join(['cli', *argv])} [OPTIONS]")
    assert "Options:" in out
    assert not (tmp_path / "issuer.db").exists()  # --help touches nothing
    assert not (tmp_path / "keys").exists()


# --------------------------------------------------------------------------- init


def test_init_creates_database_and_keys_and_is_idempotent(run: Run, tmp_path: Path) -> None:
    out = ok(run("init"))
    assert "database: migrated" in out
    assert "keys: created" in out
    keyset = (tmp_path / "keys" / "keyset.json").read_bytes()
    out = ok(run("init"))
    assert "keys: present" in out
    assert (tmp_path / "keys" / "keyset.json").read_bytes() == keyset


# --------------------------------------------------------------------------- clients and secrets


def test_client_add_prints_the_secret_once_and_list_never(registered: Run, tmp_path: Path) -> None:
    result = registered("client", "add", "mcp-search", "--resource", "https://mcp.search.example",
                        "--tool", "tickets")
    out = ok(result)
    secret_lines = [line for line in out.splitlines() if line.startswith("client_secret:")]
    assert len(secret_lines) == 1
    assert out.count("client_secret:") == 1
    secret = secret_lines[0].removeprefix("client_secret:").strip()
    assert len(secret) >= 43
    assert "client_secret" not in result.stderr
    assert secret not in result.stderr
    assert "not shown again" in result.stderr

    # The printed secret is the one that verifies against the stored hash.
    pepper = KeyStore(tmp_path / "keys", retention=3600).pepper()
    engine = create_engine(f"sqlite:///{tmp_path}/issuer.db")
    with Session(engine) as s:
        stored = s.scalars(select(Client.secret_hash).where(Client.client_id == "mcp-search")).one()
    engine.dispose()
    assert verify_secret(pepper, secret, stored)

    for argv in (["client", "list"], ["client", "list", "--json"]):
        listed = registered(*argv)
        text = ok(listed) + listed.stderr
        assert "mcp-search" in text
        assert secret not in text
        assert stored is not None and stored not in text
        assert "client_secret:" not in text


def test_client_add_with_imported_secret_does_not_echo_it(ready: Run) -> None:
    ok(ready("tool", "add", "t", "--resource", "https://t.example", "--scope", "s"))
    secret = "an-imported-secret-from-the-old-server"
    out = ok(ready("client", "add", "c", "--resource", "https://c.example", "--tool", "t", "--secret-stdin",
                   input=secret + "\n"))
    assert "client c added" in out
    assert secret not in out
    assert "client_secret:" not in out


def test_client_add_with_short_imported_secret_is_refused(ready: Run) -> None:
    ok(ready("tool", "add", "t", "--resource", "https://t.example", "--scope", "s"))
    line = one_error_line(ready("client", "add", "c", "--resource", "https://c.example", "--tool", "t",
                                "--secret-stdin", input="tooShort-1234\n"))
    assert "secret" in line
    assert "tooShort-1234" not in line
    assert json.loads(ok(ready("client", "list", "--json"))) == []


# --------------------------------------------------------------------------- --json


def test_json_outputs_parse(registered: Run) -> None:
    idps = json.loads(ok(registered("idp", "list", "--json")))
    assert [(i["name"], i["issuer"], i["jwks"], i["algorithms"]) for i in idps] == [
        ("idp-a", "https://idp-a.example", "inline", "ES256")
    ]
    tools = json.loads(ok(registered("tool", "list", "--json")))
    assert tools == [{"name": "tickets", "resource": "https://tickets.example",
                      "scopes": "tickets:read tickets:write", "status": "active"}]
    clients = json.loads(ok(registered("client", "list", "--json")))
    assert [(c["client_id"], c["resource"], c["tools"]) for c in clients] == [
        ("mcp-helpdesk", "https://mcp.helpdesk.example", "tickets")
    ]
    keys = json.loads(ok(registered("keys", "list", "--json")))
    assert sorted(k["state"] for k in keys) == ["active", "next"]
    decision = json.loads(ok(registered("policy", "test", "--sub", "alice", "--groups", "support",
                                        "--client", "mcp-helpdesk", "--tool", "tickets", "--scope", "tickets:read",
                                        "--json")))
    assert (decision["decision"], decision["rule"], decision["policy_version"]) == ("granted", "support-read", 1)
    assert decision["scopes"] == ["tickets:read"]


def test_empty_lists(ready: Run) -> None:
    assert json.loads(ok(ready("tool", "list", "--json"))) == []
    assert ok(ready("idp", "list")).strip() == "(none)"


def test_policy_show_json_parses(registered: Run) -> None:
    doc = json.loads(ok(registered("policy", "show", "--json")))
    assert doc["rules"][0]["id"] == "support-read"


def test_policy_show_prints_the_document_and_its_version(registered: Run, tmp_path: Path) -> None:
    out = ok(registered("policy", "show"))
    first, *rest = out.splitlines()
    assert first.startswith("# policy version 1, applied by cli:tests at ")
    assert "\n".join(rest) == POLICY.rstrip()
    ok(registered("policy", "apply", write(tmp_path, "p2.yaml", POLICY.replace("[support]", "[l2]")), "--by", "b"))
    assert "[l2]" in ok(registered("policy", "show"))
    assert "[support]" in ok(registered("policy", "show", "--version", "1"))
    one_error_line(registered("policy", "show", "--version", "7"))


# --------------------------------------------------------------------------- bad input


def test_client_with_unknown_tool_is_refused(ready: Run) -> None:
    line = one_error_line(ready("client", "add", "c", "--resource", "https://c.example", "--tool", "nope"))
    assert "nope" in line
    assert json.loads(ok(ready("client", "list", "--json"))) == []


@pytest.mark.parametrize("resource", ["not-a-uri", "ftp://t.example", "https://t.example/#frag"])
def test_tool_with_bad_resource_is_refused(ready: Run, resource: str) -> None:
    line = one_error_line(ready("tool", "add", "t", "--resource", resource, "--scope", "s"))
    assert line.startswith("error: resource: ")
    assert json.loads(ok(ready("tool", "list", "--json"))) == []


@pytest.mark.parametrize("action", ["bogus", "s=", "other=read", "=read"])
def test_malformed_action_is_refused(ready: Run, action: str) -> None:
    line = one_error_line(ready("tool", "add", "t", "--resource", "https://t.example", "--scope", "s",
                                "--action", action))
    assert "--action" in line
    assert json.loads(ok(ready("tool", "list", "--json"))) == []


@pytest.mark.parametrize(
    ("document", "line_no", "fragment"),
    [
        (POLICY + "    max_lifetim: 60\n", 13, "unknown key 'max_lifetim'"),
        (POLICY.replace("tool: tickets\n    scopes: [tickets:read, tickets:write]", "tool: wiki\n    scopes: [w]"),
         11, "unknown tool 'wiki'"),
        (POLICY.replace("    scopes: [tickets:read]\n", "    scopes: [tickets:admin]\n"), 7, "tickets:admin"),
        ("rules:\n  - id: x\n    clients: [mcp-helpdesk]\n    tool: tickets\n", 2, "missing required key"),
    ],
)
def test_policy_file_with_bad_rule_names_the_line(
    registered: Run, tmp_path: Path, document: str, line_no: int, fragment: str
) -> None:
    path = write(tmp_path, "bad.yaml", document)
    line = one_error_line(registered("policy", "apply", path, "--by", "tests"))
    assert line.startswith(f"error: {path}:{line_no}: ")
    assert fragment in line
    assert ok(registered("policy", "show")).startswith("# policy version 1,")  # still the old version


def test_unknown_client_in_policy_test_is_refused(registered: Run) -> None:
    line = one_error_line(registered("policy", "test", "--sub", "alice", "--groups", "support",
                                     "--client", "mcp-ghost", "--tool", "tickets"))
    assert "--client" in line
    assert "mcp-ghost" in line


def test_malformed_claim_in_policy_test_is_refused(registered: Run) -> None:
    line = one_error_line(registered("policy", "test", "--sub", "alice", "--claim", "tenant",
                                     "--client", "mcp-helpdesk", "--tool", "tickets"))
    assert "--claim" in line


@pytest.mark.parametrize("arguments, rule", [('{"path": "/a", "path": "/b"}', "duplicate"),
                                             ('{"n": NaN}', "NaN"), ('{"p": "\\u0000"}', "NUL")])
def test_policy_test_arguments_obey_the_strict_json_rules(registered: Run, arguments: str, rule: str) -> None:
    """The CLI reads JSON with the one strict decoder too: two readings of one argument object cannot differ."""
    line = one_error_line(registered("policy", "test", "--sub", "alice", "--groups", "support",
                                     "--client", "mcp-helpdesk", "--tool", "tickets", "--arguments", arguments))
    assert "--arguments" in line and rule in line


def test_a_jwks_file_with_duplicate_members_is_refused(ready: Run, tmp_path: Path) -> None:
    path = write(tmp_path, "dup.json", '{"keys": [], "keys": [{"kty": "EC"}]}')
    line = one_error_line(ready("idp", "add", "x", "--issuer", "https://x.example", "--jwks-file", path))
    assert "duplicate" in line


def test_policy_show_before_any_apply_exits_2(ready: Run) -> None:
    line = one_error_line(ready("policy", "show"))
    assert "no policy applied" in line


def test_idp_with_private_jwks_file_is_refused(ready: Run, tmp_path: Path) -> None:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True)
    path = write(tmp_path, "leak.json", json.dumps({"keys": [jwk]}))
    line = one_error_line(ready("idp", "add", "x", "--issuer", "https://x.example", "--jwks-file", path))
    assert "private members" in line
    assert jwk["d"] not in line


def test_idp_add_discovers_keys_with_the_insecure_flag(ready: Run) -> None:
    from tests.support.fake_idp import running_idp

    with running_idp("idp-dev") as idp:
        one_error_line(ready("idp", "add", "idp-dev", "--issuer", idp.issuer))
        out = ok(ready("idp", "add", "idp-dev", "--issuer", idp.issuer, ISSUER_ALLOW_INSECURE_LOOPBACK="true"))
    assert idp.jwks_uri in out
    assert json.loads(ok(ready("idp", "list", "--json")))[0]["jwks"] == idp.jwks_uri


# --------------------------------------------------------------------------- policy test


def test_policy_test_granted_names_the_rule(registered: Run) -> None:
    out = ok(registered("policy", "test", "--sub", "alice", "--groups", "support", "--client", "mcp-helpdesk",
                        "--tool", "tickets", "--scope", "tickets:read"))
    first, second = out.splitlines()
    assert first.startswith("GRANTED (granted) by rule support-read in policy version 1")
    assert second == "scopes: tickets:read"


def test_policy_test_comma_separated_groups(registered: Run) -> None:
    out = ok(registered("policy", "test", "--sub", "bob", "--groups", "sales,leads", "--client", "mcp-helpdesk",
                        "--tool", "tickets", "--scope", "tickets:write"))
    assert out.startswith("GRANTED (granted) by rule leads-write")


@pytest.mark.parametrize(
    ("groups", "scope", "expected"),
    [
        ("sales", "tickets:read", "DENIED (no_matching_rule) by rule - in policy version 1"),
        ("support", "tickets:write", "DENIED (scope_not_entitled) by rule support-read in policy version 1"),
    ],
)
def test_policy_test_denied_gives_the_reason(registered: Run, groups: str, scope: str, expected: str) -> None:
    out = ok(registered("policy", "test", "--sub", "alice", "--groups", groups, "--client", "mcp-helpdesk",
                        "--tool", "tickets", "--scope", scope))
    first, second = out.splitlines()
    assert first == expected
    assert "tickets" in second  # the human-readable description


# --------------------------------------------------------------------------- keys


def test_keys_rotate_then_list(ready: Run) -> None:
    before = {k["state"]: k["kid"] for k in json.loads(ok(ready("keys", "list", "--json")))}
    out = ok(ready("keys", "rotate", "--force"))
    assert f"active key is now {before['next']} (ES256)" in out
    after = json.loads(ok(ready("keys", "list", "--json")))
    states = sorted(k["state"] for k in after)
    assert states == ["active", "next", "retired"]
    by_state = {k["state"]: k for k in after}
    assert by_state["active"]["kid"] == before["next"]
    assert by_state["retired"]["kid"] == before["active"]
    assert by_state["retired"]["retired_at"] != ""
    assert by_state["next"]["kid"] not in before.values()

    table = ok(ready("keys", "list")).splitlines()
    assert table[0].split() == ["KID", "ALG", "STATE", "CREATED_AT", "RETIRED_AT"]
    assert sorted(line.split()[2] for line in table[1:]) == ["active", "next", "retired"]


def test_keys_rotate_to_eddsa(ready: Run) -> None:
    ok(ready("keys", "rotate", "--alg", "EdDSA", "--force"))
    keys = {k["state"]: k["alg"] for k in json.loads(ok(ready("keys", "list", "--json")))}
    assert keys == {"active": "ES256", "next": "EdDSA", "retired": "ES256"}


def test_keys_rotate_without_init_is_refused(run: Run) -> None:
    line = one_error_line(run("keys", "rotate"))
    assert "issuer init" in line


# --------------------------------------------------------------------------- unmigrated database


@pytest.mark.parametrize(
    "argv",
    [
        ["tool", "list"], ["idp", "list"], ["client", "list"], ["policy", "show"],
        ["tool", "add", "t", "--resource", "https://t.example", "--scope", "s"],
        ["idp", "add", "x", "--issuer", "https://x.example", "--jwks-uri", "https://x.example/jwks"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_unmigrated_database_exits_1_with_one_line(run: Run, argv: list[str]) -> None:
    line = one_error_line(run(*argv), code=1)
    assert "not migrated" in line
    assert "issuer init" in line


def test_unmigrated_database_with_keys_exits_1_for_client_add(run: Run, tmp_path: Path) -> None:
    KeyStore(tmp_path / "keys", retention=3600).ensure("ES256")  # keys exist, the database was never migrated
    line = one_error_line(run("client", "add", "c", "--resource", "https://c.example", "--tool", "t"), code=1)
    assert "not migrated" in line


# --------------------------------------------------------------------------- configuration problems


def test_corrupt_key_state_exits_2_naming_the_file(ready: Run, tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyset.json"
    path.write_text("{broken")
    for argv in (["keys", "list"], ["keys", "rotate"]):
        line = one_error_line(ready(*argv))
        assert str(path) in line


@pytest.mark.parametrize("argv", [["init"], ["keys", "rotate"]])
def test_unusable_key_folder_is_one_line_not_a_traceback(run: Run, tmp_path: Path, argv: list[str]) -> None:
    (tmp_path / "a-file").write_text("")
    result = run(*argv, ISSUER_KEYS_DIR=str(tmp_path / "a-file" / "keys"))
    assert isinstance(result.exception, SystemExit)
    assert result.exit_code in (1, 2)
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert "a-file" in line


@pytest.fixture
def pg_new_york_url() -> Iterator[str]:
    """A fresh PostgreSQL schema whose sessions run in America/New_York (a server not set to UTC)."""
    base = need_service("ISSUER_TEST_DATABASE_URL", "PostgreSQL")
    if base.startswith("postgresql://"):
        base = "postgresql+psycopg://" + base.removeprefix("postgresql://")
    schema_urls = _pg_schema_url(base)
    url = make_url(next(schema_urls))
    options = f"{url.query['options']} -ctimezone=America/New_York"
    try:
        yield url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    finally:
        schema_urls.close()


def test_policy_show_time_is_utc_whatever_the_database_time_zone(
    run: Run, tmp_path: Path, pg_new_york_url: str
) -> None:
    ok(run("init", ISSUER_DATABASE_URL=pg_new_york_url))
    ok(run("tool", "add", "t", "--resource", "https://t.example", "--scope", "s", ISSUER_DATABASE_URL=pg_new_york_url))
    path = write(tmp_path, "p.yaml", "rules: []\n")
    with freeze_time("2030-01-01T12:00:00Z"):
        ok(run("policy", "apply", path, "--by", "tests", ISSUER_DATABASE_URL=pg_new_york_url))
    out = ok(run("policy", "show", ISSUER_DATABASE_URL=pg_new_york_url))
    assert out.splitlines()[0] == "# policy version 1, applied by cli:tests at 2030-01-01T12:00:00Z"


def test_rotation_waits_until_the_next_key_has_been_published_long_enough(ready: Run) -> None:
    """A verifier that cached the JWKS just before must already know the key that starts signing."""
    line = one_error_line(ready("keys", "rotate"))
    assert "--force" in line and "published" in line
    with freeze_time(datetime.now(UTC) + timedelta(seconds=301)):
        ok(ready("keys", "rotate"))
