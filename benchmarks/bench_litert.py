"""Conv examples per second through the litert adapter, per path, on one core.

float32: generates ~300 conv2d cases with the property strategy (Hypothesis, generate phase
only), keeps the ones LiteRT can express, then calls the adapter directly (build the .tflite
model, load it, invoke) for every case and path. int8: the same for the int8 CONV_2D and
DEPTHWISE_CONV_2D cases of properties/test_litert_int8.py (strategies_int8.TFLITE_CASES).
The golden op is not timed. Prints Markdown tables; ``--write`` puts the int8 table into
benchmarks/RESULTS.md (its own section; the float section is left as it is).

    .venv/bin/python benchmarks/bench_litert.py [--cases 300] [--repeat 3] [--cpu 0]
                                                [--int8-only] [--write]
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
from properties import strategies_int8 as S8  # noqa: E402


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


def generate_int8_cases(op: str, n: int) -> list:
    cases = []

    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(S8.TFLITE_CASES[op]())
    def collect(case):
        cases.append(case)

    collect()
    return cases


def time_int8(litert, op, cases, path, repeat):
    """Like time_path for the int8 ops (every case is expressible; xnnpack must take all)."""
    fn = getattr(litert, op)
    wall, cpu, skipped = [], [], 0
    for _ in range(repeat):
        for case in cases:
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                fn(**case, path=path)
            except adapters.Unsupported:
                skipped += 1
                continue
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return wall, cpu, skipped


CONV_OPS = ("tflite_conv2d_s8", "tflite_depthwise_conv2d_s8")
TABLE_HEAD = ("| path | examples/s (wall) | examples/s (CPU) | mean ms | median ms | p95 ms | "
              "unsupported calls |\n|---|---:|---:|---:|---:|---:|---:|")


def row(label, wall, cpu, skipped):
    q = statistics.quantiles(wall, n=20)
    return (f"| {label} | {len(wall) / sum(wall):.0f} | {len(cpu) / sum(cpu):.0f} | "
            f"{1e3 * sum(wall) / len(wall):.3f} | {1e3 * statistics.median(wall):.3f} | "
            f"{1e3 * q[18]:.3f} | {skipped} |")


def float_table(litert, args) -> str:
    generated = generate_cases(args.cases)
    cases = [c for c in generated if expressible(litert, c)]
    for path in litert.PATHS:                      # warm-up: imports, XNNPACK delegate creation
        litert.conv2d(**cases[0].arrays_for_backend(), **cases[0].params, path=path)
    gc.collect()
    lines = [f"litert {litert.version}: {len(cases)} conv2d cases LiteRT can express "
             f"(of {len(generated)} generated; grouped convs are Unsupported), one core, "
             f"num_threads=1, {args.repeat} passes; every call timed (build + load + invoke)\n",
             TABLE_HEAD]
    for path in litert.PATHS:
        lines.append(row(path, *time_path(litert, cases, path, args.repeat)))
    wall, cpu = time_build(litert, cases, args.repeat)
    lines.append(f"\nmodel build alone (flatbuffers object API): mean {1e3 * sum(wall) / len(wall):.3f} ms "
                 f"wall, {1e3 * sum(cpu) / len(cpu):.3f} ms CPU; median "
                 f"{1e3 * statistics.median(wall):.3f} ms wall")
    return "\n".join(lines)


def int8_table(litert, args) -> str:
    lines = []
    per_op = {op: generate_int8_cases(op, args.cases) for op in CONV_OPS}
    for op, cases in per_op.items():                  # warm-up
        for path in litert.PATHS:
            getattr(litert, op)(**cases[0], path=path)
    gc.collect()
    sizes = ", ".join(f"{len(c)} {op}" for op, c in per_op.items())
    lines.append(f"litert {litert.version}, int8: {sizes} cases (strategies_int8.TFLITE_CASES: "
                 f"per-channel weights, bias, zero points, fused activations, SAME/VALID/PAD), "
                 f"one core, num_threads=1, {args.repeat} passes; every call timed "
                 f"(build + load + invoke)\n")
    lines.append(TABLE_HEAD.replace("| path |", "| op | path |").replace("|---|", "|---|---|", 1))
    for op, cases in per_op.items():
        for path in litert.PATHS:
            lines.append(row(f"{op} | {path}", *time_int8(litert, op, cases, path, args.repeat)))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3, help="passes over all cases per path")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the first allowed)")
    ap.add_argument("--int8-only", action="store_true", help="skip the float32 table")
    ap.add_argument("--write", action="store_true",
                    help="write the int8 table into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
    litert = adapters.load("litert")
    gc.freeze()
    floats = None
    if not args.int8_only:
        floats = float_table(litert, args)
        print(floats + "\n")
    table = int8_table(litert, args)
    load = f"load average during the run: {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(table)
    if load:
        print(f"\n{load} (wall numbers are only meaningful on an otherwise idle core)")
    if args.write:
        from results import write_section
        command = ("bench_litert.py --write" if floats else "bench_litert.py --int8-only --write")
        body = table
        if floats:
            body += "\n\nThe float32 conv2d cases in the same run, for comparison:\n\n" + floats
        if load:
            body += f"\n\n{load}; CPU time is the stable figure on a shared machine."
        write_section("LiteRT int8: conv examples/s per path (one core)",
                      f".venv/bin/python benchmarks/{command}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
