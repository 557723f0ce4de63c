"""Bug-finding power: run the property budget against planted-bug adapters and measure it.

For each mutant (``benchmarks/mutants/``) and each op it changes, the same property the
gate runs (the op table's strategy, the runner, the op's error model) is run under a
Hypothesis profile (default ``ci``: 40 derandomized examples, then shrinking) and we record:

- detected: a failing example whose input the *unmutated* base adapter gets right (a
  failure of the base itself, such as PyTorch's channels_last depthwise segfault, is not
  credited to the planted bug);
- examples and seconds to the first detection (from the first example of that op's
  property, as one test of a ``pytest -n`` run would see it);
- the shrunk repro's size: elements in its input arrays.

int8 mutants use ``properties.strategies_int8.conv2d_cases`` and a bit-exact comparison
with ``reference.quant.conv2d_s8`` under the mutant's golden rounding mode.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent

GOALS = {"median_seconds": 10.0, "median_repro_elements": 64}


@dataclass
class PowerResult:
    mutant: str
    family: str
    op: str
    bug: str
    detected: bool = False
    examples_to_detect: int | None = None
    seconds_to_detect: float | None = None
    repro_elements: int | None = None
    repro: str = ""
    kind: str = ""                 # outcome kind of the shrunk failure (mismatch, shape, ...)
    examples_run: int = 0
    seconds: float = 0.0           # the whole property, shrinking included
    base_failures: int = 0         # failing examples the base adapter failed too (not credited)

    def row(self) -> str:
        if not self.detected:
            return (f"| {self.mutant} | {self.op} | {self.bug} | **no** | - | - | - | "
                    f"{self.examples_run} examples, {self.seconds:.1f} s |")
        return (f"| {self.mutant} | {self.op} | {self.bug} | yes | {self.examples_to_detect} | "
                f"{self.seconds_to_detect:.2f} | {self.repro_elements} | `{self.repro}` |")


class _Hunt:
    """Counts examples and remembers the first and the last (= shrunk) detection."""

    def __init__(self):
        self.n = 0
        self.t0 = None
        self.first = None            # (examples, seconds)
        self.last = None             # (case, kind)
        self.base_failures = 0

    def example(self):
        if self.t0 is None:
            self.t0 = time.perf_counter()
        self.n += 1

    def detected(self, case, kind):
        if self.first is None:
            self.first = (self.n, time.perf_counter() - self.t0)
        self.last = (case, kind)
        raise _Detected(kind)


class _Detected(AssertionError):
    pass


def _profile(name: str, max_examples: int | None):
    import edgediff.pytest_plugin  # noqa: F401  (registers the dev/ci/thorough profiles)
    kw = {"database": None}        # no replay of an earlier run's failure: a cold hunt
    if max_examples is not None:
        kw["max_examples"] = max_examples
    return settings(settings.get_profile(name), **kw)


def _run(hunt: _Hunt, test) -> None:
    try:
        test()
    except _Detected:
        pass
    except Exception as exc:      # Hypothesis reports flaky or errored hunts this way
        if hunt.first is None:
            raise
        print(f"  note: hunt ended with {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
              file=sys.stderr)


# ---- float mutants (the op table's properties) ------------------------------------------------

def _adapter(mutant, family: str):
    """The mutant as the runner calls it: in a worker when it (or its base) must be isolated."""
    if getattr(mutant, "isolated", False):
        from edgediff.isolation import IsolatedAdapter
        from properties.ops import OPS
        attr = mutant.name.removeprefix("mutant_")
        return IsolatedAdapter(f"benchmarks.mutants.{family}:{attr}", OPS, label=mutant.name)
    return mutant


def _base(mutant, cache: dict):
    """(base adapter, path) for the no-bug check; workers are shared across mutants."""
    import adapters
    key = mutant.base
    if key not in cache:
        base = adapters.load(key)
        if getattr(base, "isolated", False):
            from edgediff.isolation import isolate
            from properties.ops import OPS
            base = isolate(base, adapters.BUILTINS[key], OPS)
        cache[key] = base
    return cache[key], getattr(mutant, "base_path", adapters.DEFAULT_PATH)


def measure_float(mutant, family: str, op: str, profile="ci", max_examples=None,
                  base_cache: dict | None = None, adapter=None) -> PowerResult:
    from edgediff.runner import run_case
    from properties.ops import OPS
    spec = OPS[op]
    base, base_path = _base(mutant, {} if base_cache is None else base_cache)
    adapter = adapter or _adapter(mutant, family)
    hunt = _Hunt()

    @_profile(profile, max_examples)
    @given(data=st.data())
    def prop(data):
        case = data.draw(spec.strategy(specials=False), label="case")
        hunt.example()
        out = run_case(case, adapter, "default", spec)
        if not out.failed:
            return
        if run_case(case, base, base_path, spec).failed:
            hunt.base_failures += 1           # the base fails here too: not the planted bug
            return
        hunt.detected(case, out.kind)

    t0 = time.perf_counter()
    _run(hunt, prop)
    return _result(mutant, family, op, hunt, time.perf_counter() - t0,
                   lambda c: (c.n_elements, c.describe()))


# ---- int8 mutants ------------------------------------------------------------------------------

def measure_int8(mutant, profile="ci", max_examples=None) -> PowerResult:
    from benchmarks.mutants import int8
    from properties import strategies_int8 as S8
    hunt = _Hunt()

    @_profile(profile, max_examples)
    @given(case=S8.conv2d_cases())
    def prop(case):
        hunt.example()
        want = int8.golden(case, mutant.rounding)
        got = mutant.conv2d_s8(case)
        if got.shape != want.shape:
            hunt.detected(case, "shape")
        if not np.array_equal(got, want):
            hunt.detected(case, "mismatch")

    def size(case):
        n = sum(v.size for v in case.values() if isinstance(v, np.ndarray) and v.ndim >= 1
                and v.dtype == np.int8)
        return int(n), _describe_int8(case)

    t0 = time.perf_counter()
    _run(hunt, prop)
    return _result(mutant, "int8", "conv2d_s8", hunt, time.perf_counter() - t0, size)


def _describe_int8(case) -> str:
    x, w = case["x"], case["w"]
    geo = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    return (f"conv2d_s8(x{x.shape}, w{w.shape}, {geo}, input_offset={case['input_offset']}, "
            f"output_offset={case['output_offset']}, act=[{case['act_min']}, {case['act_max']}])")


def _result(mutant, family, op, hunt: _Hunt, seconds: float, size) -> PowerResult:
    r = PowerResult(mutant.name, family, op, mutant.bug, examples_run=hunt.n, seconds=seconds,
                    base_failures=hunt.base_failures)
    if hunt.first is not None:
        case, kind = hunt.last
        r.detected = True
        r.examples_to_detect, r.seconds_to_detect = hunt.first
        r.repro_elements, r.repro = size(case)
        r.kind = kind
    return r


# ---- the whole run ---------------------------------------------------------------------------

def select(names=None, families=None) -> list[tuple[str, object]]:
    """[(family, mutant)] for the requested names/families; unknown names are a usage error."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from benchmarks.mutants import FAMILIES, all_mutants
    found = all_mutants()
    if families:
        bad = sorted(set(families) - set(FAMILIES))
        if bad:
            raise ValueError(f"unknown mutant family {bad}; known: {', '.join(FAMILIES)}")
    chosen = [(fam, m) for fam, ms in found.items() for m in ms
              if (not families or fam in families)]
    if names:
        by_name = {m.name.removeprefix("mutant_"): (fam, m) for fam, m in chosen}
        bad = [n for n in names if n.removeprefix("mutant_") not in by_name]
        if bad:
            raise ValueError(f"unknown mutant(s) {bad}; known: {', '.join(sorted(by_name))}")
        chosen = [by_name[n.removeprefix("mutant_")] for n in names]
    return chosen


def measure_all(chosen, profile="ci", max_examples=None, progress=None) -> list[PowerResult]:
    results, cache = [], {}
    try:
        for family, mutant in chosen:
            if family == "int8":
                ops_results = [measure_int8(mutant, profile, max_examples)]
            else:
                adapter = _adapter(mutant, family)
                try:
                    ops_results = [measure_float(mutant, family, op, profile, max_examples, cache,
                                                 adapter) for op in mutant.mutated_ops]
                finally:
                    if adapter is not mutant:
                        adapter.close()
            for r in ops_results:
                results.append(r)
                if progress:
                    progress(r)
    finally:
        for base in cache.values():
            close = getattr(base, "close", None)
            if callable(close):
                close()
    return results


def summary(results: list[PowerResult]) -> dict:
    hits = [r for r in results if r.detected]
    return {
        "mutants": len(results),
        "detected": len(hits),
        "escaped": [r.mutant for r in results if not r.detected],
        "median_seconds": statistics.median(r.seconds_to_detect for r in hits) if hits else None,
        "median_examples": statistics.median(r.examples_to_detect for r in hits) if hits else None,
        "median_repro_elements": statistics.median(r.repro_elements for r in hits) if hits else None,
        "max_repro_elements": max((r.repro_elements for r in hits), default=None),
    }


def table(results: list[PowerResult], profile: str) -> str:
    s = summary(results)
    lines = ["| mutant | op | planted bug | detected | examples to detect | seconds to detect | "
             "shrunk repro elements | shrunk repro |", "|---|---|---|---|---:|---:|---:|---|"]
    lines += [r.row() for r in results]
    med_t = "-" if s["median_seconds"] is None else f"{s['median_seconds']:.2f} s"
    lines += ["", f"Detected **{s['detected']}/{s['mutants']}** within the `{profile}` budget; "
              f"median time to detect {med_t} (goal < {GOALS['median_seconds']:g} s), median "
              f"examples to detect {s['median_examples']}, median shrunk repro "
              f"{s['median_repro_elements']} input elements (goal < {GOALS['median_repro_elements']})."]
    if s["escaped"]:
        lines.append(f"Escaped: {', '.join(s['escaped'])}.")
    return "\n".join(lines)


def as_dicts(results):
    return [asdict(r) for r in results]
