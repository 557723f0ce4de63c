"""Throughput of the ``executorch_ggml`` adapter per op and path, through its worker as the
property suite runs it (fork server, programs cached per structure).

Per (op, path), on cases drawn by the op's strategy (fixed seed):
- "new structure": examples/s when every case is a new structure (a lowering each);
- "same structure": examples/s when only the values change (patched into the cached program,
  or lowered again where batch norm folding computes on the weights);
- "property mix": the rate of the differential property in the dev/ci profiles, one structure
  then ``values_per_structure - 1`` value sets on it;
- outcomes: how the drawn cases came out (the backend's bugs included: a crash costs a fork).

    .venv/bin/python benchmarks/bench_executorch_ggml.py [--structures 6] [--values 16] [--ops conv2d]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import adapters  # noqa: E402
from benchmarks.bench_executorch import drawn_cases  # noqa: E402
from edgediff.case import Case  # noqa: E402
from edgediff.isolation import isolate  # noqa: E402
from edgediff.runner import run_case  # noqa: E402
from properties.ops import OPS  # noqa: E402


def new_values(case: Case, rng) -> Case:
    """The same structure with other values (every float input scaled per element)."""
    inputs = {k: (v * rng.uniform(0.5, 1.5, v.shape)).astype(v.dtype) if k != "running_var" else v
              for k, v in case.inputs.items()}
    return Case(case.op, inputs, case.params, case.layout, case.dtype)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--structures", type=int, default=6)
    ap.add_argument("--values", type=int, default=16)
    ap.add_argument("--ops", default=",".join(OPS))
    args = ap.parse_args(argv)
    module = adapters.load("executorch_ggml")
    t0 = time.perf_counter()
    worker = isolate(module, "executorch_ggml", OPS)
    print(f"executorch_ggml {module.version}; worker start {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(0)
    print("| op | path | new structure ex/s | same structure ex/s | property mix ex/s | outcomes |")
    print("|---|---|---|---|---|---|")
    for op in args.ops.split(","):
        for path in module.paths.get(op, ()):
            cases = drawn_cases(op, args.structures, seed=1)
            kinds = Counter()
            t = time.perf_counter()
            for c in cases:
                kinds[run_case(c, worker, path, OPS[op]).kind] += 1
            new_rate = len(cases) / (time.perf_counter() - t)
            same = [new_values(cases[0], rng) for _ in range(args.values)]
            t = time.perf_counter()
            for c in same:
                kinds[run_case(c, worker, path, OPS[op]).kind] += 1
            same_rate = len(same) / (time.perf_counter() - t)
            k = module.values_per_structure(op, path)
            mix = k / (1 / new_rate + (k - 1) / same_rate)
            outcomes = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
            print(f"| {op} | `{path}` | {new_rate:.2f} | {same_rate:.1f} | {mix:.1f} | {outcomes} |")
    worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
