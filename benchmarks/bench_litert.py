"""Conv examples per second through the litert adapter, per path, on one core.

Generates ~300 conv2d cases with the property strategy (Hypothesis, generate phase only),
keeps the ones LiteRT can express (groups == 1 or depthwise), then calls the adapter
directly (build the .tflite model, load it, invoke) for every case and path. The golden
op is not timed. Prints a Markdown table.

    .venv/bin/python benchmarks/bench_litert.py [--cases 300] [--repeat 3] [--cpu 0]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

import adapters  # noqa: E402
from properties import strategies as S  # noqa: E402


def generate_cases(n: int) -> list:
    cases = []

    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(S.conv2d_cases())
    def collect(case):
        cases.append(case)

    collect()
    return cases


def expressible(litert, case) -> bool:
    try:
        litert.conv2d(**case.arrays_for_backend(), **case.params, path="builtin_ref")
        return True
    except adapters.Unsupported:
        return False


def time_path(litert, cases, path, repeat):
    """(wall seconds per call, CPU seconds per call) for every call (``repeat`` passes over all
    cases), and how many calls were Unsupported (on xnnpack: not delegated)."""
    wall, cpu, skipped = [], [], 0
    for _ in range(repeat):
        for case in cases:
            arrays = case.arrays_for_backend()
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                litert.conv2d(**arrays, **case.params, path=path)
            except adapters.Unsupported:
                skipped += 1
                continue
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return wall, cpu, skipped


def time_build(litert, cases, repeat):
    """(wall, CPU) seconds per model build alone (flatbuffers packing), no interpreter."""
    wall, cpu = [], []
    for _ in range(repeat):
        for case in cases:
            inputs = dict(case.arrays_for_backend())
            c0, t0 = time.process_time(), time.perf_counter()
            litert._conv_model("conv2d", inputs, case.params)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return wall, cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3, help="passes over all cases per path")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the first allowed)")
    args = ap.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
    litert = adapters.load("litert")
    generated = generate_cases(args.cases)
    cases = [c for c in generated if expressible(litert, c)]
    for path in litert.PATHS:                      # warm-up: imports, XNNPACK delegate creation
        litert.conv2d(**cases[0].arrays_for_backend(), **cases[0].params, path=path)
    gc.collect()
    gc.freeze()

    print(f"litert {litert.version}: {len(cases)} conv2d cases LiteRT can express "
          f"(of {len(generated)} generated; grouped convs are Unsupported), one core, "
          f"num_threads=1, {args.repeat} passes; every call timed (build + load + invoke)\n")
    print("| path | examples/s (wall) | examples/s (CPU) | mean ms | median ms | p95 ms | "
          "unsupported calls |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in litert.PATHS:
        wall, cpu, skipped = time_path(litert, cases, path, args.repeat)
        q = statistics.quantiles(wall, n=20)
        print(f"| {path} | {len(wall) / sum(wall):.0f} | {len(cpu) / sum(cpu):.0f} | "
              f"{1e3 * sum(wall) / len(wall):.3f} | {1e3 * statistics.median(wall):.3f} | "
              f"{1e3 * q[18]:.3f} | {skipped} |")
    wall, cpu = time_build(litert, cases, args.repeat)
    print(f"\nmodel build alone (flatbuffers object API): mean {1e3 * sum(wall) / len(wall):.3f} ms "
          f"wall, {1e3 * sum(cpu) / len(cpu):.3f} ms CPU; median {1e3 * statistics.median(wall):.3f} ms wall")
    if hasattr(os, "getloadavg"):
        print(f"load average during the run: {os.getloadavg()[0]:.2f} "
              f"(wall numbers are only meaningful on an otherwise idle core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
