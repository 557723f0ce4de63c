"""A lowered Cortex-M program recomputed with edgediff's int8 golden ops (``reference.quant``).

The ``cortex_m`` adapter returns the final edge graph as data (``facts["program"]``): every
node's op and arguments, constant tensors inline (weights, int32 biases, the per-channel
requantization multipliers and shifts the passes computed from the scales the quantizer chose).
``evaluate`` walks it on the example's float input and computes each ``cortex_m::*`` node as
CMSIS-NN's arithmetic defines it, so the program's output can be compared bit for bit with what
the kernels gave. Arrays are kept in the graph's logical shapes (NCHW for the legacy layout,
NHWC for the ``*_nhwc`` ops); ``reference.quant`` works in NHWC.

How each node is computed:
- ``quantize_per_tensor``: ``quant.quantize(..., rounding="half_even")`` (the kernel computes
  ``nearbyint(x * (1.0f / scale))``); ``dequantize_per_tensor``: ``quant.dequantize``;
- ``quantized_conv2d[_nhwc]``: ``quant.conv2d_s8`` (weights OHWI, groups = C / weight's last
  dim); ``quantized_depthwise_conv2d[_nhwc]``: ``quant.depthwise_conv2d_s8`` (weights
  ``(1, KH, KW, C*M)``); ``quantized_linear``: ``quant.conv2d_s8`` as a 1x1 conv (per-channel
  multipliers) when there is no ``kernel_sum`` (the SCALAR/DSP contract);
- ``quantized_add``: ``quant.add_s8`` with CMSIS-NN's ``left_shift = 20``;
- ``quantized_avg_pool2d[_nhwc]``: ``quant.avgpool_s8`` (``arm_avgpool_s8`` ignores the
  multiplier and shift it is given), ``pad``: the pad value in the tensor's physical order;
- ``aten.hardtanh`` on float values: ``np.clip``; views, permutes (``aten.view_copy``,
  ``aten.permute_copy``, ``cortex_m.transpose``) and layout copies on the logical values.
Anything else raises ``NotModelled`` naming the op: the comparison then says so instead of
judging.
"""
from __future__ import annotations

import numpy as np

from reference import quant

ADD_LEFT_SHIFT = 20          # CMSIS-NN's arm_elementwise_add_s8 left_shift in the cortex_m glue


class NotModelled(Exception):
    """A node the golden interpreter has no model for."""


def _value(arg, env):
    if isinstance(arg, dict) and "ref" in arg:
        return env[arg["ref"]]
    if isinstance(arg, dict) and "const" in arg:
        return np.asarray(arg["const"], dtype=np.dtype(arg["dtype"])).reshape(arg["shape"])
    if isinstance(arg, list):
        return [_value(a, env) for a in arg]
    return arg


def _nhwc(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def _nchw(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))


def _pair(v):
    return tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v), int(v))


def _conv(args, nhwc_op, rounding):
    x, w, bias, stride, padding, dilation, in_off, out_off, mult, shift, lo, hi, _scratch = args
    xs = np.asarray(x) if nhwc_op else _nhwc(x)
    groups = xs.shape[-1] // w.shape[3]
    y = quant.conv2d_s8(xs, w, bias, int(in_off), int(out_off), mult, shift, int(lo), int(hi),
                        _pair(stride), _pair(padding), _pair(dilation), groups, rounding=rounding)
    return y if nhwc_op else _nchw(y)


def _depthwise(args, nhwc_op, rounding):
    (x, w, bias, stride, padding, dilation, multiplier, in_off, out_off, mult, shift, lo, hi,
     _scratch) = args
    xs = np.asarray(x) if nhwc_op else _nhwc(x)
    y = quant.depthwise_conv2d_s8(xs, w, bias, int(in_off), int(out_off), mult, shift, int(lo),
                                  int(hi), _pair(stride), _pair(padding), _pair(dilation),
                                  int(multiplier), rounding=rounding)
    return y if nhwc_op else _nchw(y)


def _linear(args, rounding):
    x, w, bias, kernel_sum, in_off, filter_off, out_off, mults, shifts, hi, lo = args
    if kernel_sum is not None or int(filter_off) != 0:
        raise NotModelled("quantized_linear with a kernel_sum or a non-zero filter offset (the MVE "
                          "contract)")
    x = np.asarray(x)
    lead, k = x.shape[:-1], x.shape[-1]
    o = w.shape[0]
    mults = np.broadcast_to(np.asarray(mults, np.int64), (o,))
    shifts = np.broadcast_to(np.asarray(shifts, np.int64), (o,))
    y = quant.conv2d_s8(x.reshape(-1, 1, 1, k), w.reshape(o, 1, 1, k), bias, int(in_off),
                        int(out_off), mults, shifts, int(lo), int(hi), rounding=rounding)
    return y.reshape(*lead, o)


def _add(args, rounding):
    (a, za, ma, sa, b, zb, mb, sb_, zo, mo, so, lo, hi) = args
    return quant.add_s8(a, b, -int(za), int(ma), int(sa), -int(zb), int(mb), int(sb_),
                        ADD_LEFT_SHIFT, int(zo), int(mo), int(so), int(lo), int(hi), rounding=rounding)


def _avg_pool(args, nhwc_op):
    x, kernel, stride, padding, ceil_mode, _zp, _mult, _shift, _scratch = args
    if ceil_mode:
        raise NotModelled("quantized_avg_pool2d with ceil_mode=True")
    xs = np.asarray(x) if nhwc_op else _nhwc(x)
    y = quant.avgpool_s8(xs, _pair(kernel), _pair(stride), _pair(padding))
    return y if nhwc_op else _nchw(y)


def _pad(args, dim_order):
    x, pre, post, value = args
    x = np.asarray(x)
    order = dim_order or list(range(x.ndim))          # physical position i holds logical dim order[i]
    widths = [(0, 0)] * x.ndim
    for i, d in enumerate(order):
        widths[d] = (int(pre[i]), int(post[i]))
    return np.pad(x, widths, constant_values=int(value)).astype(x.dtype)


def evaluate(program: dict, inputs: list, rounding: str = "double") -> list:
    """The program's outputs, computed with reference.quant from ``inputs`` (float arrays in
    the program's input order)."""
    env = dict(zip(program["inputs"], [np.asarray(a, np.float32) for a in inputs]))
    dim_orders = dict(program.get("input_dim_orders", {}))
    for node in program["nodes"]:
        op = node["op"]
        args = [_value(a, env) for a in node["args"]]
        base = op.rsplit(".", 1)[0]
        if base == "alloc" or op.endswith("memory.alloc"):
            y = None
        elif base == "cortex_m.quantize_per_tensor":
            x, scale, zp, qmin, qmax, _dtype = args
            y = quant.quantize(x, scale, zp, rounding="half_even", qmin=int(qmin), qmax=int(qmax))
        elif base == "cortex_m.dequantize_per_tensor":
            q, scale, zp, _qmin, _qmax, _dtype = args
            y = quant.dequantize(q, scale, zp)
        elif base in ("cortex_m.quantized_conv2d", "cortex_m.quantized_conv2d_nhwc"):
            y = _conv(args, base.endswith("_nhwc"), rounding)
        elif base in ("cortex_m.quantized_depthwise_conv2d", "cortex_m.quantized_depthwise_conv2d_nhwc"):
            y = _depthwise(args, base.endswith("_nhwc"), rounding)
        elif base == "cortex_m.quantized_linear":
            y = _linear(args, rounding)
        elif base == "cortex_m.quantized_add":
            y = _add(args, rounding)
        elif base in ("cortex_m.quantized_avg_pool2d", "cortex_m.quantized_avg_pool2d_nhwc"):
            y = _avg_pool(args, base.endswith("_nhwc"))
        elif base == "cortex_m.pad":
            src = node["args"][0].get("ref") if isinstance(node["args"][0], dict) else None
            y = _pad(args, dim_orders.get(src))
        elif base in ("aten.view_copy", "aten.view", "aten._unsafe_view"):
            y = np.reshape(args[0], [int(v) for v in args[1]])
        elif base in ("aten.permute_copy", "aten.permute", "cortex_m.transpose"):
            y = np.ascontiguousarray(np.transpose(args[0], [int(v) for v in args[1]]))
        elif base in ("aten.clone", "dim_order_ops._to_dim_order_copy", "aten.alias_copy"):
            y = np.asarray(args[0])                       # values unchanged (a layout change)
        elif base == "aten.hardtanh":
            y = np.clip(np.asarray(args[0], np.float32), np.float32(args[1]), np.float32(args[2]))
        else:
            raise NotModelled(f"no golden model for {op}")
        env[node["name"]] = y
        if node.get("dim_order") is not None:
            dim_orders[node["name"]] = node["dim_order"]
    return [env[name] for name in program["outputs"]]


def output_quantization(program: dict) -> tuple[float, int]:
    """(scale, zero point) of the dequantize that produces the program's output."""
    by_name = {n["name"]: n for n in program["nodes"]}
    node = by_name.get(program["outputs"][0])
    if node is None or not node["op"].startswith("cortex_m.dequantize_per_tensor"):
        raise NotModelled("the program's output is not a dequantize_per_tensor")
    return float(node["args"][1]), int(node["args"][2])
