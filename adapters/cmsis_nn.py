"""The cmsis_nn adapter: ARM CMSIS-NN's int8 kernels, run on the host through edgediff's own
pybind11 binding (adapters/_cmsis_nn/binding.cpp) linked against a CMSIS-NN the user built.

Not installable from any package registry: build ARM-software/CMSIS-NN with its CMake
(``-DCMAKE_POSITION_INDEPENDENT_CODE=ON``) and set ``CMSIS_NN_ROOT`` (source root, with
``Include/``) or ``CMSIS_NN_INCLUDE``, plus ``CMSIS_NN_LIB`` (the built ``libcmsis-nn.a``).
On x86 the plain-C paths of every kernel run (no DSP/Helium code).

The ops are int8 and take the arguments of their ``reference.quant`` namesakes (NHWC
activations, OHWI / 1HW(C*M) / (O, K) weights, CMSIS-NN offsets, per-channel multipliers and
shifts), plus ``path``: the CMSIS-NN function to call. Each direct path refuses
(``adapters.Unsupported``) what its kernel documents it does not take, before calling it;
the ``*_wrapper_s8`` paths let CMSIS-NN pick the kernel. Padding ``((top, bottom), (left,
right))``: CMSIS-NN is given top and left, and bottom/right through the output size, as
TFLite Micro does. A non-zero ``arm_cmsis_nn_status`` raises ``CmsisNNError``; a write past
the output or scratch buffer raises ``RuntimeError`` (the binding guards every buffer).

Requantization rounding is a build-time choice (``CMSIS_NN_USE_SINGLE_ROUNDING``);
``rounding()`` finds out which one the linked library uses by running a fully connected
layer on a value the two roundings map differently, and ``version`` says it too.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

import adapters
from reference import quant as _q

name = "cmsis_nn"
isolated = True                 # C kernels can crash; run in a worker process
timeout = 60.0

CONV_PATHS = ("arm_convolve_wrapper_s8", "arm_convolve_1x1_s8_fast", "arm_convolve_1x1_s8",
              "arm_convolve_1_x_n_s8", "arm_convolve_s8")
DW_PATHS = ("arm_depthwise_conv_wrapper_s8", "arm_depthwise_conv_3x3_s8",
            "arm_depthwise_conv_s8_opt", "arm_depthwise_conv_s8")
paths = {
    "conv2d_s8": CONV_PATHS,
    "depthwise_conv2d_s8": DW_PATHS,
    "avgpool_s8": ("arm_avgpool_s8",),
    "fully_connected_s8": ("arm_fully_connected_s8",),
    "add_s8": ("arm_elementwise_add_s8",),
}
STATUS = {0: "ARM_CMSIS_NN_SUCCESS", -1: "ARM_CMSIS_NN_ARG_ERROR",
          -2: "ARM_CMSIS_NN_NO_IMPL_ERROR", -3: "ARM_CMSIS_NN_FAILURE"}


class CmsisNNError(RuntimeError):
    """A CMSIS-NN function returned a status other than ARM_CMSIS_NN_SUCCESS."""


def _build_module():
    """adapters/_cmsis_nn/build.py, loaded from its file (the folder is not a package)."""
    mod_name = "adapters._cmsis_nn.build"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(
        mod_name, Path(__file__).resolve().parent / "_cmsis_nn" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


_build = _build_module()
_binding = None
_rounding = None
_reason = None


def _library_version() -> str:
    try:
        return _build.cmsis_version(_build.locate())
    except _build.BuildUnavailable:
        return "unknown"


version = _library_version()


def unavailable_reason():
    """None when the binding builds, loads and runs; else why not (the env vars to set)."""
    global _binding, _rounding, _reason, version
    if _binding is not None or _reason is not None:
        return _reason
    try:
        _binding = _build.load()
    except _build.BuildUnavailable as exc:
        _reason = str(exc)
        return _reason
    _rounding = _probe_rounding(_binding)
    version = f"{_library_version()}, {_rounding} rounding"
    return None


def binding():
    """The compiled extension (raises adapters.AdapterUnavailable when CMSIS-NN is missing)."""
    reason = unavailable_reason()
    if reason:
        raise adapters.AdapterUnavailable(f"{name}: {reason}")
    return _binding


def rounding() -> str:
    """"double" (TFLite's default) or "single" (CMSIS_NN_USE_SINGLE_ROUNDING), as measured."""
    binding()
    return _rounding


def _probe_rounding(b) -> str:
    # -2 * 2^30 * 2^(-1-31) = -0.5: double rounding gives -1 (ties away from zero),
    # single rounding 0 (ties toward +inf). 1 * (2^30 + 1) * 2^-32 = 0.25 + 2^-32:
    # double rounding gives 1 (rounds twice), single 0.
    a = b.arm_fully_connected_s8(np.array([[-2]], np.int8), np.array([[1]], np.int8), None,
                                 0, 0, 0, 1 << 30, -1, -128, 127)
    c = b.arm_fully_connected_s8(np.array([[1]], np.int8), np.array([[1]], np.int8), None,
                                 0, 0, 0, (1 << 30) + 1, -1, -128, 127)
    seen = (int(a[0][0, 0]), int(c[0][0, 0]))
    return {(-1, 1): "double", (0, 0): "single"}.get(seen, f"unknown {seen}")


# ---- ops ----------------------------------------------------------------------------------

def conv2d_s8(x, w, bias=None, input_offset=0, output_offset=0, multipliers=None, shifts=None,
              act_min=-128, act_max=127, stride=1, padding=0, dilation=1, groups=1, rounding=None,
              path="arm_convolve_wrapper_s8"):
    x, w = _int8(x, "x", 4), _int8(w, "w", 4)
    n, h, wd, c = x.shape
    o, kh, kw, ck = w.shape
    groups = int(groups)
    if groups < 1 or ck * groups != c or o % groups:
        raise adapters.Unsupported(f"groups={groups} does not fit C={c}, weight {w.shape}")
    common = _common(x, bias, o, input_offset, output_offset, multipliers, shifts, act_min,
                     act_max, rounding)
    (sh, sw), (dh, dw) = _pair(stride, "stride"), _pair(dilation, "dilation")
    top, bottom, left, right = _q.padding4(padding)
    oh, ow = _out_size((h, wd), (kh, kw), (sh, sw), (dh, dw), (top, bottom, left, right))
    one_by_one = ((kh, kw) == (1, 1) and (top, bottom, left, right) == (0, 0, 0, 0)
                  and (dh, dw) == (1, 1))
    if path == "arm_convolve_1x1_s8_fast":
        _require(one_by_one and groups == 1 and (sh, sw) == (1, 1), path,
                 "1x1 kernel, no padding, stride 1, dilation 1, groups 1")
    elif path == "arm_convolve_1x1_s8":
        _require(one_by_one and groups == 1, path, "1x1 kernel, no padding, dilation 1, groups 1")
    elif path == "arm_convolve_1_x_n_s8":
        _require(n == 1 and h == 1 and kh == 1 and oh == 1 and ow % 4 == 0 and dw == 1
                 and (sw * c) % 4 == 0 and groups == 1 and top == 0, path,
                 "batch 1, input height 1, 1xN kernel, output width a multiple of 4, "
                 "dilation_w 1, stride_w * C a multiple of 4, groups 1")
    elif path not in ("arm_convolve_wrapper_s8", "arm_convolve_s8"):
        raise adapters.Unsupported(f"conv2d_s8 has no path {path!r}")
    fn = getattr(binding(), path)
    out, status, _ = fn(x, w, common["bias"], int(input_offset), int(output_offset), (sh, sw),
                        (top, left), (dh, dw), common["multipliers"], common["shifts"],
                        int(act_min), int(act_max), (oh, ow))
    return _ok(out, status, path)


def depthwise_conv2d_s8(x, w, bias=None, input_offset=0, output_offset=0, multipliers=None,
                        shifts=None, act_min=-128, act_max=127, stride=1, padding=0, dilation=1,
                        depth_multiplier=None, rounding=None, path="arm_depthwise_conv_wrapper_s8"):
    x, w = _int8(x, "x", 4), _int8(w, "w", 4)
    n, h, wd, c = x.shape
    one, kh, kw, cm = w.shape
    if one != 1 or cm % c:
        raise adapters.Unsupported(f"depthwise weight must be (1, KH, KW, C*M), got {w.shape}")
    m = cm // c
    if depth_multiplier is not None and int(depth_multiplier) != m:
        raise adapters.Unsupported(f"depth_multiplier={depth_multiplier} but weight is {w.shape}")
    common = _common(x, bias, cm, input_offset, output_offset, multipliers, shifts, act_min,
                     act_max, rounding)
    (sh, sw), (dh, dw) = _pair(stride, "stride"), _pair(dilation, "dilation")
    top, bottom, left, right = _q.padding4(padding)
    oh, ow = _out_size((h, wd), (kh, kw), (sh, sw), (dh, dw), (top, bottom, left, right))
    if path == "arm_depthwise_conv_3x3_s8":
        # Documented: ch_mult 1, 3x3 filter, padding along x 0 or 1. Batch and dilation are
        # not parameters of the optimized kernels ("Batch argument N is not used").
        _require(m == 1 and (kh, kw) == (3, 3) and left <= 1 and n == 1 and (dh, dw) == (1, 1),
                 path, "depth multiplier 1, 3x3 kernel, left padding <= 1, batch 1, dilation 1")
    elif path == "arm_depthwise_conv_s8_opt":
        _require(m == 1 and n == 1 and (dh, dw) == (1, 1), path,
                 "depth multiplier 1, batch 1, dilation 1")
    elif path not in ("arm_depthwise_conv_wrapper_s8", "arm_depthwise_conv_s8"):
        raise adapters.Unsupported(f"depthwise_conv2d_s8 has no path {path!r}")
    fn = getattr(binding(), path)
    out, status, _ = fn(x, w, common["bias"], m, int(input_offset), int(output_offset), (sh, sw),
                        (top, left), (dh, dw), common["multipliers"], common["shifts"],
                        int(act_min), int(act_max), (oh, ow))
    return _ok(out, status, path)


def avgpool_s8(x, kernel, stride, padding=0, act_min=-128, act_max=127, path="arm_avgpool_s8"):
    x = _int8(x, "x", 4)
    n, h, wd, c = x.shape
    kh, kw = _pair(kernel, "kernel")
    sh, sw = _pair(stride, "stride")
    top, bottom, left, right = _q.padding4(padding)
    _activation(act_min, act_max)
    oh, ow = _out_size((h, wd), (kh, kw), (sh, sw), (1, 1), (top, bottom, left, right))
    # a window wholly in the padding has no average (CMSIS-NN returns ARG_ERROR)
    rows = np.arange(oh) * sh - top
    cols = np.arange(ow) * sw - left
    if ((rows + kh <= 0) | (rows >= h)).any() or ((cols + kw <= 0) | (cols >= wd)).any():
        raise adapters.Unsupported("a pooling window lies entirely in the padding")
    out, status, _ = binding().arm_avgpool_s8(x, (kh, kw), (sh, sw), (top, left), int(act_min),
                                              int(act_max), (oh, ow))
    return _ok(out, status, path)


def fully_connected_s8(x, w, bias=None, input_offset=0, output_offset=0, multiplier=None,
                       shift=None, act_min=-128, act_max=127, filter_offset=0, rounding=None,
                       path="arm_fully_connected_s8"):
    x, w = _int8(x, "x", 2), _int8(w, "w", 2)
    if x.shape[1] != w.shape[1]:
        raise adapters.Unsupported(f"x {x.shape} and w {w.shape} disagree on K")
    if int(filter_offset) != 0:
        raise adapters.Unsupported("arm_fully_connected_s8 documents filter_offset == 0")
    common = _common(x, bias, w.shape[0], input_offset, output_offset, [multiplier], [shift],
                     act_min, act_max, rounding)
    out, status, _ = binding().arm_fully_connected_s8(
        x, w, common["bias"], int(input_offset), 0, int(output_offset), int(multiplier),
        int(shift), int(act_min), int(act_max))
    return _ok(out, status, path)


def add_s8(x1, x2, input1_offset, input1_multiplier, input1_shift, input2_offset,
           input2_multiplier, input2_shift, left_shift, output_offset, output_multiplier,
           output_shift, act_min=-128, act_max=127, rounding=None, path="arm_elementwise_add_s8"):
    x1, x2 = _int8(x1, "x1"), _int8(x2, "x2")
    if x1.shape != x2.shape:
        raise adapters.Unsupported("arm_elementwise_add_s8 takes two equal-size vectors "
                                   "(no broadcast)")
    for off in (input1_offset, input2_offset):
        _range(off, -127, 128, "input offset")
    _range(output_offset, -128, 127, "output offset")
    _range(left_shift, 0, 30, "left_shift")
    for s in (input1_shift, input2_shift, output_shift):
        _range(s, -31, 30, "shift")
    _activation(act_min, act_max)
    _check_rounding(rounding)
    out, status, _ = binding().arm_elementwise_add_s8(
        x1, x2, int(input1_offset), int(input1_multiplier), int(input1_shift), int(input2_offset),
        int(input2_multiplier), int(input2_shift), int(left_shift), int(output_offset),
        int(output_multiplier), int(output_shift), int(act_min), int(act_max))
    return _ok(out, status, path)


# ---- argument checks -----------------------------------------------------------------------

def _int8(a, label, ndim=None):
    a = np.asarray(a)
    if a.dtype != np.int8:
        if a.dtype.kind not in "iu" or (a.size and (a.min() < -128 or a.max() > 127)):
            raise adapters.Unsupported(f"{label} must be int8")
        a = a.astype(np.int8)
    if ndim is not None and a.ndim != ndim:
        raise adapters.Unsupported(f"{label} must be {ndim}-D, got shape {a.shape}")
    if 0 in a.shape:
        raise adapters.Unsupported(f"{label} has an empty dimension {a.shape}")
    return np.ascontiguousarray(a)


def _common(x, bias, channels, input_offset, output_offset, multipliers, shifts, act_min,
            act_max, rounding):
    _range(input_offset, -127, 128, "input_offset")        # documented ranges
    _range(output_offset, -128, 127, "output_offset")
    _activation(act_min, act_max)
    _check_rounding(rounding)
    if multipliers is None or shifts is None:
        raise adapters.Unsupported("multipliers and shifts are required")
    mult = np.asarray(multipliers, dtype=np.int64).reshape(-1)
    sh = np.asarray(shifts, dtype=np.int64).reshape(-1)
    if mult.size == 1 and channels != 1 and np.ndim(multipliers) == 0:
        mult = np.full(channels, mult[0])
    if sh.size == 1 and channels != 1 and np.ndim(shifts) == 0:
        sh = np.full(channels, sh[0])
    if len(mult) not in (1, channels) or len(sh) not in (1, channels):
        raise adapters.Unsupported(f"multipliers/shifts must have {channels} entries")
    if mult.min() <= _q.INT32_MIN or mult.max() > _q.INT32_MAX:
        raise adapters.Unsupported("multipliers must be in [INT32_MIN + 1, INT32_MAX]")
    if sh.min() < -31 or sh.max() > 30:
        raise adapters.Unsupported("shifts must be in [-31, 30]")
    b = None
    if bias is not None:
        b = np.asarray(bias)
        if b.dtype.kind not in "iu" or b.shape != (channels,):
            raise adapters.Unsupported(f"bias must be int32 of shape ({channels},)")
        if b.size and (b.min() < _q.INT32_MIN or b.max() > _q.INT32_MAX):
            raise adapters.Unsupported("bias must hold int32 values")
        b = b.astype(np.int32)
    return {"bias": b, "multipliers": mult.astype(np.int32), "shifts": sh.astype(np.int32)}


def _check_rounding(requested):
    if requested is not None and requested != rounding():
        raise adapters.Unsupported(f"this CMSIS-NN build uses {rounding()} rounding, "
                                   f"not {requested}")


def _activation(lo, hi):
    if not -128 <= int(lo) <= int(hi) <= 127:
        raise adapters.Unsupported(f"need -128 <= act_min <= act_max <= 127, got {lo}, {hi}")


def _range(v, lo, hi, label):
    if not lo <= int(v) <= hi:
        raise adapters.Unsupported(f"{label} {v} is outside CMSIS-NN's documented [{lo}, {hi}]")


def _pair(v, label):
    try:
        h, w = _q.pair(v, label, 1)
    except ValueError as exc:
        raise adapters.Unsupported(str(exc)) from None
    return h, w


def _out_size(hw, kernel, stride, dilation, pads):
    (h, w), (kh, kw), (sh, sw), (dh, dw) = hw, kernel, stride, dilation
    top, bottom, left, right = pads
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise adapters.Unsupported(f"empty output ({oh}, {ow})")
    return oh, ow


def _require(ok, path, conditions):
    if not ok:
        raise adapters.Unsupported(f"{path} takes only: {conditions}")


def _ok(out, status, path):
    if status != 0:
        raise CmsisNNError(f"{path} returned {status} ({STATUS.get(status, 'unknown status')})")
    return out
