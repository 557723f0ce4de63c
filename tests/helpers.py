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
