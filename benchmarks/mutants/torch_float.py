"""Planted float bugs on top of PyTorch eager (the ``torch`` adapter).

Each mutant is an adapter object: the correct ``torch`` adapter with one op replaced by a
version carrying one bug of a kind backends have shipped. Each bug note says what the bug
is and under which condition it changes the result; that condition is what the strategies
must reach for the mutant to be detected.

Loaded by spec (``benchmarks.mutants.torch_float:pad_swapped``) so it runs in an isolated
worker like the ``torch`` adapter itself (PyTorch 2.13 has a channels_last depthwise
segfault; a crash must not end a power run).
"""
from __future__ import annotations

import types

import numpy as np

from adapters import torch_eager as T

BASE = "torch"


def _sides(padding):
    """(top, bottom, left, right) of any padding spelling."""
    if np.ndim(padding) == 0:
        p = int(padding)
        return p, p, p, p
    if np.ndim(padding) == 1:
        ph, pw = padding
        return ph, ph, pw, pw
    (t, b), (l, r) = padding
    return t, b, l, r


def _pair(v):
    return (int(v), int(v)) if np.ndim(v) == 0 else tuple(int(a) for a in v)


def _out_hw(x, w, stride, padding, dilation):
    t, b, l, r = _sides(padding)
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    kh, kw = w.shape[2], w.shape[3]
    return ((x.shape[2] + t + b - dh * (kh - 1) - 1) // sh + 1,
            (x.shape[3] + l + r - dw * (kw - 1) - 1) // sw + 1)


def _mutant(name: str, bug: str, trigger: str, **ops):
    """The torch adapter with ``ops`` replaced; ``bug``/``trigger`` document the planted bug."""
    mod = types.SimpleNamespace(
        name=f"mutant_{name}", version=f"mutant-on-torch-{T.version}", isolated=True,
        bug=bug, trigger=trigger, base=BASE, mutated_ops=tuple(ops),
        conv2d=T.conv2d, depthwise_conv2d=T.depthwise_conv2d, clamp=T.clamp, mean=T.mean,
        view=T.view, permute=T.permute, batch_norm=T.batch_norm,
        conv2d_batch_norm=T.conv2d_batch_norm)
    for op, fn in ops.items():
        setattr(mod, op, fn)
    return mod


# ---- padding -----------------------------------------------------------------------------------

def _conv_pad_swapped(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    t, bo, l, r = _sides(padding)
    return T.conv2d(x, w, b, stride, ((bo, t), (r, l)), dilation, groups)


def _conv_pad_split_before(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    # The total padding per axis is kept but split with the larger half *before*, the way a
    # kernel that hard-codes one SAME convention treats explicit asymmetric padding.
    t, bo, l, r = _sides(padding)
    t2, l2 = (t + bo + 1) // 2, (l + r + 1) // 2
    return T.conv2d(x, w, b, stride, ((t2, t + bo - t2), (l2, l + r - l2)), dilation, groups)


def _conv_wide_kernel_pad_right(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    # When the dilated kernel is wider than the input, all horizontal padding goes right.
    t, bo, l, r = _sides(padding)
    if (w.shape[3] - 1) * _pair(dilation)[1] + 1 > x.shape[3]:
        l, r = 0, l + r
    return T.conv2d(x, w, b, stride, ((t, bo), (l, r)), dilation, groups)


# ---- stride / dilation ---------------------------------------------------------------------------

def _conv_stride_h_only(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    sh, _ = _pair(stride)
    return T.conv2d(x, w, b, (sh, sh), padding, dilation, groups)


def _dw_dilation_w_ignored(x, w, b=None, stride=1, padding=0, dilation=1):
    # Output size from the declared parameters, taps read without the horizontal dilation.
    dh, _ = _pair(dilation)
    _, ow = _out_hw(x, w, stride, padding, dilation)
    return T.depthwise_conv2d(x, w, b, stride, padding, (dh, 1))[..., :ow]


# ---- groups and channel order ----------------------------------------------------------------------

def _conv_groups_interleaved(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    # Input channel c is taken as belonging to group c % groups instead of c // (C / groups).
    c = x.shape[1]
    order = np.arange(c).reshape(c // groups, groups).T.ravel()
    return T.conv2d(np.ascontiguousarray(x[:, order]), w, b, stride, padding, dilation, groups)


def _dw_multiplier_order(x, w, b=None, stride=1, padding=0, dilation=1):
    # Output channel c*M + j (PyTorch's order) written at j*C + c.
    y = T.depthwise_conv2d(x, w, b, stride, padding, dilation)
    c, m = x.shape[1], w.shape[0] // x.shape[1]
    out = np.empty_like(y)
    out[:, np.arange(c * m).reshape(c, m).T.ravel()] = y
    return out


def _conv_kernel_flipped(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    return T.conv2d(x, w[:, :, ::-1, ::-1].copy(), b, stride, padding, dilation, groups)


def _dw_kernel_transposed(x, w, b=None, stride=1, padding=0, dilation=1):
    if w.shape[2] != w.shape[3]:           # a transposed non-square kernel would not fit: the
        return T.depthwise_conv2d(x, w, b, stride, padding, dilation)   # bug stays hidden there
    return T.depthwise_conv2d(x, np.ascontiguousarray(w.transpose(0, 1, 3, 2)), b, stride, padding,
                              dilation)


# ---- arithmetic ------------------------------------------------------------------------------------

def _conv_f16_accumulate(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    import torch
    import torch.nn.functional as F
    half = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a, np.float32)).half()  # noqa: E731
    xt = half(x)
    t, bo, l, r = _sides(padding)
    xt = F.pad(xt, (l, r, t, bo))
    return F.conv2d(xt, half(w), half(b), stride, 0, dilation, groups).float().numpy()


# ---- bias ------------------------------------------------------------------------------------------

def _conv_bias_twice_grouped(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    y = T.conv2d(x, w, b, stride, padding, dilation, groups)
    return y + b[None, :, None, None] if (b is not None and groups > 1) else y


def _conv_bias_dropped_grouped(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    return T.conv2d(x, w, None if groups > 1 else b, stride, padding, dilation, groups)


def _conv_1x1_output_no_bias(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    # A GEMV fast path for a 1x1 output forgets the bias.
    one = _out_hw(x, w, stride, padding, dilation) == (1, 1)
    return T.conv2d(x, w, None if one else b, stride, padding, dilation, groups)


def _dw_tail_no_bias(x, w, b=None, stride=1, padding=0, dilation=1):
    # A main loop over 8 channels adds the bias; the remainder loop does not.
    y = T.depthwise_conv2d(x, w, b, stride, padding, dilation)
    o = w.shape[0]
    if b is not None and o % 8:
        y[:, o - o % 8:] -= b[o - o % 8:, None, None].astype(y.dtype)
    return y


# ---- rare conditions ---------------------------------------------------------------------------------

def _conv_channel_tail_ignored(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    # Input channels are consumed 4 at a time; the last C % 4 are skipped (groups == 1 only).
    c = x.shape[1]
    if groups == 1 and c % 4 and c > 4:
        x = np.array(x)
        x[:, c - c % 4:] = 0
    return T.conv2d(x, w, b, stride, padding, dilation, groups)


def _conv_batch_reuses_first(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    # The batch stride is forgotten: every image is computed from image 0.
    x0 = np.ascontiguousarray(np.broadcast_to(x[:1], x.shape))
    return T.conv2d(x0, w, b, stride, padding, dilation, groups)


# ---- clamp -------------------------------------------------------------------------------------------

def _clamp_bounds_swapped(x, min=None, max=None):  # noqa: A002
    return T.clamp(x, max, min) if min is not None and max is not None else T.clamp(x, min, max)


def _clamp_drops_nan(x, min=None, max=None):  # noqa: A002
    return np.nan_to_num(T.clamp(x, min, max), nan=0.0, posinf=np.inf, neginf=-np.inf)


def _clamp_min_after_max(x, min=None, max=None):  # noqa: A002
    y = np.array(x, np.float32)
    if max is not None:
        y = np.minimum(y, np.float32(max))
    if min is not None:
        y = np.maximum(y, np.float32(min))      # PyTorch applies min then max: differs if min > max
    return y


# ---- mean --------------------------------------------------------------------------------------------

def _mean_wrong_axis(x, dim=None, keepdim=False):
    if isinstance(dim, int) and x.ndim > 1:
        dim = (dim + 1) % x.ndim
    return T.mean(x, dim, keepdim)


def _mean_padded_count(x, dim=None, keepdim=False):
    # Sums over a vector-padded row and divides by the padded count (a multiple of 4).
    y = T.mean(x, dim, keepdim)
    count = max(1, x.size // max(1, np.asarray(y).size))
    return (y * np.float32(count / (-(-count // 4) * 4))).astype(np.float32)


# ---- view / permute --------------------------------------------------------------------------------

def _view_memory_order(x, shape):
    # Reshapes the buffer in memory order: wrong for a channels_last (non-contiguous) input.
    return np.array(np.ravel(x, order="K").reshape(shape), np.float32)


def _permute_inverted(x, dims):
    return T.permute(x, tuple(int(d) for d in np.argsort([d % x.ndim for d in dims])))


# ---- batch norm -------------------------------------------------------------------------------------

def _bn_eps_dropped(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    return T.batch_norm(x, running_mean, running_var, weight, bias, 0.0)


def _bn_variance_as_std(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    # Divides by (var + eps) instead of sqrt(var + eps).
    var = np.asarray(running_var, np.float64)
    return T.batch_norm(x, running_mean, ((var + eps) ** 2 - eps).astype(np.float32), weight, bias, eps)


def _conv_bn_fold_eps_dropped(x, w, running_mean, running_var, b=None, weight=None, bias=None,
                              stride=1, padding=0, dilation=1, groups=1, eps=1e-5):
    return T.conv2d_batch_norm(x, w, running_mean, running_var, b, weight, bias, stride, padding,
                               dilation, groups, 0.0)


# ---- the mutants ------------------------------------------------------------------------------------

pad_swapped = _mutant(
    "pad_swapped", "asymmetric padding: top/bottom and left/right swapped",
    "top != bottom or left != right", conv2d=_conv_pad_swapped)
pad_split_before = _mutant(
    "pad_split_before", "explicit padding re-split with the larger half before (SAME convention)",
    "top < bottom or left < right", conv2d=_conv_pad_split_before)
wide_kernel_pad_right = _mutant(
    "wide_kernel_pad_right", "kernel wider than the input: all horizontal padding moved right",
    "dilated kernel width > input width and left padding > 0", conv2d=_conv_wide_kernel_pad_right)
stride_h_only = _mutant(
    "stride_h_only", "vertical stride used for both axes", "stride h != stride w",
    conv2d=_conv_stride_h_only)
dw_dilation_w_ignored = _mutant(
    "dw_dilation_w_ignored", "depthwise: horizontal dilation ignored", "dilation w > 1",
    depthwise_conv2d=_dw_dilation_w_ignored)
groups_interleaved = _mutant(
    "groups_interleaved", "grouped conv: input channel c taken as group c % groups",
    "1 < groups < C", conv2d=_conv_groups_interleaved)
dw_multiplier_order = _mutant(
    "dw_multiplier_order", "depthwise: output channels in multiplier-major order",
    "depth multiplier > 1 and C > 1", depthwise_conv2d=_dw_multiplier_order)
kernel_flipped = _mutant(
    "kernel_flipped", "kernel flipped (true convolution instead of cross-correlation)",
    "kernel larger than 1x1", conv2d=_conv_kernel_flipped)
dw_kernel_transposed = _mutant(
    "dw_kernel_transposed", "depthwise: square kernel read transposed (KW, KH)",
    "square kernel > 1x1", depthwise_conv2d=_dw_kernel_transposed)
f16_accumulate = _mutant(
    "f16_accumulate", "conv inputs and accumulation in float16", "values not exact in float16",
    conv2d=_conv_f16_accumulate)
bias_twice_grouped = _mutant(
    "bias_twice_grouped", "grouped conv adds the bias twice", "groups > 1 with bias",
    conv2d=_conv_bias_twice_grouped)
bias_dropped_grouped = _mutant(
    "bias_dropped_grouped", "grouped conv drops the bias", "groups > 1 with bias",
    conv2d=_conv_bias_dropped_grouped)
one_by_one_output_no_bias = _mutant(
    "one_by_one_output_no_bias", "1x1 output (GEMV path) drops the bias", "output 1x1 with bias",
    conv2d=_conv_1x1_output_no_bias)
dw_tail_no_bias = _mutant(
    "dw_tail_no_bias", "depthwise: last O % 8 channels get no bias", "O % 8 != 0 with bias",
    depthwise_conv2d=_dw_tail_no_bias)
channel_tail_ignored = _mutant(
    "channel_tail_ignored", "conv: last C % 4 input channels skipped", "groups == 1, C > 4, C % 4 != 0",
    conv2d=_conv_channel_tail_ignored)
batch_reuses_first = _mutant(
    "batch_reuses_first", "conv: every image of the batch computed from image 0", "batch > 1",
    conv2d=_conv_batch_reuses_first)
clamp_bounds_swapped = _mutant(
    "clamp_bounds_swapped", "clamp(min, max) called as clamp(max, min)", "both bounds given",
    clamp=_clamp_bounds_swapped)
clamp_drops_nan = _mutant(
    "clamp_drops_nan", "clamp turns NaN into 0", "NaN in the input", clamp=_clamp_drops_nan)
clamp_min_after_max = _mutant(
    "clamp_min_after_max", "clamp applies max then min", "min > max", clamp=_clamp_min_after_max)
mean_wrong_axis = _mutant(
    "mean_wrong_axis", "mean over dim+1 for an int dim", "int dim, rank > 1, sizes differ",
    mean=_mean_wrong_axis)
mean_padded_count = _mutant(
    "mean_padded_count", "mean divides by the count padded to a multiple of 4",
    "reduced count % 4 != 0", mean=_mean_padded_count)
view_memory_order = _mutant(
    "view_memory_order", "view reshapes the buffer in memory order (ignores non-contiguity)",
    "channels_last input with C > 1 and H*W > 1", view=_view_memory_order)
permute_inverted = _mutant(
    "permute_inverted", "permute applies the inverse permutation", "a permutation that is not its own inverse",
    permute=_permute_inverted)
bn_eps_dropped = _mutant(
    "bn_eps_dropped", "batch_norm ignores eps", "running_var not >> eps", batch_norm=_bn_eps_dropped)
bn_variance_as_std = _mutant(
    "bn_variance_as_std", "batch_norm divides by var + eps, not its square root", "var + eps != 1",
    batch_norm=_bn_variance_as_std)
conv_bn_fold_eps_dropped = _mutant(
    "conv_bn_fold_eps_dropped", "conv+BN folding ignores eps", "running_var not >> eps",
    conv2d_batch_norm=_conv_bn_fold_eps_dropped)

MUTANTS = [m for m in globals().values() if isinstance(m, types.SimpleNamespace)]
