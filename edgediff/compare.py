"""Compare an observed array with the golden one under a per-element bound.

``ErrorStatistics`` is the record kept for every comparison (after ExecuTorch's
``backends/test/suite`` record of the same name); its ``summary()`` is what an
assertion message and a finding's ISSUE.md say.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

MAX_LISTED = 5


@dataclass
class ErrorStatistics:
    shape: tuple
    total: int
    mismatches: int
    max_abs_error: float
    max_rel_error: float
    max_ulp: float
    pcc: float
    worst_ratio: float                  # max over elements of error / bound
    nan_mismatches: int = 0
    first_mismatches: list = field(default_factory=list)   # [{index, expected, observed, bound}]

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    def summary(self) -> str:
        lines = [f"{self.mismatches} of {self.total} elements outside the bound "
                 f"(worst error/bound = {self.worst_ratio:.3g}); max abs error {self.max_abs_error:.3g}, "
                 f"max rel error {self.max_rel_error:.3g}, max ULP (float32) {self.max_ulp:.3g}, "
                 f"PCC {self.pcc:.6f}"]
        if self.nan_mismatches:
            lines.append(f"{self.nan_mismatches} elements differ in NaN/Inf-ness")
        for m in self.first_mismatches:
            lines.append(f"  at {tuple(m['index'])}: expected {m['expected']!r}, observed "
                         f"{m['observed']!r}, allowed error {m['bound']:.3g}")
        return "\n".join(lines)


def ulp_distance(a, b) -> np.ndarray:
    """Distance in float32 units in the last place (ordered-integer view of the bits)."""
    def ordered(v):
        i = np.asarray(v, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, np.int64(-(2 ** 31)) - i, i)
    return np.abs(ordered(a) - ordered(b)).astype(np.float64)


def pcc(expected, observed) -> float:
    """Pearson correlation, as tt-metal's comp_pcc reports it (1.0 for two equal constants)."""
    e = np.asarray(expected, np.float64).ravel()
    o = np.asarray(observed, np.float64).ravel()
    finite = np.isfinite(e) & np.isfinite(o)
    e, o = e[finite], o[finite]
    if e.size == 0 or np.array_equal(e, o):
        return 1.0
    if e.std() == 0 or o.std() == 0:
        return 0.0
    return float(np.corrcoef(e, o)[0, 1])


def compare(expected, observed, bound) -> ErrorStatistics:
    """Element-wise check of ``|observed - expected| <= bound``; NaN must match NaN, Inf must match."""
    exp = np.asarray(expected, dtype=np.float64)
    obs = np.asarray(observed, dtype=np.float64)
    if exp.shape != obs.shape:
        raise ValueError(f"shape mismatch: expected {exp.shape}, observed {obs.shape}")
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), exp.shape)
    finite = np.isfinite(exp) & np.isfinite(obs)
    same_special = (np.isnan(exp) & np.isnan(obs)) | (np.isinf(exp) & (exp == obs))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(finite, np.abs(obs - exp), 0.0)
    bad = (finite & (err > bound)) | (~finite & ~same_special)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(finite & (exp != 0), err / np.abs(exp), 0.0)
        ratio = np.where(finite, np.where(bound > 0, err / bound, np.where(err > 0, np.inf, 0.0)),
                         np.where(same_special, 0.0, np.inf))
    ulps = np.where(finite, ulp_distance(exp, obs), 0.0)
    idx = np.argwhere(bad)[:MAX_LISTED]
    listed = [{"index": [int(i) for i in ix], "expected": float(exp[tuple(ix)]),
               "observed": float(obs[tuple(ix)]), "bound": float(bound[tuple(ix)])} for ix in idx]
    return ErrorStatistics(
        shape=tuple(exp.shape), total=int(exp.size), mismatches=int(bad.sum()),
        max_abs_error=float(err.max(initial=0.0)), max_rel_error=float(rel.max(initial=0.0)),
        max_ulp=float(ulps.max(initial=0.0)), pcc=pcc(exp, obs),
        worst_ratio=float(ratio.max(initial=0.0)),
        nan_mismatches=int((~finite & ~same_special).sum()), first_mismatches=listed)
