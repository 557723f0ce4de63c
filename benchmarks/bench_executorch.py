"""Throughput of the ExecuTorch adapters (``xnnpack``, ``executorch_portable``), per op.

Prints a Markdown table. Two numbers per (backend, op):

- "drawn": examples/s on cases drawn by the op's Hypothesis strategy (fixed seed). Nearly
  every draw is a new structure (shapes, params), so this is the cost of lowering a program;
- "same structure": examples/s when only the values change (what shrinking and repeated
  structures cost): the cached program gets the new weights patched in, or is relowered when
  the lowering computes on the weights (XNNPACK folding batch norm).

Measured in this process after one warm-up example, pinned to one core (``--cores`` to change),
as wall-clock rates and as rates per CPU second of this process (what one core gives when the
machine is shared). The one-time setup (imports, first lowering) is reported separately.

    .venv/bin/python benchmarks/bench_executorch.py [--examples 12] [--repeats 30] [--ops conv2d]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import adapters  # noqa: E402
from edgediff.case import Case  # noqa: E402
from edgediff.runner import run_case  # noqa: E402
from properties.ops import OPS  # noqa: E402


def drawn_cases(op: str, n: int, seed: int = 0) -> list:
    """``n`` cases from the op's strategy, reproducibly (Hypothesis' generate phase only)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st
    out = []

    @hseed(seed)
    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def collect(data):
        out.append(data.draw(OPS[op].strategy()))

    collect()
    return out[:n]


def revalued(case: Case, seed: int) -> Case:
    """The same structure with new values (variances kept positive)."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for name, a in case.inputs.items():
        v = rng.standard_normal(a.shape).astype(np.float32)
        inputs[name] = np.abs(v) + 0.25 if name == "running_var" else v
    return Case(case.op, inputs, case.params, case.layout, case.dtype)


def timed(adapter, cases):
    """(wall seconds, CPU seconds of this process, {outcome kind: count})."""
    kinds, t0, c0 = {}, time.perf_counter(), time.process_time()
    for case in cases:
        o = run_case(case, adapter, adapters.paths(adapter, case.op)[0], OPS[case.op])
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
    return time.perf_counter() - t0, time.process_time() - c0, kinds


def rate(n, seconds):
    return f"{n / seconds:.2f}" if seconds > 0 else "inf"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default="xnnpack,executorch_portable")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--examples", type=int, default=12, help="drawn cases per op")
    ap.add_argument("--repeats", type=int, default=30, help="same-structure runs per op")
    ap.add_argument("--cores", type=int, default=1, help="CPU cores to pin to (0: no pinning)")
    args = ap.parse_args(argv)
    if args.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cores]))
    rows = []
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        try:
            adapter = adapters.load(name)
        except adapters.AdapterUnavailable as exc:
            print(f"{name}: unavailable ({exc})", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        timed(adapter, [drawn_cases("clamp", 1, seed=99)[0]])          # setup + first lowering
        setup = time.perf_counter() - t0
        for op in [o.strip() for o in args.ops.split(",") if o.strip()]:
            cases = drawn_cases(op, args.examples + 1)
            timed(adapter, cases[:1])                                   # warm this op's path
            lowerer = adapter._backend.lowerer
            before = lowerer.stats["lowerings"]
            wall, cpu, kinds = timed(adapter, cases[1:])
            lowerings = lowerer.stats["lowerings"] - before
            n = len(cases) - 1
            base = next((c for c in cases if run_case(
                c, adapter, adapters.paths(adapter, op)[0], OPS[op]).kind != "unsupported"), None)
            same = ("n/a (all unsupported)", "")
            if base is not None:
                s_wall, s_cpu, _ = timed(adapter, [revalued(base, 1000 + i) for i in range(args.repeats)])
                same = (rate(args.repeats, s_wall), rate(args.repeats, s_cpu))
            rows.append((name, op, rate(n, wall), rate(n, cpu), *same, str(lowerings),
                         ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))))
        rows.append((name, "(setup: imports + first lowering)", f"{setup:.1f} s", "", "", "", "", ""))
    header = ("backend", "op", "drawn ex/s (wall)", "drawn ex/s (CPU)", "same-structure ex/s (wall)",
              "same-structure ex/s (CPU)", "lowerings (drawn)", "outcomes (drawn)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
