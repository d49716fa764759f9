"""Pure logic of the benchmark suite: percentiles, the regression comparator, target verdicts.

No timing is measured or asserted here; `make bench` does the measuring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.loadgen import _Conn, load_requests, save_requests
from bench.report import compare, evaluate_targets, find_previous, format_table
from bench.stats import percentile, summarise


def _level(p50: float, p99: float) -> dict[str, float]:
    return {"offered_rps": 100.0, "achieved_rps": 100.0, "unsent": 0, "p50_ms": p50, "p95_ms": p99,
            "p99_ms": p99, "p99.9_ms": p99, "max_ms": p99}


def _run(exchange_rps: float = 500.0, p99: float = 5.0, seen_us: float = 10.0, granted: int = 10) -> dict[str, Any]:
    cfg = {
        "server": {"workers": 2, "threads": 4, "database": "PostgreSQL", "rate_limits": "Redis"},
        "hello": {"peak_rps": 1000.0, "levels": {"50": _level(1.0, 2.0), "90": _level(1.0, 3.0)}},
        "exchange": {"peak_rps": exchange_rps, "levels": {"50": _level(2.0, p99), "90": _level(3.0, 2 * p99)}},
        "ratio": exchange_rps / 1000.0, "errors": {"hello": 0, "exchange": 0}, "ok": {"hello": 5, "exchange": 10},
        "audit": {"granted": granted, "other": {}}, "worker_peak_rss_kib": [90_000, 91_000],
        "foreign_cpu_max_pct": 1.0,
    }
    verifier = {"ES256": {"raw_us": 60.0, "pyjwt_us": 120.0, "sdk_first_us": 110.0, "sdk_seen_us": seen_us,
                          "first_over_pyjwt": 110 / 120, "pyjwt_over_seen": 120 / seen_us, "n": 10}}
    return {"configs": {"postgresql+redis": cfg}, "verifier": verifier}


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99.9) == 7.0
    assert summarise([0.001, 0.002])["p50_ms"] == 1.0


def test_identical_runs_do_not_regress() -> None:
    rows = compare(_run(), _run())
    assert rows and not any(r["regressed"] for r in rows)


def test_direction_decides_what_a_regression_is() -> None:
    # Throughput down 20 %: regressed. Latency down 50 %: an improvement. Latency up 10 %: within the noise band.
    rows = {r["figure"]: r for r in compare(_run(exchange_rps=400.0, p99=2.5), _run())}
    assert rows["postgresql+redis.exchange.peak_rps"]["regressed"]
    assert rows["postgresql+redis.exchange_over_hello"]["regressed"]
    assert not rows["postgresql+redis.exchange.at50.p99_ms"]["regressed"]
    rows = {r["figure"]: r for r in compare(_run(p99=5.5), _run())}
    assert not rows["postgresql+redis.exchange.at50.p99_ms"]["regressed"]
    rows = {r["figure"]: r for r in compare(_run(p99=6.0), _run())}
    assert rows["postgresql+redis.exchange.at50.p99_ms"]["regressed"]


def test_targets_report_each_goal() -> None:
    verdicts = {t["target"]: t["met"] for t in evaluate_targets(_run())}
    assert verdicts["[postgresql+redis] exchange throughput vs hello-world"] is True
    assert verdicts["[postgresql+redis] exchange p99 at 50% of peak"] is True
    assert verdicts["verifier ES256: seen before, speed-up over PyJWT"] is True
    assert verdicts["no figure regressed > 15%"] is None  # nothing to compare with
    verdicts = {t["target"]: t["met"] for t in evaluate_targets(_run(exchange_rps=300.0, p99=12.0, granted=9))}
    assert verdicts["[postgresql+redis] exchange throughput vs hello-world"] is False
    assert verdicts["[postgresql+redis] exchange p99 at 50% of peak"] is False
    assert verdicts["[postgresql+redis] audit rows granted = tokens issued"] is False


def test_table_names_every_target() -> None:
    run = _run()
    run["targets"] = evaluate_targets(run)
    table = format_table(run)
    assert "exchange p99 at 50% of peak" in table and "NOT met" not in table


def test_previous_run_is_the_newest_of_the_same_kind(tmp_path: Path) -> None:
    for name in ("bench-20260101T000000Z.json", "bench-20260102T000000Z-quick.json", "bench-20260103T000000Z.json"):
        (tmp_path / name).write_text(json.dumps({}))
    assert find_previous(tmp_path, quick=False) == tmp_path / "bench-20260103T000000Z.json"
    assert find_previous(tmp_path, quick=True) == tmp_path / "bench-20260102T000000Z-quick.json"


def test_requests_file_round_trips(tmp_path: Path) -> None:
    reqs = [b"GET / HTTP/1.1\r\n\r\n", b"", b"POST /token HTTP/1.1\r\nContent-Length: 3\r\n\r\na=b"]
    save_requests(tmp_path / "r", reqs)
    assert load_requests(tmp_path / "r") == reqs


def test_response_parser_handles_split_reads() -> None:
    c = _Conn.__new__(_Conn)
    c.buf, c.need, c.closes, c.due = bytearray(), -1, False, 0.0
    c.buf += b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
    assert c.response() is None
    c.buf += b"Connection: close\r\n\r\nhel"
    assert c.response() is None
    c.buf += b"loHTTP/1.1 429"
    assert c.response() == (200, True)
    assert bytes(c.buf) == b"HTTP/1.1 429"
