"""LiteRT (TensorFlow Lite) 2.x through its real interpreter, named ``litert``.

Every example becomes a one-op (or few-op) float32 ``.tflite`` model, built here with the
flatbuffers object API of ``ai_edge_litert.schema_py_generated`` (no TensorFlow needed),
loaded with ``ai_edge_litert.interpreter.Interpreter(num_threads=1)`` and invoked. Three
paths per op:

- ``xnnpack``: ``OpResolverType.AUTO``, which applies the default XNNPACK delegate. After
  ``allocate_tensors`` (where the delegate is applied) the node list from
  ``_get_ops_details()`` must show a DELEGATE node that produces the model's outputs and is
  fed only by the model's inputs and constants; otherwise the example raises
  ``Unsupported("not delegated: ...")`` before ``invoke``, so a pass on this path is always
  an XNNPACK result, never a silent fallback to the builtin kernels;
- ``builtin``: ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``, TFLite's optimized kernels;
- ``builtin_ref``: ``BUILTIN_REF``, TFLite's reference kernels.

How each op becomes TFLite (what a converter would emit):

- conv2d / depthwise_conv2d: NHWC activations (NumPy transposes at the model boundary:
  layout plumbing, not computation), CONV_2D with OHWI weights or DEPTHWISE_CONV_2D with
  1HW(C*M) weights and ``depth_multiplier`` M, a bias tensor (zeros when ``b`` is None).
  conv2d with ``groups == C`` and one input channel per group is DEPTHWISE_CONV_2D; any
  other ``groups > 1`` is Unsupported unless ``MAP_GROUPED_CONV`` is set (then a grouped
  CONV_2D with an O x KH x KW x C/groups filter, which LiteRT 2.3 runs on all three paths
  and matched the golden op on 569 generated cases). TFLite has only SAME and VALID padding: explicit
  pads of zero are VALID, pads equal to TFLite's SAME pads for that configuration
  (``reference.padding.tflite_same_padding``) are SAME, anything else (asymmetric
  included) is a PAD op with those pads before a VALID conv.
- conv2d_batch_norm: one CONV_2D / DEPTHWISE_CONV_2D whose weights and bias are BN folded
  in (``reference.fold_batch_norm``, float64, then rounded once to float32): a converter
  folds BN into the conv's constants, so LiteRT never sees the BN.
- batch_norm: MUL by ``scale`` then ADD ``shift`` per channel, on channels-last data
  (channel axis moved last in NumPy), with ``scale = weight / sqrt(var + eps)`` and
  ``shift = bias - mean * scale`` computed in float32, as a converter's constant folding
  would.
- clamp: RELU6 for (0, 6), RELU_N1_TO_1 for (-1, 1), RELU_0_TO_1 for (0, 1), RELU for
  (0, None); otherwise MAXIMUM with a scalar constant ``min`` and/or MINIMUM with ``max``.
- tflite_conv2d_s8 / tflite_depthwise_conv2d_s8 (int8; arguments as
  ``reference.quant.tflite_*``: NHWC int8 in and out, the model's float scales and zero
  points): int8 CONV_2D (OHWI weights, per-channel scales on dimension 0, ``groups`` from
  the weight shape) or DEPTHWISE_CONV_2D (1HW(C*M) weights, scales on dimension 3), weight
  zero points 0, an int32 bias at scale float32(input_scale * weight_scale[o]), the fused
  activation (NONE, RELU, RELU6, RELU_N1_TO_1) in the options, op version 3; padding as
  for float, the PAD op being int8 (it pads with the input zero point). What each path
  computes (properties/test_litert_int8.py): builtin_ref = rounding "double"; xnnpack =
  "float32_rne" with its own activation bounds (ties to even); builtin = "double_half_up"
  for CONV_2D (grouped: "double"), and for DEPTHWISE_CONV_2D "double_half_up" on whole
  blocks of 8 output channels, "double" on the rest.
- tflite_fully_connected_s8: int8 FULLY_CONNECTED, (N, K) x (O, K) weights with one
  per-tensor scale (zero point 0), int32 bias, fused activation, op version 4.
- tflite_avgpool_s8: int8 AVERAGE_POOL_2D (same scale and zero point in and out, SAME or
  VALID only: other pads are Unsupported); builtin and builtin_ref equal the golden op,
  XNNPACK does not take it (Unsupported "not delegated" on the xnnpack path).
- mean (MEAN with an int32 axis tensor, negative axes as given, ``keep_dims``), view
  (RESHAPE with an int32 shape tensor, ``-1`` as given) and permute (TRANSPOSE, perm
  normalised to non-negative as TFLite requires) run on the array's logical NCHW C-order
  data, whatever its memory layout.

Measured with LiteRT 2.3.0 (see tests/test_adapter_litert.py):

- XNNPACK does not take RELU_0_TO_1 (not in its delegate), nor a RESHAPE whose new shape is
  exactly ``[-1]`` (the delegate declines it as a "legacy scalar" reshape): those examples
  are Unsupported on the xnnpack path and run on the other two.
- With Inf/NaN inputs (``--specials``) LiteRT differs from PyTorch: the builtin float conv,
  depthwise, MUL and ADD kernels clamp to the fused-activation range [-FLT_MAX, FLT_MAX]
  even for activation NONE (Inf becomes +-3.4028235e38); builtin MAXIMUM / MINIMUM drop a
  NaN (return the constant); XNNPACK's 1x1 depthwise conv with multiplier 1 turns an Inf at
  pixel p into NaN at pixels p-1 and p-2 of the same channel (and a lone Inf into NaN).

int8 (LiteRT 2.3.0 on x86-64; properties/test_litert_int8.py, strict xfails in
tests/test_adapter_litert.py):

- The builtin (optimized) kernels do not round like TFLite's reference kernels: CONV_2D
  (ruy) ends the requantization with a rounding shift whose ties go toward +inf
  (x = -10 at real scale 1/4 gives -2; builtin_ref gives -3); DEPTHWISE_CONV_2D does the
  same on whole blocks of 8 output channels and rounds the last C*M % 8 channels like the
  reference. Grouped CONV_2D falls back to the reference code.
- XNNPACK requantizes in float32 (ties to even) and computes fused-activation bounds with
  ties to even: RELU6 with output scale 4 and zero point 1 clamps at 2, TFLite at 3.
- FULLY_CONNECTED: builtin_ref does not requantize in fixed point (acc * double real scale,
  rounded half away: x = 1 at scale 1/4 gives 0 where double rounding gives 1); builtin
  takes its multiplier from a float32 real scale, then "double_half_up".
- XNNPACK does not take an int8 AVERAGE_POOL_2D.

``repro_source`` assembles the standalone part of this module (everything from
``_litert`` to ``_run_op`` below, plus the pure helpers it uses from ``reference``) with
``inspect.getsource``, so a repro builds exactly the model the adapter built.
"""
from __future__ import annotations

import inspect
import math

import numpy as np

from adapters import Unsupported
from reference._args import as_float64, pair, padding4
from reference.batchnorm import _stats, fold_batch_norm
from reference.padding import same_padding_2d, tflite_same_padding

try:
    import ai_edge_litert
    import flatbuffers  # noqa: F401
    from ai_edge_litert import schema_py_generated  # noqa: F401
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: F401
    _IMPORT_ERROR = None
except ImportError as _exc:  # reported by unavailable_reason
    ai_edge_litert = None
    _IMPORT_ERROR = _exc

name = "litert"
pip_package = "ai-edge-litert"          # for --backend litert==VERSION (edgediff/pinning.py)
pip_requires = ("flatbuffers",)
version = getattr(ai_edge_litert, "__version__", "unknown") if ai_edge_litert is not None else "not installed"

PATHS = ("xnnpack", "builtin", "builtin_ref")
OPS = ("conv2d", "depthwise_conv2d", "conv2d_batch_norm", "clamp", "mean", "view", "permute",
       "batch_norm")
# int8 ops: arguments as reference.quant's tflite_* golden ops (the model's float scales)
INT8_OPS = ("tflite_conv2d_s8", "tflite_depthwise_conv2d_s8", "tflite_fully_connected_s8",
            "tflite_avgpool_s8")
paths = {op: PATHS for op in OPS + INT8_OPS}


def unavailable_reason():
    if _IMPORT_ERROR is not None:
        return (f"{_IMPORT_ERROR} (pip install ai-edge-litert==2.3.0 flatbuffers)")
    return None


def arithmetic(op, path):
    """All three paths compute float32 throughout (XNNPACK's default is F32; no F16 flag is
    set by the Python interpreter)."""
    from edgediff.tolerance import FLOAT32
    return FLOAT32


# ==== standalone section: copied verbatim into repro scripts (NumPy + ai_edge_litert only) ====

_LITERT = None
# Grouped CONV_2D (filter O x KH x KW x C/groups): LiteRT 2.3 runs it on all three paths
# (XNNPACK takes it too), but the adapter keeps grouped convs other than depthwise
# Unsupported unless this is set.
MAP_GROUPED_CONV = True
_RESOLVERS = {"xnnpack": "AUTO", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
              "builtin_ref": "BUILTIN_REF"}


def _litert():
    """The LiteRT modules, imported once per process (a dict: schema, flatbuffers, ...)."""
    global _LITERT
    if _LITERT is None:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        class AlignedBuffer(schema.BufferT):
            """A BufferT whose bytes start 16-byte aligned, as the TFLite converter writes them."""

            def Pack(self, builder):
                data = None
                if self.data is not None:
                    payload = self.data.tobytes()
                    builder.StartVector(1, len(payload), 16)
                    builder.head -= len(payload)
                    builder.Bytes[builder.head:builder.head + len(payload)] = payload
                    data = builder.EndVector()
                schema.BufferStart(builder)
                if data is not None:
                    schema.BufferAddData(builder, data)
                return schema.BufferEnd(builder)

        _LITERT = {"schema": schema, "flatbuffers": flatbuffers, "Interpreter": Interpreter,
                   "OpResolverType": OpResolverType, "AlignedBuffer": AlignedBuffer}
    return _LITERT


class _Graph:
    """One float32 subgraph under construction: tensors, constant buffers and operators."""

    def __init__(self):
        self.lt = _litert()
        self.tensors, self.data, self.operators, self.codes = [], [], [], []
        self.constants, self.inputs, self.outputs, self.op_names = set(), [], [], []
        self.dtypes, self.versions = [], {}

    def tensor(self, shape, data=None, dtype=np.float32, name=None, quant=None):
        """A tensor (a constant when ``data`` is given). ``quant``: (scales, zero points,
        quantized dimension) for int8 / int32 quantized tensors."""
        s = self.lt["schema"]
        t = s.TensorT()
        # NumPy vectors: the object API packs them with one CreateNumpyVector, not per element
        t.shape = np.array([int(d) for d in shape], np.int32)
        dtype = np.dtype(dtype)
        t.type = {np.dtype(np.int32): s.TensorType.INT32, np.dtype(np.int8): s.TensorType.INT8,
                  np.dtype(np.float32): s.TensorType.FLOAT32}[dtype]
        t.name = name or f"t{len(self.tensors)}"
        if quant is not None:
            scales, zero_points, dim = quant
            q = s.QuantizationParametersT()
            q.scale = np.atleast_1d(np.asarray(scales, np.float32)).reshape(-1)
            q.zeroPoint = np.atleast_1d(np.asarray(zero_points, np.int64)).reshape(-1)
            q.quantizedDimension = int(dim)
            t.quantization = q
        index = len(self.tensors)
        self.dtypes.append(dtype)
        if data is not None:
            arr = np.ascontiguousarray(data, dtype=dtype)
            if tuple(arr.shape) != tuple(t.shape):
                arr = arr.reshape(t.shape)
            self.data.append(arr)
            t.buffer = len(self.data)          # buffer 0 is the empty one
            self.constants.add(index)
        self.tensors.append(t)
        return index

    def op(self, opname, inputs, outputs, options=None, options_kind=None, version=1):
        """Append an operator; ``version`` is the op version a converter writes (int8 kernels
        have higher versions than float ones)."""
        s = self.lt["schema"]
        code = getattr(s.BuiltinOperator, opname)
        if code not in self.codes:
            self.codes.append(code)
        self.versions[code] = max(self.versions.get(code, 1), int(version))
        o = s.OperatorT()
        o.opcodeIndex = self.codes.index(code)
        o.inputs, o.outputs = np.array(inputs, np.int32), np.array(outputs, np.int32)
        if options is not None:
            o.builtinOptionsType = getattr(s.BuiltinOptions, options_kind)
            o.builtinOptions = options
        self.operators.append(o)
        self.op_names.append(opname)

    def finish(self, inputs, outputs) -> bytes:
        s, lt = self.lt["schema"], self.lt
        self.inputs, self.outputs = list(inputs), list(outputs)
        codes = []
        for code in self.codes:
            c = s.OperatorCodeT()
            c.builtinCode = code
            c.deprecatedBuiltinCode = min(code, s.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            c.version = self.versions.get(code, 1)
            codes.append(c)
        sg = s.SubGraphT()
        sg.tensors, sg.operators = self.tensors, self.operators
        sg.inputs, sg.outputs = np.array(self.inputs, np.int32), np.array(self.outputs, np.int32)
        buffers = [lt["AlignedBuffer"]()]
        for arr in self.data:
            b = lt["AlignedBuffer"]()
            b.data = arr
            buffers.append(b)
        m = s.ModelT()
        m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, codes, [sg], buffers
        m.description = "edgediff litert adapter"
        builder = lt["flatbuffers"].Builder(1024 + sum(a.nbytes + 32 for a in self.data))
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _check_delegated(interp, graph):
    """XNNPACK must have taken every op: a DELEGATE node produces the graph outputs and reads
    only graph inputs and constants. Raises Unsupported("not delegated: ...") otherwise."""
    nodes = interp._get_ops_details()
    delegates = [d for d in nodes if d["op_name"] == "DELEGATE"]
    produced, consumed = set(), set()
    for d in delegates:
        produced.update(int(t) for t in d["outputs"])
        consumed.update(int(t) for t in d["inputs"] if t != -1)
    allowed = set(graph.inputs) | graph.constants
    if delegates and set(graph.outputs) <= produced and consumed <= allowed:
        return
    needed = consumed | set(graph.outputs)
    left = [d["op_name"] for d in nodes if d["op_name"] != "DELEGATE"
            and not set(int(t) for t in d["outputs"]) & produced
            and set(int(t) for t in d["outputs"]) & needed]
    left = left or [d["op_name"] for d in nodes if d["op_name"] != "DELEGATE"]
    raise Unsupported(f"not delegated: XNNPACK left {'+'.join(left)} to the builtin kernels")


def _execute(graph, model, path, feed):
    """Load ``model`` in a fresh interpreter for ``path`` and run it on ``feed`` (one array)."""
    lt = _litert()
    if path not in _RESOLVERS:
        raise ValueError(f"unknown litert path {path!r}; known: {sorted(_RESOLVERS)}")
    interp = lt["Interpreter"](
        model_content=model, num_threads=1,
        experimental_op_resolver_type=getattr(lt["OpResolverType"], _RESOLVERS[path]))
    interp.allocate_tensors()                  # the default delegate is applied here
    if path == "xnnpack":
        _check_delegated(interp, graph)
    interp.set_tensor(graph.inputs[0],
                      np.ascontiguousarray(feed, dtype=graph.dtypes[graph.inputs[0]]))
    interp.invoke()
    return interp.get_tensor(graph.outputs[0])


def _conv_model(op, inputs, params):
    """(graph, model bytes, NHWC feed, facts) for conv2d / depthwise_conv2d / conv2d_batch_norm."""
    s = _litert()["schema"]
    x = np.asarray(inputs["x"])
    w = np.asarray(inputs["w"])
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    groups = c if op == "depthwise_conv2d" else int(params.get("groups", 1))
    depthwise = op == "depthwise_conv2d" or (groups != 1 and groups == c and cg == 1)
    if groups != 1 and not depthwise and not MAP_GROUPED_CONV:
        raise Unsupported("grouped conv: only groups=1 (CONV_2D) and groups=C with one input "
                          "channel per group (DEPTHWISE_CONV_2D) are mapped")
    b = inputs.get("b")
    if op == "conv2d_batch_norm":              # folded in float64, rounded once to float32
        w, b = fold_batch_norm(w, b, inputs["running_mean"], inputs["running_var"],
                               inputs.get("weight"), inputs.get("bias"), params.get("eps", 1e-5))
    w = np.asarray(w, dtype=np.float32)
    b = np.zeros(o, np.float32) if b is None else np.asarray(b, dtype=np.float32)
    sh, sw = pair(params.get("stride", 1), "stride", 1)
    dh, dw = pair(params.get("dilation", 1), "dilation", 1)
    top, bottom, left, right = padding4(params.get("padding", 0))
    (st, sb), (sl, sr) = same_padding_2d((h, wd), (kh, kw), (sh, sw), (dh, dw))
    if (top, bottom, left, right) == (0, 0, 0, 0):
        mode, pad = "VALID", None
    elif (top, bottom, left, right) == (st, sb, sl, sr):
        mode, pad = "SAME", None
    else:
        mode, pad = "VALID", (top, bottom, left, right)

    g = _Graph()
    xi = g.tensor((n, h, wd, c), name="x")
    src, ph, pw = xi, h, wd
    if pad is not None:
        ph, pw = h + top + bottom, wd + left + right
        pads = g.tensor((4, 2), [[0, 0], [top, bottom], [left, right], [0, 0]], np.int32, "paddings")
        src = g.tensor((n, ph, pw, c), name="x_padded")
        g.op("PAD", [xi, pads], [src], s.PadOptionsT(), "PadOptions")
    if mode == "SAME":
        oh, ow = -(-h // sh), -(-wd // sw)
    else:
        oh, ow = (ph - dh * (kh - 1) - 1) // sh + 1, (pw - dw * (kw - 1) - 1) // sw + 1
    bi = g.tensor((o,), b, name="bias")
    yi = g.tensor((n, oh, ow, o), name="y")
    if depthwise:
        wi = g.tensor((1, kh, kw, o), w.reshape(o, kh, kw).transpose(1, 2, 0), name="w_1hwo")
        opts = s.DepthwiseConv2DOptionsT()
        opts.depthMultiplier = o // c
        kind, opname = "DepthwiseConv2DOptions", "DEPTHWISE_CONV_2D"
    else:
        wi = g.tensor((o, kh, kw, cg), w.transpose(0, 2, 3, 1), name="w_ohwi")
        opts = s.Conv2DOptionsT()
        kind, opname = "Conv2DOptions", "CONV_2D"
    opts.padding = getattr(s.Padding, mode)
    opts.strideH, opts.strideW = sh, sw
    opts.dilationHFactor, opts.dilationWFactor = dh, dw
    opts.fusedActivationFunction = s.ActivationFunctionType.NONE
    g.op(opname, [src, wi, bi], [yi], opts, kind)
    model = g.finish([xi], [yi])
    facts = {"tflite_ops": "+".join(g.op_names), "tflite_padding": mode}
    return g, model, x.transpose(0, 2, 3, 1), facts


_FUSED = {"none": "NONE", "relu": "RELU", "relu6": "RELU6", "relu_n1_to_1": "RELU_N1_TO_1"}


def _padding_mode(hw, khw, stride, dilation, padding):
    """TFLite padding for explicit pads: ("VALID", None), ("SAME", None), or ("VALID",
    (top, bottom, left, right)) for a PAD op before a VALID conv."""
    pads = padding4(padding)
    (st, sb), (sl, sr) = same_padding_2d(hw, khw, stride, dilation)
    if pads == (0, 0, 0, 0):
        return "VALID", None
    if pads == (st, sb, sl, sr):
        return "SAME", None
    return "VALID", pads


def _conv_s8_model(op, inputs, params):
    """(graph, model bytes, NHWC int8 feed, facts) for tflite_conv2d_s8 /
    tflite_depthwise_conv2d_s8: int8 activations (per-tensor scale and zero point), int8
    weights with per-channel scales (zero points 0) along dimension 0 of OHWI (CONV_2D) or 3
    of 1HW(C*M) (DEPTHWISE_CONV_2D), int32 bias at scale input_scale * weight_scale[o] (zero
    point 0), the fused activation in the options; pads that are neither VALID nor SAME
    become an int8 PAD op (it pads with the input zero point, i.e. real 0)."""
    s = _litert()["schema"]
    x = np.asarray(inputs["x"])
    w = np.asarray(inputs["w"])
    for label, a in (("x", x), ("w", w)):
        if a.ndim != 4 or a.dtype != np.int8:
            raise ValueError(f"{label} must be a 4-D int8 array, got {a.dtype} {a.shape}")
    n, h, wd, c = x.shape
    depthwise = op == "tflite_depthwise_conv2d_s8"
    if depthwise:
        one, kh, kw, o = w.shape
        if one != 1 or o % c:
            raise ValueError(f"w must be (1, KH, KW, C*M) with C={c}, got {w.shape}")
    else:
        o, kh, kw, cg = w.shape
        if c % cg or o % (c // cg):
            raise ValueError(f"w {w.shape} does not fit {c} input channels")
    for name in ("input_scale", "output_scale", "weight_scales"):
        v = np.asarray(params[name], np.float64)
        if v.size == 0 or not (np.isfinite(v).all() and (v > 0).all()):
            raise ValueError(f"{name} must be positive and finite, got {params[name]!r}")
    for name in ("input_zero_point", "output_zero_point"):
        v = params[name]
        if np.ndim(v) or int(v) != v or not -128 <= int(v) <= 127:
            raise ValueError(f"{name} must be an integer in [-128, 127], got {v!r}")
    in_scale, in_zp = np.float32(params["input_scale"]), int(params["input_zero_point"])
    out_scale, out_zp = np.float32(params["output_scale"]), int(params["output_zero_point"])
    w_scales = np.asarray(params["weight_scales"], np.float32).reshape(-1)
    if w_scales.shape != (o,):
        raise ValueError(f"weight_scales must have {o} entries (one per output channel), "
                         f"got {w_scales.shape}")
    activation = params.get("activation", "none")
    if activation not in _FUSED:
        raise ValueError(f"activation must be one of {sorted(_FUSED)}, got {activation!r}")
    b = inputs.get("b")
    b = np.zeros(o, np.int32) if b is None else np.asarray(b)
    if b.shape != (o,) or b.dtype.kind not in "iu":
        raise ValueError(f"bias must be int32 of shape ({o},), got {b.dtype} {b.shape}")
    sh, sw = pair(params.get("stride", 1), "stride", 1)
    dh, dw = pair(params.get("dilation", 1), "dilation", 1)
    mode, pad = _padding_mode((h, wd), (kh, kw), (sh, sw), (dh, dw), params.get("padding", 0))
    x_q = (in_scale, in_zp, 0)

    g = _Graph()
    xi = g.tensor((n, h, wd, c), dtype=np.int8, name="x", quant=x_q)
    src, ph, pw = xi, h, wd
    if pad is not None:
        top, bottom, left, right = pad
        ph, pw = h + top + bottom, wd + left + right
        pads = g.tensor((4, 2), [[0, 0], [top, bottom], [left, right], [0, 0]], np.int32, "paddings")
        src = g.tensor((n, ph, pw, c), dtype=np.int8, name="x_padded", quant=x_q)
        g.op("PAD", [xi, pads], [src], s.PadOptionsT(), "PadOptions", version=2)
    if mode == "SAME":
        oh, ow = -(-h // sh), -(-wd // sw)
    else:
        oh, ow = (ph - dh * (kh - 1) - 1) // sh + 1, (pw - dw * (kw - 1) - 1) // sw + 1
    # the bias scale a converter writes: float32(input_scale * weight_scale), per channel
    b_scales = (np.float64(in_scale) * w_scales.astype(np.float64)).astype(np.float32)
    bi = g.tensor((o,), b.astype(np.int32), np.int32, "bias", quant=(b_scales, np.zeros(o, int), 0))
    yi = g.tensor((n, oh, ow, o), dtype=np.int8, name="y", quant=(out_scale, out_zp, 0))
    w_dim = 3 if depthwise else 0
    wi = g.tensor(w.shape, w, np.int8, "w_1hwo" if depthwise else "w_ohwi",
                  quant=(w_scales, np.zeros(o, int), w_dim))
    if depthwise:
        opts = s.DepthwiseConv2DOptionsT()
        opts.depthMultiplier = o // c
        kind, opname = "DepthwiseConv2DOptions", "DEPTHWISE_CONV_2D"
    else:
        opts = s.Conv2DOptionsT()
        kind, opname = "Conv2DOptions", "CONV_2D"
    opts.padding = getattr(s.Padding, mode)
    opts.strideH, opts.strideW = sh, sw
    opts.dilationHFactor, opts.dilationWFactor = dh, dw
    opts.fusedActivationFunction = getattr(s.ActivationFunctionType, _FUSED[activation])
    g.op(opname, [src, wi, bi], [yi], opts, kind, version=3)
    model = g.finish([xi], [yi])
    facts = {"tflite_ops": "+".join(g.op_names), "tflite_padding": mode}
    return g, model, x, facts


def _fully_connected_s8_model(inputs, params):
    """(graph, model bytes, facts) for tflite_fully_connected_s8: int8 FULLY_CONNECTED with
    (N, K) input, (O, K) weights (per-tensor scale, zero point 0), int32 bias at
    input_scale * weight_scale, the fused activation, op version 4."""
    s = _litert()["schema"]
    x, w = np.asarray(inputs["x"]), np.asarray(inputs["w"])
    for label, a in (("x", x), ("w", w)):
        if a.ndim != 2 or a.dtype != np.int8:
            raise ValueError(f"{label} must be a 2-D int8 array, got {a.dtype} {a.shape}")
    n, k = x.shape
    o = w.shape[0]
    if w.shape[1] != k:
        raise ValueError(f"x {x.shape} and w {w.shape} disagree on K")
    for name in ("input_scale", "output_scale", "weight_scale"):
        v = params[name]
        if np.ndim(v) or not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite float, got {v!r}")
    for name in ("input_zero_point", "output_zero_point"):
        v = params[name]
        if np.ndim(v) or int(v) != v or not -128 <= int(v) <= 127:
            raise ValueError(f"{name} must be an integer in [-128, 127], got {v!r}")
    activation = params.get("activation", "none")
    if activation not in _FUSED:
        raise ValueError(f"activation must be one of {sorted(_FUSED)}, got {activation!r}")
    b = inputs.get("b")
    b = np.zeros(o, np.int32) if b is None else np.asarray(b)
    if b.shape != (o,) or b.dtype.kind not in "iu":
        raise ValueError(f"bias must be int32 of shape ({o},), got {b.dtype} {b.shape}")
    in_scale, w_scale = np.float32(params["input_scale"]), np.float32(params["weight_scale"])
    g = _Graph()
    xi = g.tensor((n, k), dtype=np.int8, name="x",
                  quant=(in_scale, int(params["input_zero_point"]), 0))
    wi = g.tensor((o, k), w, np.int8, "w_ok", quant=(w_scale, 0, 0))
    b_scale = np.float32(np.float64(in_scale) * np.float64(w_scale))
    bi = g.tensor((o,), b.astype(np.int32), np.int32, "bias", quant=(b_scale, 0, 0))
    yi = g.tensor((n, o), dtype=np.int8, name="y",
                  quant=(np.float32(params["output_scale"]), int(params["output_zero_point"]), 0))
    opts = s.FullyConnectedOptionsT()
    opts.fusedActivationFunction = getattr(s.ActivationFunctionType, _FUSED[activation])
    g.op("FULLY_CONNECTED", [xi, wi, bi], [yi], opts, "FullyConnectedOptions", version=4)
    return g, g.finish([xi], [yi]), {"tflite_ops": "FULLY_CONNECTED", "tflite_padding": "n/a"}


def _avgpool_s8_model(inputs, params):
    """(graph, model bytes, facts) for tflite_avgpool_s8: int8 AVERAGE_POOL_2D, input and
    output with the same scale and zero point. TFLite averages over the in-bounds elements
    of a window only for SAME padding; other explicit pads are Unsupported (a PAD op would
    put zero points into the average)."""
    s = _litert()["schema"]
    x = np.asarray(inputs["x"])
    if x.ndim != 4 or x.dtype != np.int8:
        raise ValueError(f"x must be a 4-D int8 array, got {x.dtype} {x.shape}")
    n, h, wd, c = x.shape
    kh, kw = pair(params["kernel"], "kernel", 1)
    sh, sw = pair(params["stride"], "stride", 1)
    scale, zp = params.get("scale", 1.0), params.get("zero_point", 0)
    if not (np.ndim(scale) == 0 and np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite float, got {scale!r}")
    if np.ndim(zp) or int(zp) != zp or not -128 <= int(zp) <= 127:
        raise ValueError(f"zero_point must be an integer in [-128, 127], got {zp!r}")
    activation = params.get("activation", "none")
    if activation not in _FUSED:
        raise ValueError(f"activation must be one of {sorted(_FUSED)}, got {activation!r}")
    mode, pad = _padding_mode((h, wd), (kh, kw), (sh, sw), (1, 1), params.get("padding", 0))
    if pad is not None:
        raise Unsupported("AVERAGE_POOL_2D has only SAME and VALID padding (a PAD op would "
                          "count the padded zero points in the average)")
    if mode == "SAME":
        oh, ow = -(-h // sh), -(-wd // sw)
    else:
        if kh > h or kw > wd:
            raise ValueError(f"kernel {(kh, kw)} is larger than the input {(h, wd)}")
        oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    q = (np.float32(scale), int(zp), 0)
    g = _Graph()
    xi = g.tensor((n, h, wd, c), dtype=np.int8, name="x", quant=q)
    yi = g.tensor((n, oh, ow, c), dtype=np.int8, name="y", quant=q)
    opts = s.Pool2DOptionsT()
    opts.padding = getattr(s.Padding, mode)
    opts.strideH, opts.strideW = sh, sw
    opts.filterHeight, opts.filterWidth = kh, kw
    opts.fusedActivationFunction = getattr(s.ActivationFunctionType, _FUSED[activation])
    g.op("AVERAGE_POOL_2D", [xi], [yi], opts, "Pool2DOptions", version=2)
    return g, g.finish([xi], [yi]), {"tflite_ops": "AVERAGE_POOL_2D", "tflite_padding": mode}


def _clamp_model(x, lo, hi):
    s = _litert()["schema"]
    g = _Graph()
    shape = x.shape
    xi = g.tensor(shape, name="x")
    yi = g.tensor(shape, name="y")
    fused = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, 1.0): "RELU_0_TO_1",
             (0.0, None): "RELU"}
    key = (None if lo is None else float(lo), None if hi is None else float(hi))
    if key in fused and hasattr(s.BuiltinOperator, fused[key]):
        g.op(fused[key], [xi], [yi])
    else:
        src = xi
        if lo is not None:
            lo_i = g.tensor((), np.float32(lo), name="min")
            mid = g.tensor(shape, name="x_max") if hi is not None else yi
            g.op("MAXIMUM", [src, lo_i], [mid])
            src = mid
        if hi is not None:
            hi_i = g.tensor((), np.float32(hi), name="max")
            g.op("MINIMUM", [src, hi_i], [yi])
    return g, g.finish([xi], [yi])


def _mean_model(x, dim, keepdim):
    s = _litert()["schema"]
    rank = x.ndim
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        axes = list(range(rank))
    else:
        axes = [int(d) for d in ((dim,) if np.ndim(dim) == 0 else dim)]
    reduced = {a % rank for a in axes}
    out = [1 if i in reduced else n for i, n in enumerate(x.shape) if keepdim or i not in reduced]
    g = _Graph()
    xi = g.tensor(x.shape, name="x")
    ai = g.tensor((len(axes),), axes, np.int32, "axis")
    yi = g.tensor(out, name="y")
    opts = s.ReducerOptionsT()
    opts.keepDims = bool(keepdim)
    g.op("MEAN", [xi, ai], [yi], opts, "ReducerOptions")
    return g, g.finish([xi], [yi])


def _reshape_model(x, shape):
    s = _litert()["schema"]
    shape = [int(d) for d in shape]
    known = math.prod(d for d in shape if d != -1)
    out = [x.size // known if d == -1 else d for d in shape]
    g = _Graph()
    xi = g.tensor(x.shape, name="x")
    si = g.tensor((len(shape),), shape, np.int32, "shape")
    yi = g.tensor(out, name="y")
    g.op("RESHAPE", [xi, si], [yi], s.ReshapeOptionsT(), "ReshapeOptions")
    return g, g.finish([xi], [yi])


def _transpose_model(x, dims):
    s = _litert()["schema"]
    perm = [int(d) % x.ndim for d in dims]
    g = _Graph()
    xi = g.tensor(x.shape, name="x")
    pi = g.tensor((len(perm),), perm, np.int32, "perm")
    yi = g.tensor([x.shape[p] for p in perm], name="y")
    g.op("TRANSPOSE", [xi, pi], [yi], s.TransposeOptionsT(), "TransposeOptions")
    return g, g.finish([xi], [yi])


def _batch_norm_model(shape_last, scale, shift):
    s = _litert()["schema"]
    g = _Graph()
    xi = g.tensor(shape_last, name="x")
    si = g.tensor(scale.shape, scale, name="scale")
    bi = g.tensor(shift.shape, shift, name="shift")
    mi = g.tensor(shape_last, name="x_scaled")
    yi = g.tensor(shape_last, name="y")
    g.op("MUL", [xi, si], [mi], s.MulOptionsT(), "MulOptions")
    g.op("ADD", [mi, bi], [yi], s.AddOptionsT(), "AddOptions")
    return g, g.finish([xi], [yi])


def _run_op(op, path, inputs, params):
    """Build ``op``'s model, run it through ``path``; returns (NCHW result, facts)."""
    x = np.asarray(inputs["x"])
    if op in ("tflite_conv2d_s8", "tflite_depthwise_conv2d_s8"):    # int8, NHWC in and out
        g, model, feed, facts = _conv_s8_model(op, inputs, params)
        return _execute(g, model, path, feed), facts
    if op == "tflite_fully_connected_s8":
        g, model, facts = _fully_connected_s8_model(inputs, params)
        return _execute(g, model, path, x), facts
    if op == "tflite_avgpool_s8":
        g, model, facts = _avgpool_s8_model(inputs, params)
        return _execute(g, model, path, x), facts
    if op in ("conv2d", "depthwise_conv2d", "conv2d_batch_norm"):
        g, model, feed, facts = _conv_model(op, inputs, params)
        return _execute(g, model, path, feed).transpose(0, 3, 1, 2), facts
    if op == "batch_norm":
        c = x.shape[1]
        f32 = np.float32
        var = np.asarray(inputs["running_var"], f32)
        weight = inputs.get("weight")
        weight = np.ones(c, f32) if weight is None else np.asarray(weight, f32)
        bias = inputs.get("bias")
        bias = np.zeros(c, f32) if bias is None else np.asarray(bias, f32)
        scale = weight / np.sqrt(var + f32(params.get("eps", 1e-5)))
        shift = bias - np.asarray(inputs["running_mean"], f32) * scale
        last = np.moveaxis(x, 1, -1)                    # channels last, as TFLite lays it out
        g, model = _batch_norm_model(last.shape, scale, shift)
        return np.moveaxis(_execute(g, model, path, last), -1, 1), {"tflite_ops": "MUL+ADD"}
    data = np.ascontiguousarray(x, dtype=np.float32)  # logical (NCHW) C-order data
    if op == "clamp":
        g, model = _clamp_model(data, params.get("min"), params.get("max"))
    elif op == "mean":
        g, model = _mean_model(data, params.get("dim"), params.get("keepdim", False))
    elif op == "view":
        g, model = _reshape_model(data, params["shape"])
    elif op == "permute":
        g, model = _transpose_model(data, params["dims"])
    else:
        raise Unsupported(f"litert adapter has no {op}")
    return _execute(g, model, path, data), {"tflite_ops": "+".join(g.op_names)}

# ==== end of the standalone section ==========================================================


def _call(op, path, arrays, params):
    if path not in PATHS:
        raise ValueError(f"unknown litert path {path!r}; known: {PATHS}")
    return _run_op(op, path, {k: v for k, v in arrays.items() if v is not None}, params)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, path="xnnpack"):
    return _call("conv2d", path, {"x": x, "w": w, "b": b},
                 {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups})


def depthwise_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, path="xnnpack"):
    return _call("depthwise_conv2d", path, {"x": x, "w": w, "b": b},
                 {"stride": stride, "padding": padding, "dilation": dilation})


def conv2d_batch_norm(x, w, running_mean, running_var, b=None, weight=None, bias=None,
                      stride=1, padding=0, dilation=1, groups=1, eps=1e-5, path="xnnpack"):
    arrays = {"x": x, "w": w, "b": b, "running_mean": running_mean, "running_var": running_var,
              "weight": weight, "bias": bias}
    return _call("conv2d_batch_norm", path, arrays,
                 {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
                  "eps": eps})


def clamp(x, min=None, max=None, path="xnnpack"):  # noqa: A002 - PyTorch's parameter names
    return _call("clamp", path, {"x": x}, {"min": min, "max": max})


def mean(x, dim=None, keepdim=False, path="xnnpack"):
    return _call("mean", path, {"x": x}, {"dim": dim, "keepdim": keepdim})


def view(x, shape, path="xnnpack"):
    return _call("view", path, {"x": x}, {"shape": shape})


def permute(x, dims, path="xnnpack"):
    return _call("permute", path, {"x": x}, {"dims": dims})


def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5, path="xnnpack"):
    arrays = {"x": x, "running_mean": running_mean, "running_var": running_var,
              "weight": weight, "bias": bias}
    return _call("batch_norm", path, arrays, {"eps": eps})


def tflite_conv2d_s8(x, w, bias, input_scale, input_zero_point, weight_scales, output_scale,
                     output_zero_point, activation="none", stride=1, padding=0, dilation=1,
                     groups=1, path="xnnpack"):
    """int8 CONV_2D, arguments as ``reference.quant.tflite_conv2d_s8`` (NHWC int8 in and out).
    ``groups`` must equal C / (w's input channels), as in the golden op."""
    cg = np.shape(w)[3] if np.ndim(w) == 4 else None
    if cg is not None and np.ndim(x) == 4 and int(groups) * cg != np.shape(x)[3]:
        raise ValueError(f"groups={groups} does not fit input channels {np.shape(x)[3]}, "
                         f"weight {np.shape(w)}")
    return _call("tflite_conv2d_s8", path, {"x": x, "w": w, "b": bias},
                 {"input_scale": input_scale, "input_zero_point": input_zero_point,
                  "weight_scales": weight_scales, "output_scale": output_scale,
                  "output_zero_point": output_zero_point, "activation": activation,
                  "stride": stride, "padding": padding, "dilation": dilation})


def tflite_depthwise_conv2d_s8(x, w, bias, input_scale, input_zero_point, weight_scales,
                               output_scale, output_zero_point, activation="none", stride=1,
                               padding=0, dilation=1, depth_multiplier=None, path="xnnpack"):
    """int8 DEPTHWISE_CONV_2D, arguments as ``reference.quant.tflite_depthwise_conv2d_s8``."""
    if depth_multiplier is not None and np.ndim(w) == 4 and np.ndim(x) == 4 \
            and int(depth_multiplier) * np.shape(x)[3] != np.shape(w)[3]:
        raise ValueError(f"depth_multiplier={depth_multiplier} does not fit weight "
                         f"{np.shape(w)} and {np.shape(x)[3]} input channels")
    return _call("tflite_depthwise_conv2d_s8", path, {"x": x, "w": w, "b": bias},
                 {"input_scale": input_scale, "input_zero_point": input_zero_point,
                  "weight_scales": weight_scales, "output_scale": output_scale,
                  "output_zero_point": output_zero_point, "activation": activation,
                  "stride": stride, "padding": padding, "dilation": dilation})


def tflite_fully_connected_s8(x, w, bias, input_scale, input_zero_point, weight_scale,
                              output_scale, output_zero_point, activation="none",
                              path="xnnpack"):
    """int8 FULLY_CONNECTED, arguments as ``reference.quant.tflite_fully_connected_s8``."""
    return _call("tflite_fully_connected_s8", path, {"x": x, "w": w, "b": bias},
                 {"input_scale": input_scale, "input_zero_point": input_zero_point,
                  "weight_scale": weight_scale, "output_scale": output_scale,
                  "output_zero_point": output_zero_point, "activation": activation})


def tflite_avgpool_s8(x, kernel, stride, padding=0, scale=1.0, zero_point=0, activation="none",
                      path="xnnpack"):
    """int8 AVERAGE_POOL_2D, arguments as ``reference.quant.tflite_avgpool_s8``. XNNPACK
    (LiteRT 2.3.0) does not take an int8 average pool: Unsupported("not delegated") there."""
    return _call("tflite_avgpool_s8", path, {"x": x},
                 {"kernel": kernel, "stride": stride, "padding": padding, "scale": scale,
                  "zero_point": zero_point, "activation": activation})


# ---- standalone repro source --------------------------------------------------------------

_STANDALONE = (as_float64, pair, padding4, _stats, fold_batch_norm, tflite_same_padding,
               same_padding_2d, _litert, _Graph, _check_delegated, _execute, _conv_model,
               _padding_mode, _conv_s8_model, _fully_connected_s8_model, _avgpool_s8_model,
               _clamp_model, _mean_model, _reshape_model, _transpose_model, _batch_norm_model,
               _run_op)

_REPRO_HEAD = '''import math

import numpy as np


class Unsupported(Exception):
    """This configuration has no LiteRT model, or (xnnpack) XNNPACK did not take the op."""


_LITERT = None
_FUSED = {fused!r}
MAP_GROUPED_CONV = {grouped!r}
_RESOLVERS = {resolvers!r}
'''

_REPRO_TAIL = '''

OP, PATH = {op!r}, {path!r}


def run(inputs, params):
    """Build the one-op .tflite model and run it through LiteRT ({path}); NCHW result."""
    return _run_op(OP, PATH, inputs, params)[0]
'''

_SOURCE_CACHE = {}


def repro_source(op, path):
    if "body" not in _SOURCE_CACHE:
        _SOURCE_CACHE["body"] = "\n\n".join(inspect.getsource(f).rstrip() + "\n" for f in _STANDALONE)
    head = _REPRO_HEAD.format(grouped=MAP_GROUPED_CONV, resolvers=_RESOLVERS, fused=_FUSED)
    return head + "\n\n" + _SOURCE_CACHE["body"] + _REPRO_TAIL.format(op=op, path=path)


# Graphs (edgediff.graph): one multi-op .tflite model per Graph; see adapters/_litert_graph.py.
from adapters._litert_graph import graph_paths, run_graph  # noqa: E402,F401
