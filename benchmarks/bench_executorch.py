"""Throughput of the ExecuTorch adapters (``xnnpack``, ``executorch_portable``), per op and path.

Prints Markdown tables (``--write`` also puts them into benchmarks/RESULTS.md). Two numbers per
(backend, op, path), float32 and int8 paths alike:

- "drawn": examples/s on cases drawn by the op's Hypothesis strategy (fixed seed). Nearly
  every draw is a new structure (shapes, params), so this is the cost of lowering a program;
- "same structure": examples/s when only the values change (what shrinking and repeated
  structures cost): the cached program gets the new weights patched in, or is relowered when
  the lowering computes on the weights (XNNPACK folding batch norm). An int8 path quantizes
  with scales calibrated on each example's own values, so every int8 example is a lowering.

For int8 paths the table also gives the largest difference seen between the program's output and
the fake-quantized eager graph it was lowered from, in output LSBs (``max_lsb_vs_fake_quant``).
A second table splits the CPU time of one new structure into its stages (export, pt2e
quantization, ``to_edge_transform_and_lower``, ``to_executorch``, load + execute).

Measured in this process after one warm-up example, pinned to one core (``--cores`` to change),
as wall-clock rates and as rates per CPU second of this process (what one core gives when the
machine is shared). The one-time setup (imports, first lowering) is reported separately.

    .venv/bin/python benchmarks/bench_executorch.py [--examples 12] [--repeats 30] [--ops conv2d]
        [--paths f32,int8_per_channel] [--write]
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


def timed(adapter, cases, path=None, lsb=None):
    """(wall seconds, CPU seconds of this process, {outcome kind: count}); appends each int8
    outcome's max_lsb_vs_fake_quant to ``lsb``."""
    kinds, t0, c0 = {}, time.perf_counter(), time.process_time()
    for case in cases:
        o = run_case(case, adapter, path or adapters.paths(adapter, case.op)[0], OPS[case.op])
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
        if lsb is not None and "max_lsb_vs_fake_quant" in o.extra:
            lsb.append(o.extra["max_lsb_vs_fake_quant"])
    return time.perf_counter() - t0, time.process_time() - c0, kinds


def stage_times(xnnpack: bool, quantization, n: int = 4, seed: int = 7) -> dict:
    """Median CPU seconds per stage of lowering a new conv2d structure (the adapter's own
    helpers, called one by one)."""
    import torch
    from adapters import _executorch as et
    et.setup()
    if quantization and not xnnpack:
        import executorch.kernels.quantized  # noqa: F401
    stages = {}
    for i, case in enumerate(drawn_cases("conv2d", n + 1, seed=seed)):
        inputs = {k: v for k, v in case.arrays_for_backend().items() if v is not None}
        t = {}
        c = time.process_time()
        module, x = et.build_module(case.op, inputs, case.params)
        if quantization:
            module = et.quantize_module(module, x, quantization)
            t["pt2e quantize (export, prepare, calibrate, convert)"] = time.process_time() - c
            c = time.process_time()
        with torch.no_grad():
            exported = torch.export.export(module, (x,))
        t["torch.export"] = time.process_time() - c
        c = time.process_time()
        from executorch.exir import to_edge_transform_and_lower
        partitioner = None
        if xnnpack:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            partitioner = [XnnpackPartitioner()]
        edge = to_edge_transform_and_lower(exported, partitioner=partitioner)
        t["to_edge_transform_and_lower"] = time.process_time() - c
        c = time.process_time()
        buffer = edge.to_executorch().buffer
        t["to_executorch"] = time.process_time() - c
        c = time.process_time()
        try:
            et.execute_program(buffer, x)
        except Exception:
            pass
        t["load + execute"] = time.process_time() - c
        if i == 0:
            continue                                   # warm-up
        for k, v in t.items():
            stages.setdefault(k, []).append(v)
    return {k: float(np.median(v)) for k, v in stages.items()}


def batched_lowering(sizes=(1, 4, 16, 32), seed: int = 3) -> list:
    """CPU ms per conv when ``n`` drawn conv2d structures are lowered as ONE program (one module
    with n independent convs, n inputs, n outputs) through XNNPACK. A measurement of what
    batching would buy; the adapter lowers one structure per program (a Hypothesis run draws
    one case at a time, so there is nothing to batch)."""
    import torch
    from adapters import _executorch as et
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    et.setup()

    class Several(torch.nn.Module):
        def __init__(self, modules):
            super().__init__()
            self.convs = torch.nn.ModuleList(modules)

        def forward(self, *xs):
            return tuple(m(x) for m, x in zip(self.convs, xs))

    built = []
    for case in drawn_cases("conv2d", max(sizes) + 1, seed=seed):
        inputs = {k: v for k, v in case.arrays_for_backend().items() if v is not None}
        built.append(et.build_module(case.op, inputs, case.params))
    rows = []
    for i, n in enumerate((1,) + tuple(sizes)):
        group = built[:n] if i else built[-1:]            # first: warm-up on another structure
        c = time.process_time()
        with torch.no_grad():
            exported = torch.export.export(Several([m for m, _ in group]), tuple(x for _, x in group))
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        edge.to_executorch()
        cpu = time.process_time() - c
        if i:
            rows.append((str(n), f"{cpu:.2f}", f"{cpu / n * 1e3:.0f}", rate(n, cpu),
                         str(len(et.not_delegated(edge)))))
    return rows


def rate(n, seconds):
    return f"{n / seconds:.2f}" if seconds > 0 else "inf"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default="xnnpack,executorch_portable")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--examples", type=int, default=12, help="drawn cases per op")
    ap.add_argument("--repeats", type=int, default=30, help="same-structure runs per op")
    ap.add_argument("--paths", default="", help="path suffixes to run, e.g. f32,int8_per_tensor "
                    "(default: every path of each op)")
    ap.add_argument("--cores", type=int, default=1, help="CPU cores to pin to (0: no pinning)")
    ap.add_argument("--no-stages", action="store_true", help="skip the per-stage table")
    ap.add_argument("--batch-experiment", action="store_true",
                    help="also time lowering 1/4/16/32 drawn conv2d structures as one program")
    ap.add_argument("--write", action="store_true", help="write the tables to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    suffixes = [p.strip() for p in args.paths.split(",") if p.strip()]
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
            for path in adapters.paths(adapter, op):
                if suffixes and path.split("/", 1)[1] not in suffixes:
                    continue
                rows.append(bench_path(adapter, name, op, path, cases, args.repeats))
        rows.append((name, "(setup: imports + first lowering)", "", f"{setup:.1f} s", "", "", "", "", "", ""))
    header = ("backend", "op", "path", "drawn ex/s (wall)", "drawn ex/s (CPU)",
              "same-structure ex/s (wall)", "same-structure ex/s (CPU)", "lowerings (drawn)",
              "outcomes (drawn)", "max LSB vs fake-quant")
    out = [table(header, rows)]
    if not args.no_stages:
        stage_rows = []
        for name, xnnpack in (("xnnpack", True), ("executorch_portable", False)):
            if name not in [b.strip() for b in args.backends.split(",")]:
                continue
            for quantization in (None, "int8_per_channel"):
                st = stage_times(xnnpack, quantization)
                total = sum(st.values())
                stage_rows.append((name, "conv2d " + (quantization or "f32"),
                                   *(f"{st.get(k, 0) * 1e3:.0f}" for k in STAGES), f"{total * 1e3:.0f}",
                                   rate(1, total)))
        out.append(table(("backend", "program", *[f"{k} (ms CPU)" for k in STAGES], "total (ms CPU)",
                          "ex/s if every example is new"), stage_rows))
    if args.batch_experiment:
        out.append(table(("conv2d structures in one program", "lowering CPU s", "CPU ms per conv",
                          "convs/s", "nodes not delegated"), batched_lowering()))
    text = "\n\n".join(out)
    print(text)
    if args.write:
        from benchmarks.results import write_section
        write_section("ExecuTorch: examples/s per adapter, op and path (one core)",
                      "python benchmarks/bench_executorch.py " + " ".join(argv or sys.argv[1:]),
                      text + "\n\n" + NOTES)
    return 0


STAGES = ("pt2e quantize (export, prepare, calibrate, convert)", "torch.export",
          "to_edge_transform_and_lower", "to_executorch", "load + execute")
NOTES = """\
"drawn": new structures from the op's strategy (each one a lowering); "same structure": new
values in a cached structure (float: weights patched into the cached program, no lowering;
int8 and XNNPACK conv2d_batch_norm: lowered per example, since the lowering computes on the
values). CPU rates count this process's CPU seconds (the machine is shared); wall rates include
waiting for the other processes. int8 paths calibrate min/max on each example, quantize with
XNNPACKQuantizer and lower per example; "max LSB" is the largest |program - fake-quantized graph|
seen, in output quantization steps."""


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def bench_path(adapter, name, op, path, cases, repeats):
    """One row: drawn and same-structure rates of ``op`` through ``path``."""
    lsb = []
    timed(adapter, cases[:1], path)                                 # warm this op's path
    lowerer = adapter._backend.lowerer_for(path)
    before = lowerer.stats["lowerings"]
    wall, cpu, kinds = timed(adapter, cases[1:], path, lsb)
    lowerings = lowerer.stats["lowerings"] - before
    n = len(cases) - 1
    base = next((c for c in cases if run_case(c, adapter, path, OPS[op]).kind != "unsupported"), None)
    same = ("n/a (all unsupported)", "")
    if base is not None:
        reps = repeats if "int8" not in path else max(3, repeats // 6)
        s_wall, s_cpu, _ = timed(adapter, [revalued(base, 1000 + i) for i in range(reps)], path, lsb)
        same = (rate(reps, s_wall), rate(reps, s_cpu))
    return (name, op, path, rate(n, wall), rate(n, cpu), *same, str(lowerings),
            ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
            f"{max(lsb):.3f} ({len(lsb)} runs)" if lsb else "")


if __name__ == "__main__":
    sys.exit(main())
