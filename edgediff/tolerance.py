"""Tolerances are an error model, not magic numbers.

For every element the bound is what a *correct* implementation in the
backend's arithmetic may be off by, derived from the classic forward error
bound of a sum of products (Higham, "Accuracy and Stability of Numerical
Algorithms", ch. 3): with unit roundoff ``u`` and ``k`` terms,

    |computed - exact| <= gamma_k * sum_i |a_i * b_i|,   gamma_k = k*u / (1 - k*u)

The magnitude ``sum |a_i b_i|`` comes from the golden op itself, applied to
``|x|`` and ``|w|``. Inputs rounded to a narrower format first (F16 kernels)
add ``2 * u_in`` per product. The result is rounded once more to the output
format. A floor of ``k * 2**-126`` per element absorbs flush-to-zero of
subnormal products. Elementwise and layout ops (clamp, view, permute) are
exact in any format that holds their inputs.

Findings report ``error / bound`` per element: below 1 is a rounding
difference a correct backend may make, far above 1 is a wrong value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11,
                 "bfloat16": 2.0 ** -8}
FLUSH_FLOOR = 2.0 ** -126


@dataclass(frozen=True)
class Arithmetic:
    """How a backend path computes: the format inputs are rounded to, accumulation, output."""
    inputs: str = "float32"
    accumulate: str = "float32"
    output: str = "float32"

    def u(self, which: str) -> float:
        fmt = getattr(self, which)
        if fmt not in UNIT_ROUNDOFF:
            raise ValueError(f"unknown number format {fmt!r} for {which}; known: {sorted(UNIT_ROUNDOFF)}")
        return UNIT_ROUNDOFF[fmt]

    def u_inputs(self, case_dtype: str = "float32") -> float:
        """Rounding of the case's inputs: none when the path's format holds them exactly."""
        if self.inputs == case_dtype or UNIT_ROUNDOFF[self.inputs] < UNIT_ROUNDOFF.get(case_dtype, 1):
            return 0.0
        return self.u("inputs")


FLOAT32 = Arithmetic()


def gamma(k, u: float):
    ku = np.asarray(k, dtype=np.float64) * u
    return np.where(ku < 0.5, ku / (1.0 - np.minimum(ku, 0.5)), np.inf)


def sum_of_products_bound(magnitude, expected, k, arith: Arithmetic, case_dtype="float32"):
    """Bound for results that are sums of ``k`` products (conv, matmul), plus an output rounding."""
    u_in = arith.u_inputs(case_dtype)
    rel = 2.0 * u_in + gamma(k + 1, arith.u("accumulate"))
    return rel * magnitude + arith.u("output") * np.abs(expected) + k * FLUSH_FLOOR


def exact_bound(expected, arith: Arithmetic, case_dtype="float32"):
    """Ops that only move or select values: exact up to rounding the inputs into the format."""
    u = max(arith.u_inputs(case_dtype), 0.0)
    return u * np.abs(expected)
