"""ggml (0.15.3, through ggml-python 0.0.45's ctypes binding of the C API): the built-in
adapter named ``ggml``.

Every number comes from a ggml compute graph run by the CPU backend with one thread
(``ggml_graph_compute_with_ctx(ctx, graph, 1)``); NumPy only moves bytes into the input
tensors and out of the result tensor. One call = one ``ggml_init`` context, freed at the end.

Dimension order is reversed: ggml's ne0 is NumPy's last axis, so an NCHW ``x`` is a tensor
with ne = (W, H, C, N) and an OIHW kernel has ne = (KW, KH, I, O). In ggml's conv calls
index 0 (s0, p0, d0) is the W axis and index 1 the H axis; padding is one value per axis,
applied on both sides.

Paths: one per ggml function that computes the op, and one per kernel type it takes.

- conv2d, depthwise_conv2d, conv2d_batch_norm (the conv, then ``+mul_add`` batch norm, in
  one graph); a conv bias is a broadcast ``ggml_add`` after the conv:
    ``conv_2d/{f32,f16}``         ggml_conv_2d: ggml_im2col in the kernel's type, then
                                  ggml_mul_mat (no groups argument: groups must be 1)
    ``conv_2d_direct/{f32,f16}``  ggml_conv_2d_direct (GGML_OP_CONV_2D): im2col tiles in the
                                  kernel's type in a 16 MB work buffer, then a GEMM
    ``conv_2d_dw/{f32,f16}``      ggml_conv_2d_dw: ggml_im2col to F16 (whatever the kernel
                                  type), then ggml_mul_mat per channel (depthwise only)
    ``conv_2d_dw_direct/{f32,f16}`` ggml_conv_2d_dw_direct (GGML_OP_CONV_2D_DW): direct loops
  Depthwise with a depth multiplier M > 1 (weight (C*M, 1, KH, KW)): ggml's depthwise calls
  need as many kernels as input channels, so each input channel is first repeated M times in
  the graph (ggml_reshape_4d + ggml_repeat_4d: channel c*M + m reads input channel c, which
  is the output channel grouping PyTorch uses), then the depthwise conv runs on C*M channels.
- clamp: ``clamp``            ggml_clamp (in place: the result is a view of its input);
                              min/max None become -inf/+inf; min > max is passed as given.
- mean: ``mean``              ggml_mean reduces ne0 only: ggml_permute moves the reduced
                              dims innermost, ggml_cont, ggml_reshape_2d merges them into ne0,
                              then ggml_mean. Rank-5 inputs merge adjacent dims with the same
                              role (all reduced or all kept) into one ggml dim first.
        ``pool_2d_avg``       ggml_pool_2d(GGML_OP_POOL_AVG) with kernel = stride = (W, H):
                              the mean over H and W of a 4-D input (dim (2, 3) only).
- view: ``reshape``           ggml_reshape_{1,2,3,4}d.
- permute: ``permute_cont``   ggml_permute + ggml_cont.
- batch_norm: ``mul_add``     (x - mean) / sqrt(var + eps) * weight + bias with ggml_sub,
                              ggml_add, ggml_sqrt, ggml_div, ggml_mul broadcasting (C) vectors.

Layouts: a channels_last (NHWC-strided) ``x`` reaches ggml as its NHWC bytes where the ggml
kernel reads a channels-most-contiguous tensor: ``conv_2d_direct`` (reads its input through
nb strides) gets a permuted (CWHN) view, ``conv_2d_dw_direct`` runs its CWHN kernel (input
and kernel channels-most-contiguous, as test-backend-ops builds them; bias and batch norm
then work on the CWHN result in memory order). Every other path gets a contiguous copy:
ggml_im2col needs W-contiguous rows (it asserts nb10 == sizeof(float)).

Unsupported, decided before calling ggml: asymmetric padding (one pad per axis, both
sides), groups != 1 on conv_2d paths, not depthwise on conv_2d_dw paths, tensors of more
than 4 dims (GGML_MAX_DIMS), pool_2d_avg over anything but dims (2, 3) of a 4-D input, and
on ``*/f16`` paths values that float16 cannot hold (|v| > 65504 would be stored as inf: a
property of the format the user chose, not of ggml's kernels).
Anything ggml accepts and then aborts on (GGML_ASSERT) is left to ggml: the adapter is
``isolated``, so an abort kills the worker and becomes a crash finding.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

import adapters
from edgediff.tolerance import FLOAT32, Arithmetic

Unsupported = adapters.Unsupported

# Which ggml: ggml-python's bundled build (this module as imported), or a build of a source
# checkout (``from_checkout``, which loads a second copy of this module with ``_CHECKOUT`` set
# before its code runs, so every function below calls that build instead).
_CHECKOUT = globals().get("_CHECKOUT")
if _CHECKOUT is None:
    try:
        import ggml
        _IMPORT_ERROR = None
    except Exception as exc:  # ImportError, or the shared library failing to load
        ggml = None
        _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    name = "ggml"
else:
    from adapters import _ggml_source
    try:
        ggml = _ggml_source.load(_CHECKOUT or None)
        _IMPORT_ERROR = None
    except _ggml_source.sb.BuildUnavailable as exc:
        ggml = None
        _IMPORT_ERROR = str(exc)
    name = f"ggml@{ggml.checkout_version}" if ggml is not None else "ggml@"

pip_package = "ggml-python"            # for --backend ggml==VERSION (builds ggml from source)


def _version() -> str:
    if ggml is None:
        return "not installed"
    if _CHECKOUT is not None:
        return f"{ggml.checkout_version} (built from source; ggml_version() {ggml.ggml_version().decode()})"
    try:
        from importlib.metadata import version as dist_version
        binding = f" (ggml-python {dist_version('ggml-python')})"
    except Exception:
        binding = ""
    return ggml.ggml_version().decode() + binding


version = _version()
isolated = True                              # a GGML_ASSERT abort() kills the process
worker_env = {"GGML_NO_BACKTRACE": "1"}      # one stderr line instead of a gdb backtrace
timeout = 60.0
# A checkout build (OpenMP off, nothing computed before a fork) serves from forked children: a
# GGML_ASSERT then costs a fork, not a new interpreter and binding. Its worker reuses the
# library this process located (no second digest of the tree).
fork_server = _CHECKOUT is not None and ggml is not None
if fork_server:
    worker_env = dict(worker_env, EDGEDIFF_GGML_LIB=str(ggml.lib._name),
                      EDGEDIFF_GGML_LIB_FOR=str(_CHECKOUT))

_REQUIRED = ("ggml_conv_2d", "ggml_conv_2d_direct", "ggml_conv_2d_dw", "ggml_conv_2d_dw_direct",
             "ggml_im2col", "ggml_pool_2d", "ggml_clamp", "ggml_mean", "ggml_repeat_4d",
             "ggml_graph_compute_with_ctx", "ggml_fp32_to_fp16_row")


def unavailable_reason():
    if ggml is None and _CHECKOUT is not None:
        return f"ggml from source: {_IMPORT_ERROR}"
    if ggml is None:
        return f"the ggml package is not importable (pip install ggml-python==0.0.45): {_IMPORT_ERROR}"
    missing = [f for f in _REQUIRED if not hasattr(ggml.lib, f)]
    if missing:
        return f"this ggml build ({version}) lacks {', '.join(missing)}"
    return None


_KERNELS = ("f32", "f16")
_CONV = tuple(f"{fn}/{k}" for fn in ("conv_2d", "conv_2d_direct") for k in _KERNELS)
_DEPTHWISE = tuple(f"{fn}/{k}" for fn in ("conv_2d_dw", "conv_2d_dw_direct") for k in _KERNELS)
paths = {
    "conv2d": _CONV + _DEPTHWISE,
    "depthwise_conv2d": _DEPTHWISE,
    "clamp": ("clamp",),
    "mean": ("mean", "pool_2d_avg"),
    "view": ("reshape",),
    "permute": ("permute_cont",),
    "batch_norm": ("mul_add",),
    "conv2d_batch_norm": tuple(f"{p}+mul_add" for p in _CONV + _DEPTHWISE),
}


# ==== BEGIN GGML SECTION ======================================================================
# How ggml computes each op. This section uses only ctypes, math, NumPy and ggml (and raises
# ``Unsupported``), and is pasted verbatim into every finding's standalone repro.py.

CONTEXT_OVERHEAD = 16 << 20      # tensor/graph objects and alignment, bytes
CONV_2D_WORK = 16 << 20          # GGML_IM2COL_WORK_SIZE: ggml_conv_2d_direct's work buffer


class Graph:
    """One ggml context for one computation: ``with Graph(data_bytes) as g:``.

    The context is sized from the bytes the graph's tensors need (inputs, intermediates such
    as im2col, outputs), three times over, plus fixed overheads, and freed on exit."""

    def __init__(self, data_bytes):
        mem = CONTEXT_OVERHEAD + CONV_2D_WORK + 3 * int(data_bytes) + ggml.ggml_graph_overhead()
        self.ctx = ggml.ggml_init(ggml.ggml_init_params(mem_size=mem, mem_buffer=None, no_alloc=False))
        if not self.ctx:
            raise MemoryError(f"ggml_init could not allocate a {mem}-byte context")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        ggml.ggml_free(self.ctx)
        self.ctx = None

    def tensor(self, a, kind="f32"):
        """A new tensor holding NumPy array ``a`` (ne = a.shape reversed), as F32 or F16.

        F16 tensors are filled by ggml's own conversion (ggml_fp32_to_fp16_row)."""
        a = np.ascontiguousarray(a, dtype=np.float32)    # channels_last copies become contiguous
        if a.ndim > 4:
            raise Unsupported(f"ggml tensors have at most 4 dimensions (GGML_MAX_DIMS); got shape {a.shape}")
        ne = list(reversed(a.shape)) or [1]
        gtype = ggml.GGML_TYPE_F16 if kind == "f16" else ggml.GGML_TYPE_F32
        t = ggml.ggml_new_tensor(self.ctx, gtype, len(ne), (ctypes.c_int64 * len(ne))(*ne))
        if a.size:
            if gtype == ggml.GGML_TYPE_F32:
                ctypes.memmove(ggml.ggml_get_data(t), a.ctypes.data, a.nbytes)
            else:
                ggml.ggml_fp32_to_fp16_row(a.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                           ctypes.cast(ggml.ggml_get_data(t), ctypes.POINTER(ggml.ggml_fp16_t)),
                                           a.size)
        return t

    def compute(self, out, shape):
        """Build the graph ending in ``out``, run it with one thread, read ``out`` as ``shape``.

        Returns (array, facts); facts name the graph's nodes in execution order."""
        graph = ggml.ggml_new_graph(self.ctx)
        ggml.ggml_build_forward_expand(graph, out)
        status = ggml.ggml_graph_compute_with_ctx(self.ctx, graph, 1)
        if status != ggml.GGML_STATUS_SUCCESS:
            raise RuntimeError(f"ggml_graph_compute_with_ctx returned status {status}")
        nodes = [ggml.ggml_op_desc(ggml.ggml_graph_node(graph, i)).decode()
                 for i in range(ggml.ggml_graph_n_nodes(graph))]
        return read(out, shape), {"ggml_graph": " -> ".join(nodes)}


def read(t, shape):
    """The values of tensor ``t`` as a float32 NumPy array of ``shape``.

    Read through t's own ne and nb (results can be views with permuted strides); the
    package's utils.to_numpy would drop size-1 dims. When ggml's ne is not ``shape`` reversed,
    the array keeps ggml's 4-D shape, so the difference shows as a shape finding."""
    c = t.contents
    ne, nb = [int(v) for v in c.ne[:4]], [int(v) for v in c.nb[:4]]
    dtypes = {ggml.GGML_TYPE_F32: np.float32, ggml.GGML_TYPE_F16: np.float16}
    if c.type not in dtypes:
        raise TypeError(f"result tensor has ggml type {ggml.ggml_type_name(c.type).decode()}, expected f32 or f16")
    dtype = np.dtype(dtypes[c.type])
    if not c.data or any(s % dtype.itemsize for s in nb):
        raise ValueError(f"result tensor has no data or strides {nb} not multiples of {dtype.itemsize}")
    extent = sum((n - 1) * s for n, s in zip(ne, nb)) + dtype.itemsize
    buffer = (ctypes.c_char * extent).from_address(c.data)
    a = np.ndarray(tuple(reversed(ne)), dtype, buffer=buffer, strides=tuple(reversed(nb)))
    a = a.astype(np.float32)                              # a copy: the context is freed next
    if ne == list(reversed(shape)) + [1] * (4 - len(shape)):
        return a.reshape(shape)
    return a


def pair(v):
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


def is_channels_last(x):
    """A 4-D array with NHWC strides (how edgediff hands over a channels_last input)."""
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(0, 2, 3, 1).flags.c_contiguous


def ggml_axes(dims, rank):
    """ggml_permute's arguments for NumPy's ``transpose(dims)`` of a rank-``rank`` tensor.

    ggml_permute(a, a0, a1, a2, a3) sends a's dim i to position a_i; NumPy axis k is ggml
    dim rank-1-k; ggml dims past the rank (size 1) stay where they are."""
    axes = list(range(4))
    for j, d in enumerate(dims):
        axes[rank - 1 - d] = rank - 1 - j
    return axes


# ---- conv2d, depthwise_conv2d ----------------------------------------------------------------

def conv_params(fn, stride, padding, dilation):
    """(s0, s1, p0, p1, d0, d1) for ggml: index 0 is the W axis, 1 the H axis."""
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    if np.ndim(padding) == 2:
        (top, bottom), (left, right) = ((int(a), int(b)) for a, b in padding)
        if top != bottom or left != right:
            raise Unsupported(f"ggml_{fn} has no asymmetric padding (one pad per axis, applied on both "
                              f"sides); got top/bottom {top}/{bottom}, left/right {left}/{right}")
        ph, pw = top, left
    else:
        ph, pw = pair(padding)
    return sw, sh, pw, ph, dw, dh


def conv_bytes(x, w, stride, padding, dilation):
    """Bytes of the tensors a conv graph makes: input (repeated), im2col, outputs."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    pads = np.asarray(padding).reshape(-1)
    pad = int(pads.max()) if pads.size else 0
    oh = max(1, (h + 2 * pad - dh * (kh - 1) - 1) // sh + 1)
    ow = max(1, (wd + 2 * pad - dw * (kw - 1) - 1) // sw + 1)
    mult = max(1, o // c)
    im2col = n * oh * ow * max(o, c) * cg * kh * kw * 4
    return 2 * x.nbytes * mult + w.nbytes + im2col + 12 * n * o * oh * ow * 4


class Conv:
    """A conv's result in graph ``g``: tensor ``t`` plus its memory order.

    ``cwhn`` False: t has ne (OW, OH, OC, N), contiguous. True (conv_2d_dw_direct's channels
    kernel): t is the same memory seen in memory order, ne (OC, OW, OH, N), so per-channel
    vectors broadcast along ne0 and ggml's binary ops get the contiguous rows they assert."""

    def __init__(self, g, t, cwhn):
        self.g, self.t, self.cwhn = g, t, cwhn

    def channel_vector(self, v):
        """A per-channel (C,) array as a tensor broadcasting over t."""
        v = np.asarray(v, dtype=np.float32)
        return self.g.tensor(v.reshape((1, 1, 1, -1) if self.cwhn else (1, -1, 1, 1)))

    def nchw(self):
        """The result with ne (OW, OH, OC, N), the NCHW order edgediff reads."""
        return ggml.ggml_permute(self.g.ctx, self.t, 2, 0, 1, 3) if self.cwhn else self.t


def check_float16_range(fn, arrays):
    """An F16 path stores these arrays as float16: values beyond its largest finite number
    (65504) would become inf before ggml computes anything."""
    for label, a in arrays.items():
        big = np.abs(a[np.isfinite(a)]).max(initial=0.0)
        if big >= 65520.0:                        # rounds to inf in float16 (65504 is the largest)
            raise Unsupported(f"ggml_{fn} with an F16 kernel stores {label} as float16, whose largest "
                              f"finite value is 65504; |{label}| reaches {big:.6g} and would become inf "
                              f"(use the f32 path or rescale)")


def conv_graph(g, path, x, w, b, stride, padding, dilation, groups):
    """Build ``path``'s conv of x (N, C, H, W) with w (O, C/groups, KH, KW) in graph g."""
    fn, kind = path.split("/")
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    params = conv_params(fn, stride, padding, dilation)
    if kind == "f16":       # the kernel is F16; im2col (or the direct tiles) round x to F16 too
        check_float16_range(fn, {"w": w} if fn == "conv_2d_dw_direct" else {"w": w, "x": x})
    ctx = g.ctx
    if fn in ("conv_2d", "conv_2d_direct"):
        if int(groups) != 1:
            raise Unsupported(f"ggml_{fn} has no groups argument; groups={groups} needs groups=1")
        kernel = g.tensor(w, kind)                               # ne (KW, KH, C, O)
        if fn == "conv_2d_direct" and is_channels_last(x):
            # GGML_OP_CONV_2D reads its input through nb strides: hand it the NHWC bytes
            # (ne (C, W, H, N)) permuted to ne (W, H, C, N).
            data = ggml.ggml_permute(ctx, g.tensor(x.transpose(0, 2, 3, 1)), 2, 0, 1, 3)
        else:
            data = g.tensor(x)                                   # ne (W, H, C, N)
        call = ggml.ggml_conv_2d if fn == "conv_2d" else ggml.ggml_conv_2d_direct
        out = Conv(g, call(ctx, kernel, data, *params), False)   # ne (OW, OH, O, N)
    else:
        if int(groups) != c or cg != 1:
            raise Unsupported(f"ggml_{fn} is depthwise only: groups must equal the {c} input channels "
                              f"with one input channel per group; got groups={groups}, weight {w.shape}")
        mult = o // c
        cwhn = fn == "conv_2d_dw_direct" and is_channels_last(x)
        if cwhn:
            # Channels-most-contiguous input and kernel, permuted so ne reads (W, H, C, N) and
            # (KW, KH, 1, O): ggml_conv_2d_dw_direct then runs its CWHN kernel.
            data = g.tensor(x.transpose(0, 2, 3, 1))                   # ne (C, W, H, N)
            if mult > 1:                                               # channel c -> c*M .. c*M+M-1
                data = ggml.ggml_reshape_4d(ctx, data, 1, c, wd * h, n)
                data = ggml.ggml_repeat_4d(ctx, data, mult, c, wd * h, n)
                data = ggml.ggml_reshape_4d(ctx, data, o, wd, h, n)
            data = ggml.ggml_permute(ctx, data, 2, 0, 1, 3)            # ne (W, H, O, N)
            kernel = g.tensor(w.transpose(2, 3, 1, 0), kind)           # ne (O, 1, KW, KH)
            kernel = ggml.ggml_permute(ctx, kernel, 3, 2, 0, 1)        # ne (KW, KH, 1, O)
        else:
            data = g.tensor(x)                                         # ne (W, H, C, N)
            if mult > 1:
                data = ggml.ggml_reshape_4d(ctx, data, wd * h, 1, c, n)
                data = ggml.ggml_repeat_4d(ctx, data, wd * h, mult, c, n)
                data = ggml.ggml_reshape_4d(ctx, data, wd, h, o, n)
            kernel = g.tensor(w, kind)                                 # ne (KW, KH, 1, O)
        call = ggml.ggml_conv_2d_dw if fn == "conv_2d_dw" else ggml.ggml_conv_2d_dw_direct
        y = call(ctx, kernel, data, *params)                           # ne (OW, OH, O, N)
        out = Conv(g, ggml.ggml_permute(ctx, y, 1, 2, 0, 3) if cwhn else y, cwhn)
    if b is not None:
        out.t = ggml.ggml_add(ctx, out.t, out.channel_vector(b))
    return out


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, path="conv_2d/f32"):
    with Graph(conv_bytes(x, w, stride, padding, dilation)) as g:
        out = conv_graph(g, path, x, w, b, stride, padding, dilation, groups)
        return finish_conv(g, out, path)


def depthwise_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, path="conv_2d_dw/f32"):
    return conv2d(x, w, b, stride, padding, dilation, x.shape[1], path)


def finish_conv(g, out, path):
    y = out.nchw()
    ne = y.contents.ne
    result, facts = g.compute(y, (ne[3], ne[2], ne[1], ne[0]))
    if out.cwhn:
        facts["ggml_layout"] = "CWHN (channels-most-contiguous input and kernel)"
    return result, facts


# ---- batch_norm, conv2d_batch_norm -----------------------------------------------------------

def batch_norm_graph(g, t, vector, running_mean, running_var, weight, bias, eps):
    """(t - mean) / sqrt(var + eps) * weight + bias; ``vector`` makes a broadcasting (C,) tensor."""
    ctx = g.ctx
    eps_t = g.tensor(np.array([eps], dtype=np.float32))                     # ne (1), broadcast
    std = ggml.ggml_sqrt(ctx, ggml.ggml_add(ctx, vector(running_var), eps_t))
    y = ggml.ggml_div(ctx, ggml.ggml_sub(ctx, t, vector(running_mean)), std)
    if weight is not None:
        y = ggml.ggml_mul(ctx, y, vector(weight))
    if bias is not None:
        y = ggml.ggml_add(ctx, y, vector(bias))
    return y


def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5, path="mul_add"):
    x = np.asarray(x)
    if x.ndim > 4:
        raise Unsupported(f"ggml tensors have at most 4 dimensions (GGML_MAX_DIMS); got shape {x.shape}")
    bshape = (1, -1) + (1,) * (x.ndim - 2)                        # (C,) along NumPy axis 1
    with Graph(8 * x.nbytes) as g:
        def vector(v):
            return g.tensor(np.asarray(v, dtype=np.float32).reshape(bshape))
        y = batch_norm_graph(g, g.tensor(x), vector, running_mean, running_var, weight, bias, eps)
        return g.compute(y, x.shape)


def conv2d_batch_norm(x, w, running_mean, running_var, b=None, weight=None, bias=None, stride=1,
                      padding=0, dilation=1, groups=1, eps=1e-5, path="conv_2d/f32+mul_add"):
    conv_path, _, bn_path = path.partition("+")
    if bn_path != "mul_add":
        raise ValueError(f"unknown batch norm path {bn_path!r} in {path!r}")
    with Graph(conv_bytes(x, w, stride, padding, dilation)) as g:
        out = conv_graph(g, conv_path, x, w, b, stride, padding, dilation, groups)
        out.t = batch_norm_graph(g, out.t, out.channel_vector, running_mean, running_var, weight, bias, eps)
        return finish_conv(g, out, conv_path)


# ---- clamp -----------------------------------------------------------------------------------

def clamp(x, min=None, max=None, path="clamp"):  # noqa: A002 - PyTorch's parameter names
    lo = -math.inf if min is None else float(min)
    hi = math.inf if max is None else float(max)
    x = np.asarray(x)
    with Graph(2 * x.nbytes) as g:
        # ggml_clamp works in place: its result is a view of x's tensor, which the graph clamps.
        return g.compute(ggml.ggml_clamp(g.ctx, g.tensor(x), lo, hi), x.shape)


# ---- mean ------------------------------------------------------------------------------------

def reduced_axes(dim, rank):
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return tuple(range(rank))
    dims = (dim,) if np.ndim(dim) == 0 else tuple(dim)
    return tuple(sorted(int(d) % rank for d in dims))


def mean(x, dim=None, keepdim=False, path="mean"):
    x = np.ascontiguousarray(x, dtype=np.float32)
    axes = reduced_axes(dim, x.ndim)
    out_shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape) if keepdim or i not in axes)
    with Graph(4 * x.nbytes) as g:
        if path == "pool_2d_avg":
            if x.ndim != 4 or axes != (2, 3):
                raise Unsupported(f"ggml_pool_2d averages over W and H (ne0, ne1) only: it computes mean over "
                                  f"dims (2, 3) of a 4-D input, not dim={dim!r} of a rank-{x.ndim} input")
            n, c, h, w = x.shape
            y = ggml.ggml_pool_2d(g.ctx, g.tensor(x), ggml.GGML_OP_POOL_AVG, w, h, w, h, 0.0, 0.0)
            result, facts = g.compute(y, (n, c, 1, 1))               # ne (1, 1, C, N)
        elif path == "mean":
            shape, reduced = x.shape, set(axes)
            if len(shape) > 4:                # merge neighbours that are all reduced or all kept
                merged = []
                for i, s in enumerate(shape):
                    if merged and merged[-1][1] == (i in reduced):
                        merged[-1][0] *= s
                    else:
                        merged.append([s, i in reduced])
                if len(merged) > 4:
                    raise Unsupported(f"ggml tensors have at most 4 dimensions (GGML_MAX_DIMS); mean over "
                                      f"dim={dim!r} of shape {x.shape} alternates reduced and kept dims")
                shape = tuple(s for s, _ in merged)
                reduced = {i for i, (_, r) in enumerate(merged) if r}
            rank = len(shape)
            kept = [i for i in range(rank) if i not in reduced]
            order = kept + sorted(reduced)             # reduced dims last in NumPy = ggml's ne0..
            t = g.tensor(x.reshape(shape))
            if order != list(range(rank)):
                t = ggml.ggml_cont(g.ctx, ggml.ggml_permute(g.ctx, t, *ggml_axes(order, rank)))
            n_reduced = math.prod(shape[i] for i in reduced)
            n_kept = math.prod(shape[i] for i in kept)
            y = ggml.ggml_mean(g.ctx, ggml.ggml_reshape_2d(g.ctx, t, n_reduced, n_kept))  # ne (1, kept)
            result, facts = g.compute(y, (n_kept, 1))
        else:
            raise ValueError(f"unknown mean path {path!r}")
    return result.reshape(out_shape), facts      # ggml's result memory is already in output order


# ---- view, permute ---------------------------------------------------------------------------

def view(x, shape, path="reshape"):
    x = np.asarray(x)
    shape = tuple(int(s) for s in shape)
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        shape = tuple(x.size // known if s == -1 else s for s in shape)
    if x.ndim > 4 or len(shape) > 4:
        raise Unsupported(f"ggml tensors have at most 4 dimensions (GGML_MAX_DIMS); view {x.shape} -> {shape}")
    with Graph(2 * x.nbytes) as g:
        ne = list(reversed(shape)) or [1]
        reshape = (ggml.ggml_reshape_1d, ggml.ggml_reshape_2d, ggml.ggml_reshape_3d, ggml.ggml_reshape_4d)
        return g.compute(reshape[len(ne) - 1](g.ctx, g.tensor(x), *ne), shape)


def permute(x, dims, path="permute_cont"):
    x = np.asarray(x)
    rank = x.ndim
    if rank > 4:
        raise Unsupported(f"ggml tensors have at most 4 dimensions (GGML_MAX_DIMS); got shape {x.shape}")
    dims = [int(d) % rank for d in dims]
    with Graph(3 * x.nbytes) as g:
        y = ggml.ggml_cont(g.ctx, ggml.ggml_permute(g.ctx, g.tensor(x), *ggml_axes(dims, rank)))
        return g.compute(y, tuple(x.shape[d] for d in dims))

# ==== END GGML SECTION ========================================================================


def arithmetic(op: str, path: str) -> Arithmetic:
    """How each path computes, from ggml 0.15.3's CPU sources.

    - ``*/f16`` conv paths: the kernel is stored as F16 and the input is rounded to F16 where
      im2col writes its columns (ggml_im2col_f16 / the F16 tiles of GGML_OP_CONV_2D), so both
      operands of every product are float16. Products of two float16 values are exact in
      float32, and the F16 dot products and GEMMs (ggml_vec_dot_f16, llamafile sgemm) convert
      to float32 and accumulate there: inputs="float16", accumulate="float32". conv_2d_dw
      rounds its im2col to F16 whatever the kernel type, but its f32 path is modelled as
      float32 (what the user asked for); a difference there is a finding.
    - everything else runs in float32. ggml_mean sums in double (ggml_vec_sum_f32), rounds
      to float and divides in float: float32 accumulation is an upper bound for it.
    Outputs are float32 tensors everywhere.
    """
    conv_path = path.partition("+")[0]
    if conv_path.endswith("/f16"):
        return Arithmetic(inputs="float16", accumulate="float32", output="float32")
    return FLOAT32


_REPRO_HEADER = '''import ctypes
import math

import numpy as np
import ggml   # pip install ggml-python==0.0.45 (ggml 0.15.3); set GGML_NO_BACKTRACE=1 for a short abort


class Unsupported(Exception):
    """The configuration cannot be expressed in ggml (never raised for a stored finding)."""

'''


@functools.lru_cache(maxsize=None)
def _section() -> str:
    text = Path(__file__).read_text()
    start = text.index("# ==== BEGIN GGML SECTION")
    end = text.index("# ==== END GGML SECTION")
    return text[start:end].rstrip() + "\n"


def repro_source(op: str, path: str) -> str:
    """Standalone source (NumPy + ggml only) defining ``run(inputs, params)`` for op via path:
    this module's GGML SECTION verbatim, and a ``run`` calling the op function with the path."""
    if op not in paths or path not in paths[op] or _CHECKOUT is not None:
        return None       # a checkout build: its repro is repro.c (ggml-python is another ggml)
    return (_REPRO_HEADER + "\n" + _section() + "\n\n"
            f"def run(inputs, params):\n"
            f"    result, facts = {op}(**inputs, **params, path={path!r})\n"
            f"    return result\n")


standalone_repro_file = "repro.c"


def standalone_repro(op, path, inputs, params, layout, expected, bound, title) -> str:
    """A C program against ggml.h making the same ggml calls as this adapter, with the inputs,
    the expected values and the allowed error inline (``adapters._ggml_repro``)."""
    from adapters import _ggml_repro
    arrays = {k: v for k, v in inputs.items() if v is not None}
    if layout == "channels_last" and np.ndim(arrays.get("x")) == 4:
        arrays["x"] = np.ascontiguousarray(arrays["x"].transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    events, ended = _ggml_repro.trace(_CHECKOUT, op, path, arrays, params, layout)
    return _ggml_repro.c_program(events, ended, expected, bound, title, f"{version}", op, path)


# Graphs (edgediff.graph): one ggml compute graph per Graph; see adapters/_ggml_graph.py.
from adapters import _ggml_graph  # noqa: E402

graph_paths = _ggml_graph.graph_paths


def run_graph(graph, arrays, path=_ggml_graph.PATH):
    return _ggml_graph.run_graph(graph, arrays, path, G=sys.modules[__name__])


# ---- ggml built from a source checkout -------------------------------------------------------

_VARIANTS: dict = {}


def from_checkout(where: str = ""):
    """This adapter over ggml built from the checkout ``where`` (a ggml or llama.cpp checkout;
    "" means ``$GGML_ROOT``, else the snapshot ``scripts/setup.sh`` recorded): ``--backend
    ggml@PATH`` / ``ggml@``. Named ``ggml@<git describe>`` (``ggml@v0.21.0-d99724f2`` for the
    snapshot). AdapterUnavailable names what is missing."""
    from adapters import _ggml_source
    try:
        root = _ggml_source.locate(where or None)
    except _ggml_source.sb.BuildUnavailable as exc:
        raise adapters.AdapterUnavailable(f"ggml@{where}: {exc}") from None
    if root not in _VARIANTS:
        module_name = f"adapters.ggml_at_{abs(hash(str(root))):x}"
        spec = importlib.util.spec_from_file_location(module_name, __file__)
        module = importlib.util.module_from_spec(spec)
        module._CHECKOUT = str(root)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        reason = module.unavailable_reason()
        if reason:
            del sys.modules[module_name]
            raise adapters.AdapterUnavailable(f"ggml@{where}: {reason}")
        _VARIANTS[root] = module
    return _VARIANTS[root]
