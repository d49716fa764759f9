"""Pure logic of ``python -m bench.peers``: RESULT rows into ratios, and the verdict against the peers.

No server, no wrk, no network: the rows are written here as bench.sh writes them.
"""

from __future__ import annotations

from pathlib import Path

from bench.peers import find_peers_dir, format_verdict, parse_results, ratios, split_request, verdict
from bench.scenario import raw_request


def _row(peer: str, route: str, conns: int, requests: int, secs: float = 10.0, ge400: int = 0,
         timeouts: int = 0) -> str:
    return (f"{peer}\t{route}\t{conns}\tRESULT requests={requests} secs={secs:.3f} rps={requests / secs:.1f} "
            f"p50_ms=1.00 p90_ms=2.00 p99_ms=3.00 max_ms=9.00 http_ge400={ge400} connect_err=0 read_err=0 "
            f"write_err=0 timeouts={timeouts} server_cpu_pct=90.0 wrk_cpu_pct=5.0 foreign_cpu_pct=1.0")


def _run(ours_exchange: int = 8000) -> str:
    return "\n".join([
        _row("issuer-abc1234", "hello", 4, 40000), _row("issuer-abc1234", "exchange", 4, ours_exchange),
        _row("issuer-abc1234", "hello", 16, 40000), _row("issuer-abc1234", "exchange", 16, ours_exchange),
        _row("flask-gunicorn-2sync", "hello", 4, 42000), _row("flask-gunicorn-2sync", "hello", 16, 38000),
        _row("idpyoidc", "hello", 4, 40000), _row("idpyoidc", "exchange", 4, 6400),
        _row("idpyoidc", "hello", 16, 48000), _row("idpyoidc", "exchange", 16, 7200),
        "  a stray progress line that is not a row",
        "",
    ])


def test_rows_parse_and_ratio_is_ok_over_hello_as_table_py_computes_it() -> None:
    rows = parse_results(_run() + "\n" + _row("delcred", "hello", 4, 1000) + "\n"
                         + _row("delcred", "exchange", 4, 500, ge400=100, timeouts=2))
    assert len(rows) == 12
    assert rows[0].peer == "issuer-abc1234" and rows[0].route == "hello" and rows[0].conns == 4
    r = ratios(rows)
    assert abs(r[("issuer-abc1234", 4)] - 0.2) < 1e-9
    assert abs(r[("idpyoidc", 16)] - 0.15) < 1e-9
    # ok/s excludes the >= 400 answers; the hello side is req/s of every answer.
    assert abs(r[("delcred", 4)] - 0.4) < 1e-9
    assert rows[-1].errors == 2
    assert ("flask-gunicorn-2sync", 4) not in r  # hello only: no ratio


def test_verdict_yes_when_ours_is_ahead_at_every_connection_count() -> None:
    v = verdict(parse_results(_run()), "issuer-abc1234")
    assert v.our_ratio == {4: 0.2, 16: 0.2}
    assert v.peers[4] == {"idpyoidc": 0.16} and v.hello_only == ["flask-gunicorn-2sync"]
    assert v.beats_at(4) and v.beats_at(16) and v.beats_all
    text = format_verdict(v, failed=["oidc-provider"], notes=["audit ok"])
    assert text.splitlines()[-1] == "beats every peer: yes"
    assert "oidc-provider" in text and "audit ok" in text and "flask-gunicorn-2sync" in text


def test_verdict_no_when_one_peer_is_ahead_at_one_count() -> None:
    # Ours 0.155 at both counts: ahead of idpyoidc at 16 (0.15), behind it at 4 (0.16). A tie is not a win.
    v = verdict(parse_results(_run(ours_exchange=6200)), "issuer-abc1234")
    assert v.beats_at(4) is False and v.beats_at(16) is True and v.beats_all is False
    assert format_verdict(v).splitlines()[-1] == "beats every peer: no"
    tie = verdict(parse_results(_run(ours_exchange=6400)), "issuer-abc1234")
    assert tie.beats_at(4) is False


def test_missing_rows_of_ours_lose_and_no_peer_rows_is_no_verdict() -> None:
    only_peers = "\n".join(line for line in _run().splitlines() if not line.startswith("issuer-"))
    v = verdict(parse_results(only_peers + "\n" + _row("issuer-abc1234", "hello", 4, 40000)), "issuer-abc1234")
    assert v.our_ratio == {4: None} and v.beats_all is False
    alone = verdict(parse_results("\n".join(line for line in _run().splitlines()
                                            if line.startswith(("issuer-", "flask")))), "issuer-abc1234")
    assert alone.beats_all is None
    assert format_verdict(alone).splitlines()[-1].startswith("beats every peer: n/a")


def test_a_scenario_request_splits_into_header_value_and_form_body() -> None:
    raw = raw_request("POST", "/token", {"Content-Type": "application/x-www-form-urlencoded",
                                         "Authorization": "Basic bWNwOnM="}, b"grant_type=x&resource=y")
    headers, body = split_request(raw)
    assert headers["authorization"] == "Basic bWNwOnM=" and body == b"grant_type=x&resource=y"


def test_peers_folder_must_hold_the_harness(tmp_path: Path) -> None:
    assert find_peers_dir(str(tmp_path)) is None
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "bench.sh").write_text("")
    assert find_peers_dir(str(tmp_path)) == tmp_path.resolve()
