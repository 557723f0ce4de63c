"""The one table of ops. Each op is described once: golden function, strategy,
tolerance model and the parameter pattern used to group findings.

Adding an op means adding one ``OpSpec`` here (and the golden function in
``reference/``); every differential test is generated from this table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import reference
from edgediff.case import Case
from edgediff.tolerance import (Arithmetic, exact_bound, gamma, quantized_conv_bound,
                                sum_of_products_bound)
from edgediff.tolerance import (tensix_conv_batch_norm_bound, tensix_conv_bound,  # TT-NN device
                                tensix_exact_bound, tensix_mean_bound)

from . import strategies as S


@dataclass(frozen=True)
class OpSpec:
    name: str
    golden: Callable          # the reference function, called as golden(**inputs, **params)
    strategy: Callable        # strategy(specials=False) -> SearchStrategy[Case]
    bound: Callable           # bound(case, expected, arithmetic) -> per-element allowed error
    pattern: Callable         # pattern(case) -> tuple of features shared by one bug's examples

    def expected(self, case: Case) -> np.ndarray:
        return self.golden(**case.inputs, **case.params)


# ---- tolerance models --------------------------------------------------------------------------

def conv_bound(case: Case, expected, arith: Arithmetic):
    """Sum of k = Cg*KH*KW products plus bias; magnitude = golden op on |x|, |w|, |b|."""
    if getattr(arith, "tensix", False):   # TT-NN: block formats, math fidelity, bfloat16 Dst
        return tensix_conv_bound(OPS[case.op].golden, case.inputs, case.params, expected, arith,
                                 case.dtype, case.params.get("groups", case.inputs["x"].shape[1]))
    if getattr(arith, "quantization", None):          # int8 inside: quantization error model
        inp = case.inputs
        return quantized_conv_bound(OPS[case.op].golden, inp["x"], inp["w"], inp.get("b"),
                                    case.params, expected, arith.quantization)
    absolute = {k: np.abs(v) for k, v in case.inputs.items()}
    magnitude = OPS[case.op].golden(**absolute, **case.params)
    w = case.inputs["w"]
    k = w.shape[1] * w.shape[2] * w.shape[3]
    return sum_of_products_bound(magnitude, expected, k, arith, case.dtype)


def conv_batch_norm_bound(case: Case, expected, arith: Arithmetic):
    """The conv bound carried through BN's scale, plus BN's own roundings.

    A backend may fold BN into the weights first (rounding w*scale once more per term),
    so each product gets one extra rounding: 3 instead of 2 input-side roundings."""
    inp, p = case.inputs, case.params
    if getattr(arith, "tensix", False):
        return tensix_conv_batch_norm_bound(reference.conv2d, inp, p, expected, arith, case.dtype,
                                            p.get("groups", 1))
    if getattr(arith, "quantization", None):          # int8: BN folded into w and b, then
        return quantized_conv_bound(reference.conv2d, inp["x"], *fold_batch_norm(case),
                                    {k: v for k, v in p.items() if k != "eps"}, expected,
                                    arith.quantization)
    conv_params = {k: v for k, v in p.items() if k != "eps"}
    conv_inputs = {k: inp[k] for k in ("x", "w", "b") if k in inp}
    o = inp["w"].shape[0]
    scale = np.abs(inp.get("weight", np.ones(o))) / np.sqrt(inp["running_var"].astype(np.float64) + p["eps"])
    absolute = {k: np.abs(v) for k, v in conv_inputs.items()}
    magnitude = reference.conv2d(**absolute, **conv_params)
    k = inp["w"].shape[1] * inp["w"].shape[2] * inp["w"].shape[3]
    u_acc = arith.u("accumulate")
    bshape = (1, -1, 1, 1)
    terms = (magnitude + np.abs(inp["running_mean"]).reshape(bshape)) * scale.reshape(bshape)
    terms = terms + np.abs(inp.get("bias", np.zeros(o))).reshape(bshape)
    # A folding backend starts each accumulator at b' = (b - mean) * scale + bias (XNNPACK
    # does), so every addition rounds at |b'|'s magnitude: b' is one more term of the sum.
    conv_err = (2.0 * arith.u_inputs(case.dtype) + gamma(k + 3, u_acc)) * terms
    return conv_err + 8 * u_acc * terms + arith.u("output") * np.abs(expected) + k * 2.0 ** -126


def fold_batch_norm(case: Case):
    """(w, b) of the conv that equals conv2d_batch_norm: w * s and (b - mean) * s + bias with
    s = weight / sqrt(var + eps) (float64)."""
    inp = case.inputs
    o = inp["w"].shape[0]
    s = np.asarray(inp.get("weight", np.ones(o)), np.float64) / np.sqrt(
        inp["running_var"].astype(np.float64) + case.params["eps"])
    b = np.asarray(inp.get("b", np.zeros(o)), np.float64)
    folded_b = (b - inp["running_mean"]) * s + np.asarray(inp.get("bias", np.zeros(o)), np.float64)
    return inp["w"].astype(np.float64) * s.reshape(-1, 1, 1, 1), folded_b


def mean_bound(case: Case, expected, arith: Arithmetic):
    x = case.inputs["x"]
    if getattr(arith, "tensix", False):
        return tensix_mean_bound(reference.mean, x, case.params, expected, arith, case.dtype)
    magnitude = reference.mean(np.abs(x), **case.params)
    k = max(1, x.size // max(1, np.asarray(expected).size))
    u_in = arith.u_inputs(case.dtype)
    rel = u_in + gamma(k + 1, arith.u("accumulate"))
    return rel * magnitude + arith.u("output") * np.abs(expected)


def exact(case: Case, expected, arith: Arithmetic):
    if getattr(arith, "tensix", False):
        return tensix_exact_bound(case.op, OPS[case.op].golden, case.inputs, case.params,
                                  expected, arith, case.dtype)
    return exact_bound(expected, arith, case.dtype)


def batch_norm_bound(case: Case, expected, arith: Arithmetic):
    """y = x*scale + shift, a handful of roundings on |x*scale| + |mean*scale| + |bias|."""
    inp = case.inputs
    c = inp["x"].shape[1]
    bshape = (1, c) + (1,) * (inp["x"].ndim - 2)
    scale = np.abs(inp.get("weight", np.ones(c))) / np.sqrt(inp["running_var"].astype(np.float64)
                                                           + case.params["eps"])
    scale = scale.reshape(bshape)
    terms = (np.abs(inp["x"]) + np.abs(inp["running_mean"]).reshape(bshape)) * scale
    terms = terms + np.abs(inp.get("bias", np.zeros(c))).reshape(bshape)
    u = arith.u("accumulate") + 2 * arith.u_inputs(case.dtype)
    return 8 * u * terms + arith.u("output") * np.abs(expected)


# ---- grouping patterns -------------------------------------------------------------------------

# Feature values that a shrunk example falls back to whether or not the bug needs them (the
# shrinker prefers the first layout and groups=1). `edgediff baseline` leaves them out of the
# entries it writes, so a baselined bug still matches when it shows up channels_last or grouped.
SHRINK_DEFAULTS = ("contiguous", "groups=1")


def _pair(v):
    return (v, v) if np.ndim(v) == 0 else tuple(v)


def conv_pattern(case: Case) -> tuple:
    p = case.params
    w, x = case.inputs["w"], case.inputs["x"]
    # a graph node's params may leave out the defaults (single_op_case of a graph finding)
    groups = p.get("groups", 1 if case.op in ("conv2d", "conv2d_batch_norm") else x.shape[1])
    feats = []
    feats.append("depthwise" if w.shape[1] == 1 and groups == x.shape[1] and groups > 1
                 else "groups=1" if groups == 1 else "grouped")
    if w.shape[0] > x.shape[1] and w.shape[1] == 1:
        feats.append("multiplier>1")
    if any(s > 1 for s in _pair(p.get("stride", 1))):
        feats.append("strided")
    if any(d > 1 for d in _pair(p.get("dilation", 1))):
        feats.append("dilated")
    pad = p.get("padding", 0)
    if np.ndim(pad) == 2 and (pad[0][0] != pad[0][1] or pad[1][0] != pad[1][1]):
        feats.append("asymmetric padding")
    elif np.any(np.asarray(pad) != 0):
        feats.append("padded")
    if "b" in case.inputs:
        feats.append("bias")
    feats.append(case.layout)
    return tuple(feats)


def layout_pattern(case: Case) -> tuple:
    return (f"rank{case.inputs['x'].ndim}", case.layout)


def clamp_pattern(case: Case) -> tuple:
    lo, hi = case.params["min"], case.params["max"]
    kind = ("min only" if hi is None else "max only" if lo is None
            else "min>max" if lo > hi else "min<=max")
    nan = ("NaN input",) if np.isnan(case.inputs["x"]).any() else ()
    return (kind,) + nan + (case.layout,)


def mean_pattern(case: Case) -> tuple:
    x = case.inputs["x"]
    d = case.params["dim"]
    dims = "all" if d is None else tuple(sorted(di % x.ndim for di in ((d,) if np.ndim(d) == 0 else d)))
    return (f"rank{x.ndim}", f"dims={dims}", f"keepdim={case.params['keepdim']}", case.layout)


OPS: dict[str, OpSpec] = {spec.name: spec for spec in [
    OpSpec("conv2d", reference.conv2d, S.conv2d_cases, conv_bound, conv_pattern),
    OpSpec("depthwise_conv2d", reference.depthwise_conv2d, S.depthwise_conv2d_cases, conv_bound,
           conv_pattern),
    OpSpec("clamp", reference.clamp, S.clamp_cases, exact, clamp_pattern),
    OpSpec("mean", reference.mean, S.mean_cases, mean_bound, mean_pattern),
    OpSpec("view", reference.view, S.view_cases, exact, layout_pattern),
    OpSpec("permute", reference.permute, S.permute_cases, exact, layout_pattern),
    OpSpec("batch_norm", reference.batch_norm, S.batch_norm_cases, batch_norm_bound, layout_pattern),
    OpSpec("conv2d_batch_norm", reference.conv2d_batch_norm, S.conv2d_batch_norm_cases,
           conv_batch_norm_bound, conv_pattern),
]}


def op_names() -> list[str]:
    return list(OPS)
