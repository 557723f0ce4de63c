"""Planted-bug adapters: the yardstick for edgediff's bug-finding power (``edgediff power``).

Three families, each a module:

- ``torch_float``: PyTorch eager with one float bug per mutant (padding, stride, dilation,
  groups, depth multiplier order, kernel orientation, float16 accumulation, bias, clamp,
  mean, view, permute, batch norm, and bugs that only fire on rare conditions);
- ``litert_float``: the same kinds of bug wrapped around LiteRT's reference kernels;
- ``int8``: requantization bugs (rounding mode, shift, activation, zero point) judged bit
  for bit against ``reference.quant``.

Every mutant carries ``name``, ``bug`` (what is wrong), ``trigger`` (when it shows),
``base`` (the correct adapter it wraps) and ``mutated_ops``.
"""
from __future__ import annotations

import importlib

FAMILIES = ("torch_float", "litert_float", "int8")


def family_of(name: str) -> str:
    for fam in FAMILIES:
        if any(m.name == name for m in load_family(fam)):
            return fam
    raise KeyError(name)


def load_family(family: str) -> list:
    return list(importlib.import_module(f"benchmarks.mutants.{family}").MUTANTS)


def all_mutants() -> dict:
    """{family: [mutant, ...]} for the families whose base adapter imports here."""
    out = {}
    for fam in FAMILIES:
        try:
            out[fam] = load_family(fam)
        except ImportError:
            continue
    return out
