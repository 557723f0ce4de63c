"""Exact Python source for values pasted into generated torch code (models, repros).

Shared by the adapters that write a backend's model as the torch code a user would write
(``executorch_ggml``, ``cortex_m``): only plain numbers, tuples and NumPy arrays are ever
pasted, never ``repr`` of an arbitrary object.
"""
from __future__ import annotations

import numpy as np


def literal(v) -> str:
    """Python source for a parameter value: ints, floats (inf/nan spelled out), bools, None,
    and lists/tuples of those; anything else is refused."""
    if v is None or isinstance(v, (bool, np.bool_)):
        return repr(None if v is None else bool(v))
    if isinstance(v, (int, np.integer)):
        return repr(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if np.isnan(f):
            return "float('nan')"
        if np.isinf(f):
            return "float('inf')" if f > 0 else "-float('inf')"
        return repr(f)
    if isinstance(v, (list, tuple, np.ndarray)):
        items = [literal(x) for x in v]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise ValueError(f"parameter value {v!r} ({type(v).__name__}) is not a plain number or tuple")


def array_source(a, dtype="np.float32") -> str:
    """An exact NumPy literal of ``a``: each value in its shortest decimal form when that parses
    back to the same bits (through float64, as NumPy parses), else as ``float.fromhex``; inf
    and nan spelled out; reshaped to the array's shape."""
    kind = np.float64 if dtype == "np.float64" else np.float32
    flat = []
    for v in np.asarray(a).astype(kind).ravel():
        if np.isnan(v):
            flat.append("np.nan")
        elif np.isinf(v):
            flat.append("np.inf" if v > 0 else "-np.inf")
        else:
            text = str(v)
            exact = kind(float(text)).tobytes() == v.tobytes()
            flat.append(text if exact else f"float.fromhex({float(v).hex()!r})")
    return f"np.array([{', '.join(flat)}], dtype={dtype}).reshape({literal(tuple(np.shape(a)))})"
