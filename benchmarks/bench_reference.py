"""Golden conv2d/depthwise vs torch.nn.functional.conv2d in float64, one thread each
(BLAS threads included), on the distinct conv layer shapes of MobileNetV2 at 224x224.

    .venv/bin/python benchmarks/bench_reference.py [--write]

Goal (issue 2): geometric-mean ratio golden/torch <= 1.0, worst layer <= 2.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402
from mobilenet_v2 import conv_layers  # noqa: E402
from results import write_section  # noqa: E402


def best_of(fns, repeats=5, min_time=0.2):
    """Fastest (wall, CPU) time of each function, calling them in turn (a, b, a, b, ...) so that
    load on the shared machine, and any process state one of them changes (e.g. the allocator's
    trim and mmap thresholds, which torch's large allocations raise), affects both alike. CPU
    time (process_time, all threads) is the steadier figure when other processes share the cores:
    long calls are almost never unpreempted, so their fastest wall time is inflated by load."""
    best = [[math.inf, math.inf] for _ in fns]
    start, calls = time.perf_counter(), 0
    while calls < repeats or (time.perf_counter() - start < min_time and calls <= 50):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            c1, t1 = time.process_time(), time.perf_counter()
            best[i] = [min(best[i][0], t1 - t0), min(best[i][1], c1 - c0)]
        calls += 1
    return best


def summary(ratios):
    return math.exp(sum(map(math.log, ratios)) / len(ratios)), max(ratios)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--note", default="", help="a sentence to add to the written section")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    seen, rows = set(), []
    load_before = os.getloadavg()[0]
    with threadpool_limits(limits=1):
        blas = ", ".join(f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})"
                         for i in threadpool_info())
        for name, cin, cout, k, s, g, hw in conv_layers(args.size):
            key = (cin, cout, k, s, g, hw)
            if key in seen:
                continue
            seen.add(key)
            x = rng.standard_normal((1, cin, hw, hw))
            w = rng.standard_normal((cout, cin // g, k, k))
            pad = k // 2
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)
            golden, theirs = best_of([
                lambda: reference.conv2d(x, w, stride=s, padding=pad, groups=g),
                lambda: torch.nn.functional.conv2d(tx, tw, stride=s, padding=pad, groups=g)])
            rows.append((name, f"{cin}->{cout} k{k} s{s} g{g} @{hw}", golden, theirs))
    load_after = os.getloadavg()[0]
    geo_wall, worst_wall = summary([g[0] / t[0] for _, _, g, t in rows])
    geo_cpu, worst_cpu = summary([g[1] / t[1] for _, _, g, t in rows])
    lines = ["| layer | shape | golden ms | torch f64 ms | ratio | golden CPU ms | torch CPU ms | CPU ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {shape} | {g[0] * 1e3:.2f} | {t[0] * 1e3:.2f} | {g[0] / t[0]:.2f} "
              f"| {g[1] * 1e3:.2f} | {t[1] * 1e3:.2f} | {g[1] / t[1]:.2f} |" for n, shape, g, t in rows]
    lines += ["", f"Geometric-mean ratio golden/torch: **{geo_wall:.2f}** wall, **{geo_cpu:.2f}** CPU time "
              f"(goal <= 1.0); worst layer: **{worst_wall:.2f}** wall, **{worst_cpu:.2f}** CPU time (goal <= 2). "
              f"{len(rows)} distinct layers, batch 1, float64, one thread (torch.set_num_threads(1), "
              f"threadpoolctl limit 1; BLAS: {blas}); fastest of >= 5 interleaved calls each. "
              f"1-minute load average {load_before:.1f} before, {load_after:.1f} after the run (2 cores)."]
    if args.note:
        lines += ["", args.note]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("Golden conv vs torch float64 (MobileNetV2 224x224)",
                      "OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_reference.py --write", text)

if __name__ == "__main__":
    main()
