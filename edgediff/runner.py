"""The runner: the one place that knows reference (via the op table), adapters and findings.

``run_case`` computes the golden result, calls the adapter through one path, and
classifies what came back as an ``Outcome``:

    pass | unsupported | mismatch | shape | error | crash | hang

Everything but ``pass`` and ``unsupported`` is a failure that becomes a finding.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

import numpy as np

import adapters
from edgediff.case import Case
from edgediff.compare import ErrorStatistics, compare

FAILURE_KINDS = ("mismatch", "shape", "error", "crash", "hang")


class WorkerDied(Exception):
    """An isolated adapter's worker process died (abort, segfault); carries its exit details."""

    def __init__(self, message, signal=None, exitcode=None, stderr_tail=""):
        super().__init__(message)
        self.signal, self.exitcode, self.stderr_tail = signal, exitcode, stderr_tail


class WorkerHung(Exception):
    """An isolated adapter's call did not return within its timeout."""


@dataclass
class Outcome:
    kind: str
    case: Case
    adapter: str
    version: str
    path: str
    detail: str = ""
    stats: ErrorStatistics | None = None
    expected: np.ndarray | None = None
    observed: np.ndarray | None = None
    bound: np.ndarray | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)   # backend facts, e.g. which kernel ran

    @property
    def failed(self) -> bool:
        return self.kind in FAILURE_KINDS

    def message(self) -> str:
        head = f"{self.kind}: {self.adapter} {self.version} path={self.path} on {self.case.describe()}"
        body = self.stats.summary() if self.stats is not None else self.detail
        return f"{head}\n{body}"


def call_backend(call):
    """Run ``call()`` and classify how the backend answered: (result, kind, detail, facts),
    kind None when it returned, else unsupported | hang | crash | error. A backend exception
    is a finding, not a dead test run. Shared by single ops and graphs."""
    try:
        return call(), None, "", {}
    except adapters.Unsupported as exc:
        return None, "unsupported", str(exc) or "unsupported", {}
    except WorkerHung as exc:
        return None, "hang", str(exc), {}
    except WorkerDied as exc:
        return None, "crash", str(exc), dict(signal=exc.signal, exitcode=exc.exitcode,
                                             stderr_tail=exc.stderr_tail)
    except Exception as exc:
        remote = type(exc).__name__ == "BackendError"     # raised in a worker: its text as is
        detail = str(exc) if remote else "".join(
            traceback.format_exception_only(type(exc), exc)).strip()
        facts = {"traceback": traceback.format_exc(limit=8)}
        facts.update(getattr(exc, "facts", None) or {})          # what the backend knew
        return None, "error", detail, facts


def run_case(case: Case, adapter, path: str, spec) -> Outcome:
    """Golden vs adapter on one case through one path."""
    expected = spec.expected(case)
    out = Outcome("pass", case, adapter.name, adapter.version, path, expected=expected)
    t0 = time.perf_counter()
    observed, kind, detail, facts = call_backend(
        lambda: adapters.call(adapter, case.op, path, case.arrays_for_backend(), case.params))
    out.seconds = time.perf_counter() - t0
    out.extra.update(facts)
    if kind is not None:
        out.kind, out.detail = kind, detail
        return recycle_after_failure(adapter, out)
    if isinstance(observed, tuple) and len(observed) == 2 and isinstance(observed[1], dict):
        observed, facts = observed                   # adapters may return (array, facts)
        out.extra.update(facts)
    observed = np.asarray(observed)
    out.observed = observed
    if observed.shape != np.shape(expected):
        out.kind = "shape"
        out.detail = f"output shape {observed.shape}, expected {np.shape(expected)}"
        return recycle_after_failure(adapter, out)
    arith = adapters.arithmetic(adapter, case.op, path)
    out.bound = spec.bound(case, expected, arith)
    out.stats = compare(expected, observed, out.bound)
    out.extra.setdefault("arithmetic", vars(arith).copy())
    if not out.stats.ok:
        out.kind = "mismatch"
    return recycle_after_failure(adapter, out)


def recycle_after_failure(adapter, outcome: Outcome) -> Outcome:
    """Ask a worker for a fresh process after a failing example (``IsolatedAdapter.recycle``),
    so a backend that corrupted its state cannot make the next example fail."""
    if outcome.failed and callable(getattr(adapter, "recycle", None)):
        adapter.recycle()
    return outcome


class FindingFailure(AssertionError):
    """Raised inside a property for a failing outcome; one subclass per kind, so Hypothesis
    shrinks a crash and a mismatch in the same test as two distinct failures."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.message())
        self.outcome = outcome


FAILURE_CLASSES = {kind: type(f"{kind.capitalize()}Found", (FindingFailure,), {})
                   for kind in FAILURE_KINDS}


def failure_for(outcome: Outcome) -> FindingFailure:
    return FAILURE_CLASSES[outcome.kind](outcome)


def findings_in(exc: BaseException) -> list[FindingFailure]:
    """FindingFailures in an exception, looking inside ExceptionGroups (several distinct bugs,
    or Hypothesis' FlakyFailure)."""
    if isinstance(exc, FindingFailure):
        return [exc]
    out = []
    for sub in getattr(exc, "exceptions", ()) or ():
        out += findings_in(sub)
    return out
