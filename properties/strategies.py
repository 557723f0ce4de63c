"""Composable Hypothesis strategies that draw only valid op configurations.

Each strategy draws sizes first and values last, and every choice shrinks
towards the simplest configuration: batch 1, one channel, 1x1 kernel, stride
and dilation 1, no padding, contiguous layout, small integers as values. A
shrunk failure is therefore small and readable.

Values come from named distributions (``VALUE_KINDS``) generated from a drawn
seed: per-element drawing would be slow for the tens of thousands of elements
a conv needs, and the repro stores the arrays anyway. ``small_int`` values
(integers in [-4, 4]) make every sum exact in float32, so a shrunk conv
failure is one a reader can check by hand.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from edgediff.case import LAYOUTS, Case

VALUE_KINDS = ("small_int", "normal", "uniform", "large", "signed_zeros")
SPECIAL_KINDS = ("with_nan_inf",)          # opt-in tier: --specials / EDGEDIFF_SPECIALS=1
# NaN is in clamp's default tier: PyTorch's clamp propagates it, and a kernel built from
# min/max instructions that drops it is a classic bug. (Inf stays in the --specials tier.)
CLAMP_KINDS = ("small_int", "normal", "large", "signed_zeros", "with_nan")
MAX_CHANNELS = 32


def make_values(kind: str, seed: int, shape) -> np.ndarray:
    """float32 array of ``shape`` from the named distribution (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    if kind == "small_int":
        v = rng.integers(-4, 5, size=shape)
    elif kind == "normal":
        v = rng.standard_normal(shape)
    elif kind == "uniform":
        v = rng.uniform(-1.0, 1.0, shape)
    elif kind == "large":
        v = rng.standard_normal(shape) * 2.0 ** rng.integers(8, 20, size=shape)
    elif kind == "signed_zeros":
        v = rng.choice([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, 0.5], size=shape)
    elif kind == "with_nan":
        v = np.where(rng.random(shape) < 0.2, np.nan, rng.standard_normal(shape) * 4)
    elif kind == "with_nan_inf":
        v = rng.standard_normal(shape)
        specials = rng.choice([np.nan, np.inf, -np.inf], size=shape)
        v = np.where(rng.random(shape) < 0.1, specials, v)
    else:
        raise ValueError(f"unknown value kind {kind!r}; known: {VALUE_KINDS + SPECIAL_KINDS + ('with_nan',)}")
    return np.asarray(v, dtype=np.float32)


@st.composite
def values(draw, shape, specials: bool = False, kinds=VALUE_KINDS):
    kinds = tuple(kinds) + (SPECIAL_KINDS if specials else ())
    kind = draw(st.sampled_from(kinds), label="values")
    seed = draw(st.integers(0, 2 ** 32 - 1), label="seed")
    return make_values(kind, seed, shape)


@st.composite
def variances(draw, c: int):
    """Non-negative running variances, including tiny ones next to eps."""
    scale = draw(st.sampled_from(["unit", "tiny", "wide"]), label="variance")
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    if scale == "unit":
        v = rng.uniform(0.25, 4.0, c)
    elif scale == "tiny":
        v = 10.0 ** rng.uniform(-12, -5, c)
    else:
        v = 10.0 ** rng.uniform(-8, 4, c)
    return v.astype(np.float32)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def same_structure(draw, case: Case, specials: bool = False):
    """``case`` with fresh input values: same op, shapes, params and layout. Slow backends
    (a lowering per structure) check several value sets per lowered program this way."""
    inputs = {}
    for name, a in case.inputs.items():
        if name == "running_var":
            inputs[name] = draw(variances(a.shape[0]), label=name)
        else:
            kinds = CLAMP_KINDS if case.op == "clamp" else VALUE_KINDS
            inputs[name] = draw(values(a.shape, specials, kinds=kinds), label=name)
    return Case(case.op, inputs, dict(case.params), case.layout, case.dtype)


# ---- parameter strategies -------------------------------------------------------------------

def pairs(lo: int, hi: int):
    """(h, w) pairs; shrinks to (lo, lo). Non-square only when drawn so."""
    return st.tuples(st.integers(lo, hi), st.integers(lo, hi))


def as_param(p):
    """(a, a) -> a, so shrunk cases read as PyTorch users write them."""
    return p[0] if p[0] == p[1] else p


@st.composite
def paddings(draw, eff_kernel):
    """int, symmetric (h, w) or asymmetric ((top, bottom), (left, right)); each side up to K_eff."""
    kh, kw = eff_kernel
    style = draw(st.sampled_from(["int", "pair", "asymmetric"]), label="padding style")
    if style == "int":
        p = draw(st.integers(0, min(kh, kw)))
        return p, (p, p, p, p)
    if style == "pair":
        ph, pw = draw(st.integers(0, kh)), draw(st.integers(0, kw))
        return (ph, pw), (ph, ph, pw, pw)
    t, b = draw(st.integers(0, kh)), draw(st.integers(0, kh))
    l, r = draw(st.integers(0, kw)), draw(st.integers(0, kw))
    return ((t, b), (l, r)), (t, b, l, r)


@st.composite
def conv_geometry(draw, max_extra: int = 10):
    """kernel, stride, dilation, padding and a spatial size giving an output of at least 1x1."""
    kh, kw = draw(pairs(1, 7), label="kernel")
    stride = draw(pairs(1, 4), label="stride")
    dilation = draw(pairs(1, 3), label="dilation")
    eff = ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)
    padding, (t, b, l, r) = draw(paddings(eff))
    # Half the time an axis gets no extra size: the output is then one pixel wide there
    # (1x1 outputs take GEMV-style fast paths) or the kernel is wider than the input.
    extra = st.one_of(st.just(0), st.integers(0, max_extra))
    h = max(1, eff[0] - t - b) + draw(extra, label="extra height")
    w = max(1, eff[1] - l - r) + draw(extra, label="extra width")
    return {"kernel": (kh, kw), "stride": as_param(stride), "dilation": as_param(dilation),
            "padding": padding, "spatial": (h, w)}


layouts = st.sampled_from(LAYOUTS)


@st.composite
def conv2d_cases(draw, specials: bool = False):
    n = draw(st.integers(1, 3), label="batch")
    c = draw(st.integers(1, MAX_CHANNELS), label="in channels")
    groups = draw(st.sampled_from(divisors(c)), label="groups")
    out_per_group = draw(st.integers(1, max(1, MAX_CHANNELS // groups)), label="out per group")
    g = draw(conv_geometry())
    kh, kw = g["kernel"]
    inputs = {"x": draw(values((n, c) + g["spatial"], specials)),
              "w": draw(values((groups * out_per_group, c // groups, kh, kw), specials))}
    if draw(st.booleans(), label="bias"):
        inputs["b"] = draw(values((groups * out_per_group,), specials))
    params = {"stride": g["stride"], "padding": g["padding"], "dilation": g["dilation"],
              "groups": groups}
    return Case("conv2d", inputs, params, draw(layouts))


@st.composite
def depthwise_conv2d_cases(draw, specials: bool = False):
    n = draw(st.integers(1, 3), label="batch")
    c = draw(st.integers(1, MAX_CHANNELS), label="channels")
    multiplier = draw(st.integers(1, 4), label="depth multiplier")
    g = draw(conv_geometry())
    kh, kw = g["kernel"]
    inputs = {"x": draw(values((n, c) + g["spatial"], specials)),
              "w": draw(values((c * multiplier, 1, kh, kw), specials))}
    if draw(st.booleans(), label="bias"):
        inputs["b"] = draw(values((c * multiplier,), specials))
    params = {"stride": g["stride"], "padding": g["padding"], "dilation": g["dilation"]}
    return Case("depthwise_conv2d", inputs, params, draw(layouts))


def shapes(min_rank=1, max_rank=5, max_side=6):
    return st.lists(st.integers(1, max_side), min_size=min_rank, max_size=max_rank).map(tuple)


def layout_shapes(max_side=6):
    """Any rank 1-5, but rank 4 (NCHW, where a channels_last layout can be drawn) half the
    time: layout bugs (a view or a reduction over a non-contiguous input) live there."""
    return st.one_of(st.tuples(*[st.integers(1, max_side)] * 4), shapes(1, 5, max_side))


def nchw_shapes():
    return st.tuples(st.integers(1, 3), st.integers(1, MAX_CHANNELS), st.integers(1, 12),
                     st.integers(1, 12))


bounds = st.one_of(st.none(), st.sampled_from([0.0, 6.0, -1.0, 1.0]),
                   st.floats(-8, 8, width=32, allow_subnormal=False))


@st.composite
def clamp_cases(draw, specials: bool = False):
    shape = draw(nchw_shapes())
    lo, hi = draw(bounds, label="min"), draw(bounds, label="max")
    if lo is None and hi is None:
        hi = 6.0
    x = draw(values(shape, specials, kinds=CLAMP_KINDS))
    return Case("clamp", {"x": x}, {"min": lo, "max": hi}, draw(layouts))


@st.composite
def dim_choices(draw, rank: int):
    """None, an int, or a tuple of distinct dims in any order, with negative spellings."""
    styles = ["none", "int", "tuple"] + (["spatial"] if rank == 4 else [])
    style = draw(st.sampled_from(styles), label="dim style")
    if style == "none":
        return None
    if style == "spatial":                      # global average pooling, as networks use it
        return draw(st.sampled_from([(2, 3), (-2, -1), (3, 2)]))
    def spell(d):
        return d - rank if draw(st.booleans(), label="negative dim") else d
    if style == "int":
        return spell(draw(st.integers(0, rank - 1)))
    subset = draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True))
    return tuple(spell(d) for d in subset)


@st.composite
def mean_cases(draw, specials: bool = False):
    shape = draw(layout_shapes(8))
    layout = draw(layouts) if len(shape) == 4 else "contiguous"
    return Case("mean", {"x": draw(values(shape, specials))},
                {"dim": draw(dim_choices(len(shape))), "keepdim": draw(st.booleans(), label="keepdim")},
                layout)


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1 and p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


@st.composite
def view_shapes(draw, size: int):
    """A shape with ``size`` elements (primes spread over 1-5 dims), maybe with one -1."""
    rank = draw(st.integers(1, 5), label="view rank")
    dims = [1] * rank
    for p in _prime_factors(size):
        dims[draw(st.integers(0, rank - 1))] *= p
    if draw(st.booleans(), label="use -1"):
        dims[draw(st.integers(0, rank - 1))] = -1
    return tuple(dims)


@st.composite
def view_cases(draw, specials: bool = False):
    shape = draw(layout_shapes(6))
    layout = draw(layouts) if len(shape) == 4 else "contiguous"
    return Case("view", {"x": draw(values(shape, specials))},
                {"shape": draw(view_shapes(math.prod(shape)))}, layout)


@st.composite
def permute_cases(draw, specials: bool = False):
    shape = draw(layout_shapes(6))
    rank = len(shape)
    dims = draw(st.permutations(range(rank)), label="dims")
    dims = tuple(d - rank if draw(st.booleans(), label="negative dim") else d for d in dims)
    layout = draw(layouts) if rank == 4 else "contiguous"
    return Case("permute", {"x": draw(values(shape, specials))}, {"dims": dims}, layout)


@st.composite
def batch_norm_cases(draw, specials: bool = False):
    shape = draw(st.one_of(nchw_shapes(), shapes(2, 3, 8)))
    c = shape[1]
    inputs = {"x": draw(values(shape, specials)),
              "running_mean": draw(values((c,), specials)),
              "running_var": draw(variances(c))}
    if draw(st.booleans(), label="weight"):
        inputs["weight"] = draw(values((c,), specials))
    if draw(st.booleans(), label="bias"):
        inputs["bias"] = draw(values((c,), specials))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]), label="eps")
    layout = draw(layouts) if len(shape) == 4 else "contiguous"
    return Case("batch_norm", inputs, {"eps": eps}, layout)


@st.composite
def conv2d_batch_norm_cases(draw, specials: bool = False):
    """A conv followed by BN on its output channels (the pattern BN-folding passes rewrite)."""
    conv = draw(conv2d_cases(specials))
    o = conv.inputs["w"].shape[0]
    inputs = dict(conv.inputs)
    inputs["running_mean"] = draw(values((o,), specials))
    inputs["running_var"] = draw(variances(o))
    if draw(st.booleans(), label="weight"):
        inputs["weight"] = draw(values((o,), specials))
    if draw(st.booleans(), label="bias"):
        inputs["bias"] = draw(values((o,), specials))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]), label="eps")
    return Case("conv2d_batch_norm", inputs, dict(conv.params, eps=eps), conv.layout)
