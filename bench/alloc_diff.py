#!/usr/bin/env python3
"""Compares two jemalloc statistics dumps (malloc_stats_print "J"), taken
before and while N polls are held: jemalloc's totals and the regions of each
size class added, per poll (bench/alloc-probe.sh)."""
import json
import sys


def load(path):
    text = open(path).read()
    start = text.find('{"jemalloc"')
    return json.JSONDecoder().raw_decode(text[start:])[0]["jemalloc"]


def live(dump):
    arenas = dump["stats.arenas"]
    if "merged" in arenas:
        arenas = {"merged": arenas["merged"]}
    keys = [k for k in arenas if k == "merged" or k.isdigit()]
    bins = [sum(arenas[k]["bins"][i]["curregs"] for k in keys) for i in range(len(arenas[keys[0]]["bins"]))]
    large = [sum(arenas[k]["lextents"][i]["curlextents"] for k in keys) for i in range(len(arenas[keys[0]]["lextents"]))]
    return bins, large


before, held, n = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
for key in ["allocated", "active", "metadata", "resident", "mapped", "retained"]:
    a, b = before["stats"][key], held["stats"][key]
    print(f"{key:10} {a:>12} -> {b:>12}  per poll {(b - a) / n:9.1f}")
sizes = [b["size"] for b in held["arenas"]["bin"]] + [x["size"] for x in held["arenas"]["lextent"]]
bins_a, large_a = live(before)
bins_b, large_b = live(held)
total = 0
for size, a, b in zip(sizes, bins_a + large_a, bins_b + large_b):
    added = b - a
    total += size * added
    if abs(added) >= n * 0.05:
        print(f"size {size:>7}: {added:>8} regions  {added / n:6.2f}/poll  {size * added / n:8.1f} B/poll")
print(f"all size classes: {total / n:.1f} B/poll")
