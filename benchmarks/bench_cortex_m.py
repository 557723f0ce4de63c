"""Examples per second of the cortex_m adapter, per op and path, through its worker (as the
property runs it): each example is a quantization with CortexMQuantizer, the Cortex-M passes,
to_executorch and one run of the kernels.

    .venv/bin/python benchmarks/bench_cortex_m.py [--cases 6]

Cases are drawn from properties/test_cortex_m.py's strategies (derandomized: every run times
the same cases). The golden recomputation is timed separately (it is cheap). Prints Markdown.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def draw(strategy, n):
    from hypothesis import HealthCheck, Phase, given, settings
    out = []

    @settings(max_examples=n, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), deadline=None)
    @given(strategy)
    def collect(case):
        out.append(case)
    collect()
    return out[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=6)
    args = ap.parse_args(argv)
    from edgediff.isolation import BackendError, isolate
    from properties import test_cortex_m as T
    worker = isolate(T.CM, "cortex_m", list(T.CM.OPS))
    rows = []
    for op, path in T.TARGETS:
        cases = draw(T.CASES[op], args.cases)
        worker.call(op, path, *cases[0])            # warm up (imports in the fork server)
        ran = failed = 0
        spent = golden_spent = 0.0
        for arrays, params in cases:
            t0 = time.perf_counter()
            try:
                out, facts = worker.call(op, path, arrays, params)
            except BackendError:
                failed += 1
                continue
            spent += time.perf_counter() - t0
            ran += 1
            t1 = time.perf_counter()
            try:
                T.check(op, path, arrays, params, out, facts)
            except T.golden.NotModelled as exc:
                print(f"  not modelled: {exc}", file=sys.stderr)
            golden_spent += time.perf_counter() - t1
        rate = f"{ran / spent:.2f}" if spent else "n/a"
        rows.append((op, path, f"{ran}/{len(cases)}", rate,
                     f"{1000 * golden_spent / max(ran, 1):.1f}", str(failed)))
        print(f"  {rows[-1]}", file=sys.stderr)
    worker.close()
    print(f"{T.CM.version}; {args.cases} cases per (op, path)\n")
    print("| op | path | ran | examples/s | golden ms/example | runtime errors |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
