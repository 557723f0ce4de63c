"""Assertions for edgediff's own tests, with messages that say exactly what differed."""
from __future__ import annotations

import numpy as np


def assert_close_relative(actual, desired, magnitude, rtol, what=""):
    """|actual - desired| <= rtol * magnitude per element (magnitude: sum of |terms|)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, f"{what}: shape {actual.shape} != {desired.shape}"
    both_nan = np.isnan(actual) & np.isnan(desired)
    err = np.where(both_nan, 0.0, np.abs(actual - desired))
    allowed = rtol * np.asarray(magnitude, np.float64) + 1e-300
    bad = ~(err <= allowed)
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements differ beyond {rtol:g} x magnitude; "
            f"first at {i}: {actual[i]!r} vs {desired[i]!r} (allowed {allowed[i]:.3g})")


def assert_raises_naming(fn, parameter: str):
    """fn() raises ValueError whose message names ``parameter``."""
    try:
        fn()
    except ValueError as exc:
        assert parameter in str(exc), f"ValueError message {str(exc)!r} does not name {parameter!r}"
        return str(exc)
    raise AssertionError(f"expected ValueError naming {parameter!r}, nothing was raised")


_TORCH_WORKER = None


def torch_in_worker(op: str, case):
    """PyTorch's answer for ``case``, computed in the ``torch`` adapter's worker process.

    PyTorch 2.13.0 segfaults on some channels_last depthwise convs (README, "What edgediff
    found"); in-process that would kill the test run. A worker death here rejects the example
    (``hypothesis.reject``): it is that known PyTorch crash, which the property suite reports
    as a finding, not a property of the case being checked."""
    global _TORCH_WORKER
    from hypothesis import reject

    import adapters
    from edgediff.isolation import isolate
    from edgediff.runner import WorkerDied
    from properties.ops import OPS
    if _TORCH_WORKER is None:
        _TORCH_WORKER = isolate(adapters.load("torch"), "torch", OPS)
    try:
        return getattr(_TORCH_WORKER, op)(**case.arrays_for_backend(), **case.params)
    except WorkerDied:
        reject()
