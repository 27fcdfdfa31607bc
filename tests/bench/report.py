"""Turn the raw runs into medians, ratios and the issue's targets, as JSON and as a markdown report."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

# Letter -> what it is; the order is the order of the tables.
VARIANTS: dict[str, str] = {
    "a": "direct to the upstream (wrk -> upstream)",
    "b": "bare proxy: Starlette + aiohttp on Granian, no limits",
    "c": "gateway, no limits",
    "d": "gateway, Redis limits on key and target (rate + concurrency)",
    "e": "gateway, same limits in process (no --redis-url)",
    "bx": "bare proxy with the httpx 0.28 client",
    "bg": "bare proxy with the gateway's garbage-collector settings (onwards/gc_tuning.py)",
    "dn": "gateway (d) with --no-access-log",
    "dt": "gateway (d) plus a token limit on key and target (estimate, reservation, settlement)",
}
# The figures: what "good enough" means for the gateway's overhead.
GOAL_D_OVER_B = 0.85
GOAL_C_OVER_B = 1.0
GOAL_ACCESS_LOG_COST = 0.05  # (d) with the access log on is at most this much slower than without
GOAL_TOKEN_LIMIT_COST = 0.05  # (dt), token limits on key and target, at most this much slower than (d)
GOAL_REDIS_US_PER_REQUEST = 25.0
GOAL_C1_ADDED_P50_MS = 0.6
GOAL_C1_ADDED_P99_MS = 2.0
GOAL_CONN_FACTOR = 1.2
GOAL_TTFB_OVERHEAD_MS = 1.0
RATIO_KEYS = ("c_over_b", "d_over_b", "d_over_c", "e_over_b")
TARGET_WORKERS = 2
HIGH_CONCURRENCY = 64


def summarize(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Median requests/s, p50 and p99 of each (variant, workers, concurrency) over its repeats."""
    groups: dict[tuple[str, int | None, int], list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["variant"], run["workers"], run["concurrency"]), []).append(run)
    order = list(VARIANTS)
    rows = []
    for (variant, workers, concurrency), group in sorted(
        groups.items(), key=lambda item: (item[0][2], order.index(item[0][0]), item[0][1] or 0)
    ):
        rows.append(
            {
                "variant": variant,
                "workers": workers,
                "concurrency": concurrency,
                "samples": len(group),
                "requests_per_s": statistics.median(r["requests_per_s"] for r in group),
                "p50_ms": statistics.median(r["p50_ms"] for r in group),
                "p99_ms": statistics.median(r["p99_ms"] for r in group),
                "non_2xx": sum(r["non_2xx"] for r in group),
                "socket_errors": sum(r["socket_errors"] for r in group),
            }
        )
    return rows


def find(
    rows: Iterable[Mapping[str, Any]], variant: str, workers: int | None, concurrency: int
) -> Mapping[str, Any] | None:
    for row in rows:
        if (
            row["variant"] == variant
            and row["concurrency"] == concurrency
            and (variant == "a" or row["workers"] == workers)
        ):
            return row
    return None


def _ratio(rows: list[dict[str, Any]], top: str, bottom: str, workers: int, concurrency: int) -> float | None:
    upper, lower = find(rows, top, workers, concurrency), find(rows, bottom, workers, concurrency)
    if upper is None or lower is None or not lower["requests_per_s"]:
        return None
    return upper["requests_per_s"] / lower["requests_per_s"]


def ratios(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Throughput ratios at c64 with 2 workers, httpx over aiohttp in the bare proxy at c64 with 1 worker,
    and the gateway against a bare proxy with the same garbage-collector settings."""
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        top, _, bottom = key.split("_")
        out[key] = _ratio(rows, top, bottom, TARGET_WORKERS, HIGH_CONCURRENCY)
    out["httpx_over_aiohttp_bare_w1"] = _ratio(rows, "bx", "b", 1, HIGH_CONCURRENCY)
    # The bare proxy given the gateway's GC settings: how much of (d)/(b) those settings carry.
    out["d_over_bg"] = _ratio(rows, "d", "bg", TARGET_WORKERS, HIGH_CONCURRENCY)
    out["bg_over_b"] = _ratio(rows, "bg", "b", TARGET_WORKERS, HIGH_CONCURRENCY)
    # The access log's cost: the same gateway with it on (d, the default) over off (dn).
    out["d_over_dn"] = _ratio(rows, "d", "dn", TARGET_WORKERS, HIGH_CONCURRENCY)
    # Token limits' cost: the same gateway with token limits on key and target (dt) over without (d).
    out["dt_over_d"] = _ratio(rows, "dt", "d", TARGET_WORKERS, HIGH_CONCURRENCY)
    return out


def added_latency(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50 and p99 at concurrency 1 minus the direct run's, per proxy and worker count ("d/w2")."""
    direct = find(rows, "a", None, 1)
    out: dict[str, dict[str, float]] = {}
    if direct is None:
        return out
    for row in rows:
        if row["concurrency"] == 1 and row["variant"] != "a":
            out[f"{row['variant']}/w{row['workers']}"] = {
                "p50_ms": row["p50_ms"] - direct["p50_ms"],
                "p99_ms": row["p99_ms"] - direct["p99_ms"],
            }
    return out


def _target(name: str, goal: str, value: float | None, met: bool | None, note: str = "") -> dict[str, Any]:
    return {"name": name, "goal": goal, "value": value, "met": met, "note": note}


def targets(
    ratio: Mapping[str, float | None],
    added: Mapping[str, Mapping[str, float]],
    connections: Mapping[str, Mapping[str, Any]],
    ttfb: Mapping[str, Mapping[str, Any]],
    redis_cpu: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The issues' targets, each met, not met, or None when its run could not be made."""
    out = []
    d_over_b = ratio.get("d_over_b")
    d_over_bg = ratio.get("d_over_bg")
    out.append(
        _target(
            "throughput with Redis limits",
            f"(d)/(b) >= {GOAL_D_OVER_B} at {TARGET_WORKERS} workers, c{HIGH_CONCURRENCY}",
            d_over_b,
            None if d_over_b is None else d_over_b >= GOAL_D_OVER_B,
            ""
            if d_over_bg is None
            else f"against a bare proxy with the gateway's GC settings, (d)/(bg) = {d_over_bg:.2f}",
        )
    )
    d_added = added.get(f"d/w{TARGET_WORKERS}")
    out.append(
        _target(
            "added latency p50 at c1",
            f"(d) - (a) p50 <= {GOAL_C1_ADDED_P50_MS} ms",
            None if d_added is None else d_added["p50_ms"],
            None if d_added is None else d_added["p50_ms"] <= GOAL_C1_ADDED_P50_MS,
        )
    )
    out.append(
        _target(
            "added latency p99 at c1",
            f"(d) - (a) p99 <= {GOAL_C1_ADDED_P99_MS} ms",
            None if d_added is None else d_added["p99_ms"],
            None if d_added is None else d_added["p99_ms"] <= GOAL_C1_ADDED_P99_MS,
        )
    )
    limit = GOAL_CONN_FACTOR * HIGH_CONCURRENCY
    worst: float | None = None
    worst_at = ""
    for name, conns in connections.items():
        if name.split("/")[0] not in ("c", "d", "e"):
            continue
        workers = conns["workers"]
        for phase in ("during", "after"):
            seen = conns.get(phase)
            if not seen:
                continue
            per_pool = max([seen["total"] / workers, *seen.get("per_worker", [])])
            if worst is None or per_pool > worst:
                worst, worst_at = per_pool, f"{name} {phase}"
    out.append(
        _target(
            "upstream connections",
            f"<= {GOAL_CONN_FACTOR} x {HIGH_CONCURRENCY} = {limit:g} per worker pool "
            "(open at peak + closed during the run, c64)",
            worst,
            None if worst is None else worst <= limit,
            f"worst: {worst_at}" if worst_at else "",
        )
    )
    direct, gateway = ttfb.get("direct"), ttfb.get("gateway")
    overhead = None
    if (
        direct
        and gateway
        and direct.get("ttfb_p50_ms") is not None
        and gateway.get("ttfb_p50_ms") is not None
    ):
        overhead = gateway["ttfb_p50_ms"] - direct["ttfb_p50_ms"]
    out.append(
        _target(
            "streaming time to first byte",
            f"gateway - direct TTFB p50 <= {GOAL_TTFB_OVERHEAD_MS} ms at c16",
            overhead,
            None if overhead is None else overhead <= GOAL_TTFB_OVERHEAD_MS,
            gateway.get("label", "") if gateway else "",
        )
    )
    c_over_b = ratio.get("c_over_b")
    out.append(
        _target(
            "throughput without limits",
            f"(c)/(b) >= {GOAL_C_OVER_B} at {TARGET_WORKERS} workers, c{HIGH_CONCURRENCY}",
            c_over_b,
            None if c_over_b is None else c_over_b >= GOAL_C_OVER_B,
        )
    )
    d_over_dn = ratio.get("d_over_dn")
    out.append(
        _target(
            "access log on vs off",
            f"(d)/(dn) >= {1 - GOAL_ACCESS_LOG_COST:.2f}",
            d_over_dn,
            None if d_over_dn is None else d_over_dn >= 1 - GOAL_ACCESS_LOG_COST,
        )
    )
    dt_over_d = ratio.get("dt_over_d")
    out.append(
        _target(
            "token limits on key and target",
            f"(dt)/(d) >= {1 - GOAL_TOKEN_LIMIT_COST:.2f}",
            dt_over_d,
            None if dt_over_d is None else dt_over_d >= 1 - GOAL_TOKEN_LIMIT_COST,
        )
    )
    per_request = redis_cpu.get("cpu_us_per_request") if redis_cpu else None
    out.append(
        _target(
            "Redis CPU per admitted request",
            f"<= {GOAL_REDIS_US_PER_REQUEST:g} us (INFO cpu around the (d) c64 runs)",
            per_request,
            None if per_request is None else per_request <= GOAL_REDIS_US_PER_REQUEST,
            ""
            if not redis_cpu or redis_cpu.get("script_us_per_request") is None
            else f"scripts {redis_cpu['script_us_per_request']:.1f} us; one Redis core: "
            f"{redis_cpu['requests_per_core_s']:,.0f} requests/s",
        )
    )
    return out


# -- markdown ------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _met(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "NOT met")


def render_markdown(result: Mapping[str, Any]) -> str:
    rows: list[dict[str, Any]] = result["summary"]
    meta = result["meta"]
    lines = [
        f"Benchmark of {meta['started']}: {meta['duration_s']} s runs, {meta['repeats']} repeat(s), "
        f"medians; upstream: {meta['upstream']}; wrk {meta['wrk_threads']} thread(s).",
        "",
        "| config | workers | conc | req/s | p50 ms | p99 ms | x (b) | non-2xx | sock err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        bare = find(rows, "b", row["workers"], row["concurrency"])
        vs_b = row["requests_per_s"] / bare["requests_per_s"] if bare and bare["requests_per_s"] else None
        lines.append(
            f"| ({row['variant']}) | {row['workers'] or '-'} | {row['concurrency']} | "
            f"{_num(row['requests_per_s'], 0)} | {_num(row['p50_ms'], 3)} | {_num(row['p99_ms'], 3)} | "
            f"{_num(vs_b)} | {row['non_2xx']} | {row['socket_errors']} |"
        )
    lines += ["", "Configurations: " + "; ".join(f"({k}) {v}" for k, v in VARIANTS.items()) + ".", ""]
    lines += ["| ratio (req/s, c64) | value |", "|---|---|"]
    for key, value in result["ratios"].items():
        lines.append(f"| {key} | {_num(value)} |")
    lines += ["", "| added latency at c1 over (a) | p50 ms | p99 ms |", "|---|---|---|"]
    for key, value in result["added_latency_c1"].items():
        lines.append(f"| {key} | {_num(value['p50_ms'], 3)} | {_num(value['p99_ms'], 3)} |")
    lines += [
        "",
        "| upstream connections at c64 | open at peak (per worker) | opened in run | closed in run "
        "| after: open / closed |",
        "|---|---|---|---|---|",
    ]
    for key, conns in result["connections"].items():
        during, after = conns.get("during") or {}, conns.get("after") or {}
        lines.append(
            f"| {key} | {during.get('established', 'n/a')} "
            f"({', '.join(str(n) for n in during.get('per_worker', [])) or '-'}) | "
            f"{during.get('opened', 'n/a')} | {during.get('time_wait', 'n/a')} | "
            f"{after.get('established', 'n/a')} / {after.get('time_wait', 'n/a')} |"
        )
    lines += ["", "| peak RSS (VmHWM) per worker | MiB |", "|---|---|"]
    for key, values in result["rss_mb"].items():
        lines.append(f"| {key} | {', '.join(_num(v, 1) for v in values) or 'n/a'} |")
    for concurrency, ttfb in ((meta["ttfb_concurrency"], result["ttfb"]), (1, result.get("ttfb_c1"))):
        if not ttfb:
            continue
        lines += [
            "",
            f"| streaming c{concurrency} ({meta['stream_chunks']} events, "
            f"{meta['stream_delay_ms']:g} ms apart) | streams/s | TTFB p50 ms | TTFB p99 ms | errors |",
            "|---|---|---|---|---|",
        ]
        for key, value in ttfb.items():
            lines.append(
                f"| {value.get('label', key)} | {_num(value.get('streams_per_s'), 0)} | "
                f"{_num(value.get('ttfb_p50_ms'))} | {_num(value.get('ttfb_p99_ms'))} | "
                f"{value.get('errors', 'n/a')} |"
            )
    redis_cpu = result.get("redis_cpu")
    if redis_cpu and redis_cpu.get("cpu_us_per_request") is not None:
        lines += [
            "",
            f"Redis CPU per admitted request of (d) at c64: {redis_cpu['cpu_us_per_request']:.1f} us "
            f"(scripts {redis_cpu['script_us_per_request']:.1f} us) over {redis_cpu['requests']:,} requests; "
            f"one Redis core sustains about {redis_cpu['requests_per_core_s']:,.0f} requests/s.",
        ]
    lines += ["", "| target | goal | value | result |", "|---|---|---|---|"]
    for target in result["targets"]:
        note = f" ({target['note']})" if target["note"] else ""
        lines.append(
            f"| {target['name']} | {target['goal']} | {_num(target['value'])}{note} | {_met(target['met'])} |"
        )
    if meta.get("notes"):
        lines += ["", *(f"- {note}" for note in meta["notes"])]
    return "\n".join(lines) + "\n"
