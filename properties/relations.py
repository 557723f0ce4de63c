"""Metamorphic relations: properties of one adapter that need no golden output.

Each relation computes two things through the adapter that must agree; the bound is
twice the op's error model (each side may be off by one bound from the exact result).
A relation's outcome is a normal ``Outcome`` (its ``op`` is the relation name), so its
failures become findings like any other.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from hypothesis import strategies as st

import adapters
import reference
from edgediff.case import Case
from edgediff.compare import compare
from edgediff.runner import Outcome, run_case

from . import strategies as S
from .ops import OPS


@dataclass(frozen=True)
class Relation:
    name: str
    primary: str            # the op whose paths the relation is run over
    needs: tuple            # every op the adapter must have
    strategy: Callable      # -> SearchStrategy[Case] (case.op == primary)
    sides: Callable         # sides(adapter, path, case) -> (lhs, rhs, bound)


def _path_for(adapter, op, path):
    """The adapter's path for ``op`` matching ``path`` ("conv_2d/f32+mul_add" -> "conv_2d/f32")."""
    p = adapters.paths(adapter, op)
    base = path.partition("+")[0]
    return path if path in p else base if base in p else p[0]


def _call(adapter, op, path, case_like: Case, **params):
    use = _path_for(adapter, op, path)
    out = adapters.call(adapter, op, use, case_like.arrays_for_backend(), dict(case_like.params, **params))
    return np.asarray(out[0] if isinstance(out, tuple) else out, np.float64)


def depthwise_is_grouped_conv(adapter, path, case):
    lhs = _call(adapter, "depthwise_conv2d", path, case)
    rhs = _call(adapter, "conv2d", path, replace(case, op="conv2d"), groups=case.inputs["x"].shape[1])
    exp = OPS["depthwise_conv2d"].expected(case)
    arith = adapters.arithmetic(adapter, "depthwise_conv2d", _path_for(adapter, "depthwise_conv2d", path))
    return lhs, rhs, 2 * OPS["depthwise_conv2d"].bound(case, exp, arith)


def folded_bn_is_conv_then_bn(adapter, path, case):
    """conv(x, fold(w, b, bn)) == conv2d_batch_norm(x, w, b, bn)."""
    i, p = case.inputs, case.params
    conv_params = {k: v for k, v in p.items() if k != "eps"}
    wf, bf = reference.fold_batch_norm(i["w"], i.get("b"), i["running_mean"], i["running_var"],
                                       i.get("weight"), i.get("bias"), p["eps"])
    folded = Case("conv2d", {"x": i["x"], "w": wf.astype(np.float32), "b": bf.astype(np.float32)},
                  conv_params, case.layout)
    lhs = _call(adapter, "conv2d", path, folded)
    rhs = _call(adapter, "conv2d_batch_norm", path, case)
    exp = OPS["conv2d_batch_norm"].expected(case)
    arith = adapters.arithmetic(adapter, "conv2d", _path_for(adapter, "conv2d", path))
    bound = OPS["conv2d_batch_norm"].bound(case, exp, arith) + OPS["conv2d"].bound(folded, exp, arith)
    return lhs, rhs, 2 * bound


def permute_then_inverse_is_identity(adapter, path, case):
    dims = [d % case.inputs["x"].ndim for d in case.params["dims"]]
    once = _call(adapter, "permute", path, case).astype(np.float32)
    back = Case("permute", {"x": once}, {"dims": tuple(int(i) for i in np.argsort(dims))})
    return _call(adapter, "permute", path, back), case.inputs["x"].astype(np.float64), 0.0


def view_round_trip(adapter, path, case):
    once = _call(adapter, "view", path, case).astype(np.float32)
    back = Case("view", {"x": once}, {"shape": case.inputs["x"].shape})
    return _call(adapter, "view", path, back), case.inputs["x"].astype(np.float64), 0.0


RELATIONS = {r.name: r for r in [
    Relation("depthwise_is_grouped_conv", "depthwise_conv2d", ("depthwise_conv2d", "conv2d"),
             S.depthwise_conv2d_cases, depthwise_is_grouped_conv),
    Relation("folded_bn_is_conv_then_bn", "conv2d_batch_norm", ("conv2d", "conv2d_batch_norm"),
             S.conv2d_batch_norm_cases, folded_bn_is_conv_then_bn),
    Relation("permute_inverse_is_identity", "permute", ("permute",), S.permute_cases,
             permute_then_inverse_is_identity),
    Relation("view_round_trip", "view", ("view",), S.view_cases, view_round_trip),
]}


def run_relation(relation: Relation, case: Case, adapter, path: str) -> Outcome:
    """Both sides through the adapter; an Unsupported or failure on either side is reported
    the way run_case reports it."""
    probe = Outcome("pass", replace(case, op=relation.name), adapter.name, adapter.version, path)
    try:
        lhs, rhs, bound = relation.sides(adapter, path, case)
    except adapters.Unsupported as exc:
        probe.kind, probe.detail = "unsupported", str(exc)
        return probe
    except Exception:
        # let run_case classify crashes, hangs and backend errors the usual way
        out = run_case(case, adapter, path, OPS[case.op])
        out.case = replace(case, op=relation.name)
        if not out.failed:
            raise
        return out
    probe.expected, probe.observed = rhs, lhs
    if lhs.shape != rhs.shape:
        probe.kind, probe.detail = "shape", f"sides have shapes {lhs.shape} and {rhs.shape}"
        return probe
    probe.bound = np.broadcast_to(bound, rhs.shape)
    probe.stats = compare(rhs, lhs, probe.bound)
    if not probe.stats.ok:
        probe.kind = "mismatch"
    return probe
