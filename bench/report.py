"""The run's verdict: targets, regressions against the previous run, the table and the plot.

Targets (from the issue) are judged on the primary configuration,
PostgreSQL + Redis; the SQLite + in-process configuration is reported beside
it and must be error-free and fully audited too.

Regressions: every figure in :func:`figures` has a direction (higher or
lower is better); a change for the worse of more than 15 % against the
newest earlier JSON in the results folder is flagged. A quick run is only
compared with quick runs, and a full run with full runs, since their phase
lengths differ.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["THRESHOLD", "compare", "evaluate_targets", "figures", "find_previous", "finish", "format_table", "plot"]

THRESHOLD = 0.15
PRIMARY = "postgresql+redis"
#: Foreign CPU above this (% of all cores) in any phase marks a configuration's figures as disturbed.
DISTURBED_PCT = 20.0


# --------------------------------------------------------------------------- figures and comparison


def figures(result: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """The comparable figures of a run: name -> (value, "higher" or "lower" is better)."""
    out: dict[str, tuple[float, str]] = {}
    for name, c in result.get("configs", {}).items():
        if "failed" in c:
            continue
        for route in ("hello", "exchange"):
            out[f"{name}.{route}.peak_rps"] = (c[route]["peak_rps"], "higher")
            for lvl, v in c[route]["levels"].items():
                for q in ("p50_ms", "p99_ms"):
                    out[f"{name}.{route}.at{lvl}.{q}"] = (v[q], "lower")
        out[f"{name}.exchange_over_hello"] = (c["ratio"], "higher")
        if "server_cpu_ms" in c["exchange"]:
            out[f"{name}.exchange.server_cpu_ms"] = (c["exchange"]["server_cpu_ms"], "lower")
        if c.get("worker_peak_rss_kib"):
            out[f"{name}.worker_peak_rss_kib"] = (float(max(c["worker_peak_rss_kib"])), "lower")
    for alg, v in result.get("verifier", {}).items():
        out[f"verifier.{alg}.sdk_first_us"] = (v["sdk_first_us"], "lower")
        out[f"verifier.{alg}.sdk_seen_us"] = (v["sdk_seen_us"], "lower")
        out[f"verifier.{alg}.first_over_pyjwt"] = (v["first_over_pyjwt"], "lower")
        out[f"verifier.{alg}.pyjwt_over_seen"] = (v["pyjwt_over_seen"], "higher")
        for name in ("dpop_first_us", "dpop_seen_us"):
            if name in v:
                out[f"verifier.{alg}.{name}"] = (v[name], "lower")
    return out


def compare(current: dict[str, Any], previous: dict[str, Any], threshold: float = THRESHOLD) -> list[dict[str, Any]]:
    """Every figure present in both runs, with its change; ``regressed`` when worse by more than threshold."""
    prev = figures(previous)
    rows = []
    for name, (value, better) in figures(current).items():
        if name not in prev:
            continue
        old = prev[name][0]
        if not (math.isfinite(old) and math.isfinite(value)) or old == 0:
            continue
        change = (value - old) / abs(old)
        worse = -change if better == "higher" else change
        rows.append({"figure": name, "previous": old, "current": value, "change_pct": 100 * change,
                     "better": better, "regressed": worse > threshold})
    return rows


def find_previous(folder: Path, *, quick: bool) -> Path | None:
    """The newest earlier result of the same kind (full or quick); names sort by time."""
    runs = sorted(p for p in folder.glob("bench-*.json") if p.stem.endswith("-quick") == quick)
    return runs[-1] if runs else None


# --------------------------------------------------------------------------- targets


def _target(name: str, measured: str, met: bool | None, goal: str) -> dict[str, Any]:
    return {"target": name, "goal": goal, "measured": measured, "met": met}


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    configs = result.get("configs", {})
    for name, c in configs.items():
        if "failed" in c:
            out.append(_target(f"[{name}] run completed", c["failed"][:60], False, "no failure"))
            continue
        if name == PRIMARY:
            ratio = c["ratio"]
            out.append(_target(f"[{name}] exchange throughput vs hello-world", f"{ratio:.1%}", ratio >= 0.5,
                               ">= 50%"))
            p99 = c["exchange"]["levels"].get("50", {}).get("p99_ms", float("nan"))
            out.append(_target(f"[{name}] exchange p99 at 50% of peak", f"{p99:.2f} ms", p99 < 10.0, "< 10 ms"))
        errors = sum(c["errors"].values())
        out.append(_target(f"[{name}] errors (non-200, socket, lost)", str(errors), errors == 0, "= 0"))
        granted, issued = c["audit"]["granted"], c["ok"]["exchange"]
        others = sum(c["audit"]["other"].values())
        out.append(_target(f"[{name}] audit rows granted = tokens issued", f"{granted} / {issued}"
                           + (f" (+{others} refusals)" if others else ""), granted == issued and not others,
                           "equal"))
    for alg, v in result.get("verifier", {}).items():
        out.append(_target(f"verifier {alg}: first seen vs bare PyJWT decode",
                           f"{v['first_over_pyjwt']:.2f}x the time", v["first_over_pyjwt"] <= 1.0, "<= 1.00x"))
        out.append(_target(f"verifier {alg}: seen before, speed-up over PyJWT",
                           f"{v['pyjwt_over_seen']:.2f}x", v["pyjwt_over_seen"] >= 10.0, ">= 10x"))
    gw = result.get("gateway")
    if gw is not None and "failed" not in gw:
        added = gw["tools_call"]["added_p50_ms"]
        out.append(_target("gateway: tools/call added p50, exchange included", f"{added:.2f} ms", added < 2.0,
                           "< 2 ms"))
    elif gw is not None:
        out.append(_target("gateway: run completed", gw["failed"][:60], False, "no failure"))
    cmp = result.get("comparison")
    if cmp is None:
        out.append(_target("no figure regressed > 15%", "no previous run", None, "vs previous JSON"))
    elif not cmp["rows"]:
        out.append(_target("no figure regressed > 15%", "no figure in common", None, "vs previous run"))
    else:
        bad = [r for r in cmp["rows"] if r["regressed"]]
        out.append(_target("no figure regressed > 15%", f"{len(bad)} regressed of {len(cmp['rows'])}",
                           not bad, "vs previous run"))
    return out


def finish(result: dict[str, Any], previous: Path | None) -> None:
    """Add the comparison and the target verdicts to the result, in place."""
    if previous is not None:
        try:
            prev = json.loads(previous.read_text())
            result["comparison"] = {"previous": previous.name, "rows": compare(result, prev)}
        except (OSError, ValueError, KeyError, TypeError) as e:
            result["comparison"] = {"previous": f"{previous.name} (unreadable: {type(e).__name__})", "rows": []}
    result["targets"] = evaluate_targets(result)


# --------------------------------------------------------------------------- table


def _lvl(v: dict[str, Any] | None) -> str:
    if not v:
        return f"{'-':>8} {'-':>8} {'-':>7} {'-':>7} {'-':>7}"
    return (f"{v['offered_rps']:8.0f} {v['achieved_rps']:8.0f} {v['p50_ms']:7.2f} {v['p95_ms']:7.2f} "
            f"{v['p99_ms']:7.2f}")


def format_table(result: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, c in result.get("configs", {}).items():
        if "failed" in c:
            lines.append(f"== {name}: FAILED: {c['failed']}")
            continue
        s = c["server"]
        lines.append(f"== {name}: issuer serve, gunicorn gthread {s['workers']} workers x {s['threads']} threads, "
                     f"{s['database']}, rate limits {s['rate_limits']}")
        head = "offered      got     p50     p95     p99"
        lines.append(f"{'route':<10} {'peak/s':>8} | @50%: {head} ms | @90%: {head} ms")
        for route in ("hello", "exchange"):
            r = c[route]
            lines.append(f"{route:<10} {r['peak_rps']:8.1f} |       {_lvl(r['levels'].get('50'))}    |       "
                         f"{_lvl(r['levels'].get('90'))}")
        rss = ", ".join(f"{k / 1024:.1f}" for k in c["worker_peak_rss_kib"]) or "-"
        disturbed = c["foreign_cpu_max_pct"] > DISTURBED_PCT
        if "server_cpu_ms" in c["exchange"]:
            h, x = c["hello"]["server_cpu_ms"], c["exchange"]["server_cpu_ms"]
            lines.append(f"issuer CPU per request (peak phases): hello {h:.3f} ms, exchange {x:.3f} ms "
                         f"(hello/exchange {h / x if x else 0:.3f})")
        lines.append(f"exchange/hello throughput {c['ratio']:.3f}   errors {sum(c['errors'].values())}   "
                     f"tokens issued {c['ok']['exchange']}   audit rows granted {c['audit']['granted']}")
        lines.append(f"peak RSS per worker {rss} MiB   foreign CPU max {c['foreign_cpu_max_pct']:.1f}% of the cores"
                     + ("  (DISTURBED: other load was running)" if disturbed else ""))
        lines.append("")
    if result.get("verifier"):
        from .verifier import format_table as vtable

        lines.append("== verifier SDK (µs per call)")
        lines.append(vtable(result["verifier"]))
        lines.append("")
    cmp = result.get("comparison")
    if cmp:
        bad = [r for r in cmp["rows"] if r["regressed"]]
        lines.append(f"== compared with {cmp['previous']}: {len(bad)} of {len(cmp['rows'])} figures worse by > 15%")
        for r in bad:
            lines.append(f"   REGRESSED {r['figure']}: {r['previous']:.2f} -> {r['current']:.2f} "
                         f"({r['change_pct']:+.1f}%, {r['better']} is better)")
        lines.append("")
    lines.append(f"== targets{' (quick run: rough figures)' if result.get('quick') else ''}")
    width = max((len(t["target"]) for t in result.get("targets", [])), default=10)
    lines.append(f"{'target':<{width}}  {'goal':<22}  {'measured':<28}  result")
    for t in result.get("targets", []):
        verdict = "-" if t["met"] is None else "met" if t["met"] else "NOT met"
        lines.append(f"{t['target']:<{width}}  {t['goal']:<22}  {t['measured']:<28}  {verdict}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plot


def plot(result: dict[str, Any], path: Path) -> bool:
    """Latency (p50, p99) against offered load, one panel per configuration. False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; `make bench` installs it with the bench extra)")
        return False
    configs = {n: c for n, c in result.get("configs", {}).items() if "failed" not in c}
    if not configs:
        return False
    fig, axes = plt.subplots(1, len(configs), figsize=(6.5 * len(configs), 4.5), squeeze=False)
    for ax, (name, c) in zip(axes[0], configs.items(), strict=True):
        for route, colour in (("hello", "tab:blue"), ("exchange", "tab:red")):
            levels = sorted(c[route]["levels"].values(), key=lambda v: v["offered_rps"])
            xs = [v["offered_rps"] for v in levels]
            ax.plot(xs, [v["p50_ms"] for v in levels], "o--", color=colour, label=f"{route} p50")
            ax.plot(xs, [v["p99_ms"] for v in levels], "s-", color=colour, label=f"{route} p99")
            ax.axvline(c[route]["peak_rps"], color=colour, alpha=0.3, linestyle=":")
        ax.axhline(10.0, color="grey", linewidth=0.8, linestyle="-.", label="10 ms target")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered load (requests/s, open loop); dotted: closed-loop peak")
        ax.set_ylabel("latency from intended send (ms)")
        ax.set_title(f"{name}  (exchange/hello {c['ratio']:.2f}, foreign CPU max {c['foreign_cpu_max_pct']:.0f}%)",
                     fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"issuer benchmark {result.get('started', '')}  commit {result.get('git', {}).get('commit', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
