"""Examples per second of the ggml adapter, per path: in-process and through its worker.

    .venv/bin/python benchmarks/bench_ggml.py [--cases 200] [--seed 0] [--ops conv2d,mean]
                                              [--backend ggml@]   # ggml built from $GGML_ROOT

For every (op, path), ~N cases are drawn from the op's Hypothesis strategy (derandomized, so
every run times the same cases). Each case is called ``--repeat`` times and its fastest call
counts (the machine may be shared); cases the path refuses (Unsupported) are left out, so a
rate is timed supported cases / seconds spent on them:

- in-process: the adapter's op function called directly, in a child process per path; when
  ggml aborts, that case counts as a crash (its time unknown, left out of the rate) and a
  new child goes on with the next case;
- isolated: through ``edgediff.isolation.isolate`` (wire format, worker process, restarts
  after crashes included), as ``pytest properties --backend ggml`` runs it.

The golden op and the comparison are not timed. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import adapters  # noqa: E402
from properties.ops import OPS  # noqa: E402


def draw_cases(op: str, n: int, seed: int) -> list:
    from hypothesis import HealthCheck, Phase, given, settings
    cases = []

    @settings(max_examples=n, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), deadline=None)
    @given(OPS[op].strategy(specials=False))
    def collect(case):
        cases.append(case)

    collect._hypothesis_internal_use_seed = seed
    collect()
    return cases[:n]


def time_calls(adapter, op: str, path: str, cases, repeat: int) -> dict:
    """Per-case timing (the fastest of ``repeat`` calls); counts outcomes."""
    from edgediff.runner import WorkerDied, WorkerHung
    counts = {"ok": 0, "unsupported": 0, "error": 0, "crash": 0, "hang": 0, "timed": 0}
    seconds = 0.0
    for case in cases:
        arrays = case.arrays_for_backend()
        best = None
        for _ in range(repeat):
            t0 = time.perf_counter()
            try:
                adapters.call(adapter, op, path, arrays, case.params)
                kind = "ok"
            except adapters.Unsupported:
                kind = "unsupported"
                break
            except WorkerDied:
                kind = "crash"
            except WorkerHung:
                kind = "hang"
            except Exception:
                kind = "error"
            took = time.perf_counter() - t0
            best = took if best is None else min(best, took)
            if kind != "ok":
                break
        counts[kind] += 1
        if kind != "unsupported":
            seconds += best
            counts["timed"] += 1
    counts["seconds"] = seconds
    return counts


def child(case_file: str, op: str, path: str, start: str, repeat: str) -> None:
    """In-process timing of one path from case ``start`` on, in its own process: one line
    per case ("index kind seconds"), flushed, so the parent knows where an abort struck."""
    import gc
    cases = pickle.loads(Path(case_file).read_bytes())
    adapter = adapters.load(os.environ.get("EDGEDIFF_BENCH_BACKEND", "ggml"))
    gc.collect()
    gc.freeze()
    for i in range(int(start), len(cases)):
        case = cases[i]
        arrays = case.arrays_for_backend()
        best = None
        for _ in range(int(repeat)):
            t0 = time.perf_counter()
            try:
                adapters.call(adapter, op, path, arrays, case.params)
                kind = "ok"
            except adapters.Unsupported:
                kind = "unsupported"
            except Exception:
                kind = "error"
            took = time.perf_counter() - t0
            best = took if best is None else min(best, took)
            if kind != "ok":
                break
        print(i, kind, repr(best), flush=True)


CHILD_ENV = {"GGML_NO_BACKTRACE": "1", "PATH": "/usr/bin:/bin"}


def in_process(case_file: str, op: str, path: str, n: int, repeat: int) -> dict:
    """Runs ``child`` until every case is timed. An abort counts as a crash of the case that
    was running, and a new child starts after it (process start-up is not timed)."""
    counts = {"ok": 0, "unsupported": 0, "error": 0, "crash": 0, "hang": 0, "timed": 0, "seconds": 0.0}
    # untimed warm-up over the last few cases: imports, first allocations, page cache
    subprocess.run([sys.executable, __file__, "--child", case_file, op, path, str(max(0, n - 3)), "1"],
                   capture_output=True, env=CHILD_ENV, timeout=900)
    start = 0
    while start < n:
        proc = subprocess.run([sys.executable, __file__, "--child", case_file, op, path, str(start), str(repeat)],
                              capture_output=True, text=True, env=CHILD_ENV, timeout=900)
        last = start - 1
        for line in proc.stdout.splitlines():
            i, kind, seconds = line.split()
            last = int(i)
            counts[kind] += 1
            if kind != "unsupported":
                counts["seconds"] += float(seconds)
                counts["timed"] += 1
        if proc.returncode == 0:
            break
        counts["crash"] += 1                           # the case after the last one reported
        start = last + 2
    return counts


def rate(r: dict) -> str:
    if r["ok"] + r["error"] + r["crash"] + r["hang"] == 0:
        return "all unsupported"
    text = f"{r['timed'] / r['seconds']:,.0f}" if r["timed"] else "n/a"
    notes = [f"{r[k]} {k}" for k in ("crash", "error", "hang") if r[k]]
    return text + (f" ({', '.join(notes)})" if notes else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="calls per case; the fastest counts")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--backend", default="ggml", help="ggml (ggml-python) or ggml@[PATH] (a checkout)")
    ap.add_argument("--child", nargs=5, metavar=("CASES", "OP", "PATH", "START", "REPEAT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    adapter = adapters.load(args.backend)
    CHILD_ENV["EDGEDIFF_BENCH_BACKEND"] = args.backend
    if args.backend != "ggml" and os.environ.get("GGML_ROOT"):
        CHILD_ENV["GGML_ROOT"] = os.environ["GGML_ROOT"]
    from edgediff.isolation import isolate
    isolated = isolate(adapter, args.backend, OPS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops.split(","):
            cases = draw_cases(op, args.cases, args.seed)
            case_file = Path(tmp) / f"{op}.pkl"
            case_file.write_bytes(pickle.dumps(cases))
            for path in adapters.paths(adapter, op):
                inproc = in_process(str(case_file), op, path, len(cases), args.repeat)
                for case in cases[:3]:                         # warm the worker up
                    try:
                        adapters.call(isolated, op, path, case.arrays_for_backend(), case.params)
                    except Exception:
                        pass
                iso = time_calls(isolated, op, path, cases, args.repeat)
                supported = len(cases) - iso["unsupported"]
                rows.append((op, path, f"{supported}/{len(cases)}", rate(inproc), rate(iso)))
                print(f"  {op} {path}: {rows[-1][2:]}", file=sys.stderr)
    isolated.close()
    print(f"{adapter.name} {adapter.version}, {args.cases} cases per op (seed {args.seed}), fastest of {args.repeat} "
          f"calls per case; rates are timed supported examples per second\n")
    print("| op | path | supported | examples/s in-process | examples/s isolated |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
