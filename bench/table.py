#!/usr/bin/env python3
"""Turns the JSON lines of bench/compare.sh into a Markdown table of ratios.

Every figure is "lower is better" except the pass-through throughput; a ratio
below 1 means the demo does better than the peer.
"""
import json
import statistics
import sys


def load(path):
    """The runs by (server, scenario); repeated runs become a list."""
    runs = {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        run = json.loads(line)
        server, _, load = run.get("label", "").partition("|")
        scenario = run["scenario"]
        if scenario == "hold" and run.get("http2"):
            scenario = "hold_h2"
        run["load"] = load
        runs.setdefault((server, scenario), []).append(run)
    return runs


FIGURES = [
    # (scenario, key, description)
    ("hold", "bytes_per_poll", "memory per held HTTP/1 poll (bytes, anon RSS)"),
    ("hold", "idle_cpu_pct", "CPU while the polls sit idle (% of a core)"),
    ("hold_h2", "bytes_per_poll", "memory per held HTTP/2 poll (bytes, anon RSS)"),
    ("fanout", "p50_ms", "fan-out, time to response p50 (ms)"),
    ("fanout", "p99_ms", "fan-out, time to response p99 (ms)"),
    ("fanout", "max_ms", "fan-out, time to last response (ms)"),
    ("fanout", "missing", "fan-out, responses missing"),
    ("fanout", "server_cpu_us_per_response", "fan-out, server CPU per response (µs)"),
    ("unicast", "p50_ms", "unicast publish→receive p50 (ms)"),
    ("unicast", "p99_ms", "unicast publish→receive p99 (ms)"),
    ("unicast", "p999_ms", "unicast publish→receive p99.9 (ms)"),
    ("unicast", "lost", "unicast events lost"),
    ("unicast", "server_cpu_us_per_event", "unicast, server CPU per event (µs)"),
    ("churn", "growth_after_second_kb", "churn, RSS growth after warm-up (kB)"),
    ("churn", "slope_bytes_per_conn", "churn, RSS trend per cycle ÷ polls per cycle (bytes; Theil-Sen)"),
    ("churn", "parked_after", "churn, parked afterwards"),
    ("churn", "cpu_us_per_conn", "churn, server CPU per connection (µs)"),
]


def value(repeats, key):
    """The figure of a run, or the median over repeated runs (the worst for
    losses and missing responses)."""
    if not repeats:
        return None
    values = []
    for run in repeats:
        v = run["expected"] - run["received"] if key == "missing" else run.get(key)
        if v is not None:
            values.append(v)
    if not values:
        return None
    if key in ("missing", "lost"):
        return max(values)
    return statistics.median(values)


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.3g}"
    return f"{v:,}"


def ratio(a, b):
    if a is None or b is None:
        return "–"
    if b == 0:
        return "=" if a == 0 else "∞"
    return f"{a / b:.2f}"


def main(path):
    runs = load(path)
    servers = ["demo", "nchan", "pushpin", "gateway"]
    present = [s for s in servers if any(k[0] == s for k in runs)]
    peers = [s for s in present if s != "demo"]
    head = "| figure | " + " | ".join(present) + " | " + " | ".join(f"demo / {p}" for p in peers) + " |"
    print(head)
    print("|" + " --- |" * (1 + len(present) + len(peers)))
    for scenario, key, description in FIGURES:
        values = {s: value(runs.get((s, scenario), []), key) for s in present}
        if all(v is None for v in values.values()):
            continue
        cells = [fmt(values[s]) for s in present]
        ratios = [ratio(values["demo"], values[p]) for p in peers] if "demo" in values else []
        print(f"| {description} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    passthrough = runs.get(("demo", "passthrough"), [None])[-1]
    if passthrough:
        bare = statistics.median(passthrough["bare_rps"])
        layered = statistics.median(passthrough["layered_rps"])
        print()
        print(
            f"Pass-through (wrk, demo `/`, median of {len(passthrough['bare_rps'])}): "
            f"bare {bare:,.0f} req/s, with the layer {layered:,.0f} req/s: "
            f"{100 * layered / bare:.1f} % of the bare service."
        )
    goals(runs)
    reps = max(len(v) for v in runs.values())
    if reps > 1:
        print()
        print(f"Repeated scenarios: medians of {reps} runs (missing responses and lost events: the worst run).")
    print()
    loads = sorted({f"{k[0]} {k[1]}: {r['load']}" for k, rs in runs.items() for r in rs if r.get("load")})
    print("Machine load before each run: " + "; ".join(loads))


def goals(runs):
    """The issue's goals against Nchan, as met or not in this run."""
    if not any(k[0] == "nchan" for k in runs):
        return
    def v(server, scenario, key):
        return value(runs.get((server, scenario), []), key)
    checks = []
    demo, nchan = v("demo", "hold", "bytes_per_poll"), v("nchan", "hold", "bytes_per_poll")
    if demo is not None and nchan is not None:
        checks.append((demo <= nchan, f"memory per held HTTP/1 poll ≤ Nchan's: {demo:,.0f} vs {nchan:,.0f} bytes"))
    for key, what in (("p99_ms", "p99"), ("max_ms", "completion (max)")):
        demo, nchan = v("demo", "fanout", key), v("nchan", "fanout", key)
        if demo is not None and nchan is not None:
            checks.append((demo <= nchan, f"fan-out to 10,000, {what} ≤ Nchan's: {demo:.1f} vs {nchan:.1f} ms"))
    demo, nchan = v("demo", "unicast", "p99_ms"), v("nchan", "unicast", "p99_ms")
    lost = v("demo", "unicast", "lost")
    if demo is not None and nchan is not None:
        checks.append((demo <= nchan and lost == 0, f"unicast p99 ≤ Nchan's with 0 lost: {demo:.3f} vs {nchan:.3f} ms, {lost} lost"))
    slope, parked = v("demo", "churn", "slope_bytes_per_conn"), v("demo", "churn", "parked_after")
    if slope is not None:
        # Flat: after warm-up, RSS grows by less than 5 % of a held poll's
        # cost per churned poll and cycle (a leak of one poll in 20).
        held = v("demo", "hold", "bytes_per_poll") or 10_000
        checks.append((slope < 0.05 * held and parked == 0, f"churn leaves RSS flat and 0 parked: trend {slope:,.1f} bytes per churned poll per cycle (a held poll: {held:,.0f}), {parked} parked"))
    passthrough = runs.get(("demo", "passthrough"), [None])[-1]
    if passthrough:
        share = statistics.median(passthrough["layered_rps"]) / statistics.median(passthrough["bare_rps"])
        checks.append((share >= 0.98, f"pass-through keeps ≥ 98 % of the bare service: {100 * share:.1f} %"))
    print()
    print("Goals against Nchan in this run:")
    for met, text in checks:
        print(f"- {'met' if met else 'NOT met'}: {text}")


if __name__ == "__main__":
    main(sys.argv[1])
