"""Machinery shared by the ExecuTorch adapters (``xnnpack``, ``executorch_portable``).

Every op runs through the real ExecuTorch stack: the op becomes a small ``torch.nn.Module``
whose weights are parameters and buffers (not graph inputs: ``F.conv2d(x, w)`` with ``w`` an
input is not delegated), ``torch.export.export`` traces it with an example input in the case's
memory format, ``executorch.exir.to_edge_transform_and_lower`` lowers it (with the
``XnnpackPartitioner`` or without a partitioner, so portable kernels run),
``.to_executorch()`` serialises it, and ``executorch.runtime.Runtime`` loads and executes the
program in this process.

Two parts:

1. Standalone helpers (``build_module`` ... ``execute_program``) that use only NumPy, torch and
   executorch. ``repro_source`` pastes their source into a finding's ``repro.py``.
2. ``Lowerer``: the per-backend program cache, the delegation check and the facts
   (delegated nodes, kernels that ran, read from an ETDump on a program's first run).

Caching. Lowering costs ~0.3-0.9 s; executing a loaded program ~0.1 ms. Programs are cached
by structure (op, params, shapes, which inputs exist, layout). Weight values change from one
example to the next, so a structural template is lowered once with *sentinel* values in every
float parameter/buffer (distinct float32 bit patterns) and each element's byte offset in the
serialised program is located; an example then writes its own values at those offsets and
loads the patched program (no relowering). This is the exact program the lowering would
produce for those values whenever the lowering copies weights verbatim (possibly permuted, as
XNNPACK stores conv weights OHWI). When it computes on them instead - XNNPACK folds a batch
norm into the preceding conv - sentinels are not found verbatim, and that structure is lowered
with each example's real values (cached by content hash), so the folding pass itself is what
gets tested.

int8. The int8 paths (``Lowerer(quantization="int8_per_tensor" | "int8_per_channel")``) put the
same module through the pt2e flow first: export, ``prepare_pt2e`` with the XNNPACKQuantizer
(symmetric int8 weights per tensor or per output channel, affine int8 activations), calibration
on the example's own input with min/max observers, ``convert_pt2e``. The converted graph (the
fake-quantized eager graph) is lowered like a float one: XNNPACK runs it as QS8/QC8 kernels,
the portable build as quantize/dequantize kernels around a float convolution (that needs
``import executorch.kernels.quantized``). Scales depend on the values, so every int8 example is
lowered (content cache only). Facts: the scales and zero points, and
``max_lsb_vs_fake_quant``, the program's largest difference from the converted graph run in
torch, in output quantization steps.

Speed. ``setup()`` (on first use) memoises torch.export's scan for CompositeImplicitAutograd ops,
replaces its per-call override of ~2000 ops by a replica without ``py_impl``'s overhead (only for
the exact torch sources it was written from; ``EDGEDIFF_ET_NO_SPEEDUPS=1`` disables both), and
``gc.freeze()``s the imported stack. Together they about halve a lowering's CPU time (measured
1.44 -> 0.71 s per conv lowering). A new structure still costs one lowering.
"""
from __future__ import annotations

import functools
import gc
import hashlib
import importlib.metadata
import os
import tempfile
import warnings
from collections import OrderedDict

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from executorch.exir import to_edge_transform_and_lower  # noqa: F401  (availability check)
    from executorch.runtime import Runtime  # noqa: F401
    _IMPORT_ERROR = None
except Exception as exc:  # reported by unavailable_reason
    torch = F = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

try:
    EXECUTORCH_VERSION = importlib.metadata.version("executorch")
except importlib.metadata.PackageNotFoundError:
    EXECUTORCH_VERSION = "not installed"


def unavailable_reason(need_xnnpack: bool = False):
    if _IMPORT_ERROR is not None:
        return (f"executorch/torch not importable ({_IMPORT_ERROR}); "
                "pip install torch==2.13.0 executorch==1.5.1")
    if need_xnnpack:
        try:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
            from executorch.runtime import Runtime
            if not Runtime.get().backend_registry.is_available("XnnpackBackend"):
                return "the executorch runtime has no XnnpackBackend registered"
        except Exception as exc:
            return f"XNNPACK backend not usable: {type(exc).__name__}: {exc}"
    return None


# =================================================================================================
# Standalone part: NumPy + torch + executorch only. ``repro_source`` copies it into repro.py.
# =================================================================================================

def is_channels_last(a) -> bool:
    """A 4-D NumPy array whose strides are exactly NHWC-contiguous (edgediff's channels_last)."""
    a = np.asarray(a)
    if a.ndim != 4:
        return False
    n, c, h, w = a.shape
    s = a.itemsize
    nhwc = (h * w * c * s, s, w * c * s, c * s)
    nchw = (c * h * w * s, h * w * s, w * s, s)
    return a.strides == nhwc and a.strides != nchw


def to_torch_input(a):
    """float32 tensor with canonical strides: channels_last for NHWC-strided arrays."""
    a = np.asarray(a)
    channels_last = is_channels_last(a)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if channels_last:
        # empty_like gives canonical channels_last strides even with size-1 dims, so the
        # exported input's dim order and the runtime input's agree.
        t = torch.empty_like(t, memory_format=torch.channels_last).copy_(t)
    return t


def conv_layer(x_shape, w, b, stride, padding, dilation, groups):
    """(explicit pad or None, nn.Conv2d holding w and b). Asymmetric padding becomes an F.pad."""
    pad = None
    if np.ndim(padding) == 2:
        (top, bottom), (left, right) = (tuple(int(v) for v in p) for p in padding)
        if top == bottom and left == right:
            padding = (top, left)
        else:
            pad, padding = (left, right, top, bottom), 0
    o, cg, kh, kw = w.shape
    conv = torch.nn.Conv2d(cg * groups, o, (kh, kw), stride=stride, padding=padding,
                           dilation=dilation, groups=groups, bias=b is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
        if b is not None:
            conv.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))
    return pad, conv


def batch_norm_layer(c, rank, running_mean, running_var, weight, bias, eps):
    """nn.BatchNorm{1,2}d in eval mode with the given statistics (affine when weight or bias is
    given; the missing one of the two is the identity, 1 or 0)."""
    affine = weight is not None or bias is not None
    cls = torch.nn.BatchNorm2d if rank == 4 else torch.nn.BatchNorm1d
    bn = cls(c, eps=eps, affine=affine, track_running_stats=True)
    with torch.no_grad():
        bn.running_mean.copy_(torch.from_numpy(np.asarray(running_mean, np.float32)))
        bn.running_var.copy_(torch.from_numpy(np.asarray(running_var, np.float32)))
        if affine:
            bn.weight.copy_(torch.from_numpy(np.asarray(weight, np.float32)) if weight is not None
                            else torch.ones(c))
            bn.bias.copy_(torch.from_numpy(np.asarray(bias, np.float32)) if bias is not None
                          else torch.zeros(c))
    return bn.eval()


class ConvModule(torch.nn.Module if torch is not None else object):
    """[F.pad] -> nn.Conv2d -> [nn.BatchNorm2d (eval)]."""

    def __init__(self, pad, conv, bn=None):
        super().__init__()
        self.pad, self.conv, self.bn = pad, conv, bn

    def forward(self, x):
        if self.pad is not None:
            x = F.pad(x, self.pad)
        y = self.conv(x)
        return self.bn(y) if self.bn is not None else y


class FunctionModule(torch.nn.Module if torch is not None else object):
    """A weightless op: ``fn(x)``; ``form`` names the PyTorch call, for facts and repros."""

    def __init__(self, fn, form):
        super().__init__()
        self.fn, self.form = fn, form

    def forward(self, x):
        return self.fn(x)


class BatchNormModule(torch.nn.Module if torch is not None else object):
    def __init__(self, bn):
        super().__init__()
        self.bn = bn

    def forward(self, x):
        return self.bn(x)


def clamp_function(lo, hi):
    """ReLU6 and hardtanh as users write them; every other pair through torch.clamp."""
    if lo == 0.0 and hi == 6.0:
        return (lambda x: F.relu6(x)), "F.relu6(x)"
    if lo == -1.0 and hi == 1.0:
        return (lambda x: F.hardtanh(x)), "F.hardtanh(x)"
    return (lambda x: torch.clamp(x, min=lo, max=hi)), f"torch.clamp(x, min={lo!r}, max={hi!r})"


def build_module(op, inputs, params):
    """(module in eval mode, example input tensor) computing ``op`` as edgediff defines it."""
    x = inputs["x"]
    p = dict(params)
    if op in ("conv2d", "depthwise_conv2d", "conv2d_batch_norm"):
        groups = x.shape[1] if op == "depthwise_conv2d" else p.get("groups", 1)
        pad, conv = conv_layer(x.shape, inputs["w"], inputs.get("b"), p.get("stride", 1),
                               p.get("padding", 0), p.get("dilation", 1), groups)
        bn = None
        if op == "conv2d_batch_norm":
            bn = batch_norm_layer(inputs["w"].shape[0], 4, inputs["running_mean"],
                                  inputs["running_var"], inputs.get("weight"), inputs.get("bias"),
                                  p.get("eps", 1e-5))
        module = ConvModule(pad, conv, bn)
    elif op == "batch_norm":
        module = BatchNormModule(batch_norm_layer(x.shape[1], x.ndim, inputs["running_mean"],
                                                  inputs["running_var"], inputs.get("weight"),
                                                  inputs.get("bias"), p.get("eps", 1e-5)))
    elif op == "clamp":
        module = FunctionModule(*clamp_function(p.get("min"), p.get("max")))
    elif op == "mean":
        dim, keepdim = p.get("dim"), bool(p.get("keepdim", False))
        if dim is None and not keepdim:
            module = FunctionModule(lambda t: torch.mean(t), "torch.mean(x)")
        else:
            dim = dim if dim is None or np.ndim(dim) == 0 else list(dim)
            module = FunctionModule(lambda t: torch.mean(t, dim=dim, keepdim=keepdim),
                                    f"torch.mean(x, dim={dim!r}, keepdim={keepdim})")
    elif op == "view":
        shape = tuple(int(s) for s in p["shape"])
        module = FunctionModule(lambda t: t.contiguous().view(shape), f"x.contiguous().view({shape})")
    elif op == "permute":
        dims = tuple(int(d) for d in p["dims"])
        module = FunctionModule(lambda t: t.permute(*dims), f"x.permute{dims}")
    else:
        raise ValueError(f"no ExecuTorch module for op {op!r}")
    return module.eval(), to_torch_input(x)


def lower_to_edge(module, x, xnnpack):
    """Export with ``x`` (its memory format included) and lower: with the XnnpackPartitioner,
    or without a partitioner (every node then runs as a portable kernel)."""
    from executorch.exir import to_edge_transform_and_lower
    partitioner = None
    if xnnpack:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        partitioner = [XnnpackPartitioner()]
    with torch.no_grad():
        exported = torch.export.export(module, (x,))
    return to_edge_transform_and_lower(exported, partitioner=partitioner)


def not_delegated(edge):
    """Compute nodes the partitioner left outside every delegate."""
    gm = edge.exported_program().graph_module
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function" and
            getattr(n.target, "__name__", "") not in ("executorch_call_delegate", "getitem")]


def quantization_config(per_channel, observer="minmax"):
    """XNNPACKQuantizer's symmetric config (int8 weights in [-127, 127], per tensor or per output
    channel; int8 affine activations). ``observer="minmax"`` calibrates activations on their
    min and max (every calibrated value lies inside the range); ``"histogram"`` keeps the
    config's own HistogramObserver, which may clip outliers."""
    import dataclasses
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        get_symmetric_quantization_config)
    config = get_symmetric_quantization_config(is_per_channel=per_channel)
    if observer == "minmax":
        from torchao.quantization.pt2e import MinMaxObserver
        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    elif observer != "histogram":
        raise ValueError(f"observer must be 'minmax' or 'histogram', got {observer!r}")
    return config


def ptq_quantizer(config):
    """An XNNPACKQuantizer for post-training quantization. prepare_pt2e folds batch norms into
    their convs before it annotates, so the QAT-only conv-BN patterns (``is_qat``) can never
    match; the stock quantizer still builds them (4 annotators exporting 12 pattern graphs,
    ~2.5 s per prepare). They are left out here; the annotation is otherwise the stock one."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    quantizer = XNNPACKQuantizer().set_global(config)
    quantizer.SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if not p.is_qat]
    return quantizer


def quantize_module(module, x, quantization, observer="minmax", quantizer=None):
    """The pt2e flow: export, ``prepare_pt2e`` with the XNNPACKQuantizer, calibrate on ``x``
    itself, ``convert_pt2e``. Returns the converted graph module: the fake-quantized eager graph
    (quantize/dequantize ops around float ops), which is also what gets lowered.
    ``quantization``: "int8_per_tensor" or "int8_per_channel" (the weights' scales)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    if quantization not in ("int8_per_tensor", "int8_per_channel"):
        raise ValueError(f"unknown quantization {quantization!r}")
    if quantizer is None:
        config = quantization_config(quantization == "int8_per_channel", observer)
        quantizer = ptq_quantizer(config)
    with torch.no_grad():
        graph = torch.export.export(module, (x,)).module()     # no .eval() on it (pt2e)
        prepared = prepare_pt2e(graph, quantizer)
        prepared(x)
        return convert_pt2e(prepared)


def execute_program(buffer, x, etdump_path=None):
    """Load the serialised program in this process and run ``forward(x)``; returns the output
    as an NCHW NumPy array. With ``etdump_path`` an ETDump of the run is written there."""
    from executorch.runtime import Runtime
    program = Runtime.get().load_program(bytes(buffer), enable_etdump=etdump_path is not None,
                                         debug_buffer_size=0)
    outputs = program.load_method("forward").execute([x])
    if etdump_path is not None:
        program.write_etdump_result_to_file(etdump_path, etdump_path + ".debug")
    return outputs[0].detach().contiguous().numpy().copy()


# =================================================================================================
# Cached lowering, delegation check and facts (edgediff side).
# =================================================================================================

STANDALONE = (is_channels_last, to_torch_input, conv_layer, batch_norm_layer, ConvModule,
              FunctionModule, BatchNormModule, clamp_function, build_module, lower_to_edge,
              not_delegated, quantization_config, ptq_quantizer, quantize_module, execute_program)

_FLOAT_KINDS = "f"
_SETUP_DONE = False


def setup() -> None:
    """One-time process setup that makes lowering cheaper (see ``speedups``)."""
    global _SETUP_DONE
    if _SETUP_DONE:
        return
    _SETUP_DONE = True
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"copyreg")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    if os.environ.get("EDGEDIFF_ET_NO_SPEEDUPS") != "1":
        install_speedups()
    # Import the lowering stack now, then move everything alive into the permanent GC
    # generation: full collections during lowering otherwise rescan it (~200 ms spikes).
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
    from executorch.exir import to_edge_transform_and_lower  # noqa: F401
    from executorch.runtime import Runtime
    Runtime.get()
    gc.collect()
    gc.freeze()


def install_speedups() -> None:
    """Memoise torch.export's scan of the dispatcher for CompositeImplicitAutograd ops.

    ``run_decompositions`` (called 2-3 times per lowering) rebuilds this set from scratch every
    time (~0.1 s each; torch does not cache it because a custom op registered later would add
    entries). The memo is keyed by the namespaces and the number of CIA registrations, so a newly
    registered op still invalidates it. The result is documented as never modified by callers.
    """
    import torch._export.utils as export_utils
    import torch.export.decomp_utils as decomp_utils
    import torch.export.exported_program as exported_program
    original = export_utils._collect_all_valid_cia_ops
    if getattr(original, "_edgediff_memo", False):
        return
    memo = {}

    def collect_all_valid_cia_ops():
        key = (tuple(torch.ops._dir), len(torch._C._dispatch_get_registrations_for_dispatch_key(
            "CompositeImplicitAutograd")))
        if key not in memo:
            memo.clear()
            memo[key] = frozenset(original())
        return memo[key]

    collect_all_valid_cia_ops._edgediff_memo = True
    for mod in (export_utils, decomp_utils, exported_program):
        if getattr(mod, "_collect_all_valid_cia_ops", None) is original:
            mod._collect_all_valid_cia_ops = collect_all_valid_cia_ops
    _install_fast_cia_override(exported_program)


# sha256 prefixes of the torch 2.13.0 sources the fast override below replicates; with any other
# source it is not installed.
_OVERRIDE_SOURCE_SHA = "4422dc79d0792af7"
_PY_IMPL_SOURCE_SHA = "8173bd205b783783"


def _install_fast_cia_override(exported_program) -> None:
    """``torch.export.exported_program._override_composite_implicit_decomp`` with
    ``OpOverload.py_impl(key)(fn)`` inlined for DispatchKey keys.

    It runs twice per ``run_decompositions`` over ~2000 ops and calls ``py_impl`` ~6000 times;
    ``py_impl`` evaluates ``collections.abc.Callable[...]`` annotations on every call, which is
    most of the ~0.3 s it costs per lowering. The replica does the same dictionary updates in the
    same order (``py_kernels[k] = fn`` after the same duplicate check, then
    ``_dispatch_cache.clear()``); it is installed only when both torch sources are the ones it
    was written from."""
    import functools
    import inspect
    from contextlib import contextmanager
    import torch._ops
    EP = exported_program
    original = getattr(EP, "_override_composite_implicit_decomp", None)
    try:
        sources = [inspect.getsource(original), inspect.getsource(torch._ops.OperatorBase.py_impl)]
    except (OSError, TypeError):
        return
    digests = [hashlib.sha256(src.encode()).hexdigest()[:16] for src in sources]
    if digests != [_OVERRIDE_SOURCE_SHA, _PY_IMPL_SOURCE_SHA]:
        return
    CIA = torch._C.DispatchKey.CompositeImplicitAutograd

    def put(op, key, fn):                          # == op.py_impl(key)(fn) for a DispatchKey
        if key == torch._C.DispatchKey.Python:
            raise AssertionError("Please register a mode for the DispatchKey.Python key instead.")
        if key in op.py_kernels:
            raise RuntimeError(f"Trying to override a python impl for {key} on operator {op.name()}")
        op.py_kernels[key] = fn
        op._dispatch_cache.clear()

    def force_dispatch_to_orig_cia_callable(fake_tensor_mode, op, *args, **kwargs):
        orig_cia_callable = kwargs["original_callable"]
        del kwargs["original_callable"]
        with fake_tensor_mode:
            return orig_cia_callable(*args, **kwargs)

    @contextmanager
    def override_composite_implicit_decomp(cia_ops_to_callable):
        saved_tables = {}
        patched_ops = set()
        for op_overload, decomp_callable in cia_ops_to_callable.items():
            saved_tables[op_overload] = op_overload.py_kernels.copy()
            patched_ops.add(op_overload)
            for key in EP._AUTOGRAD_ALIAS_BACKEND_KEYS_TO_OVERRIDE:
                if key not in op_overload.py_kernels:
                    put(op_overload, key,
                        EP.autograd_not_implemented(op_overload, deferred_error=True))
            orig_cia_callable = EP._get_decomp_for_cia(op_overload)
            if CIA in op_overload.py_kernels:
                del op_overload.py_kernels[CIA]
            put(op_overload, CIA, decomp_callable)
            if not EP._is_op_registered_to_fake_rule(op_overload):
                EP.register_op_impl(op_overload)(functools.partial(
                    force_dispatch_to_orig_cia_callable, original_callable=orig_cia_callable))
            for key in EP._BACKEND_KEYS_TO_OVERRIDE:
                if key not in op_overload.py_kernels:
                    put(op_overload, key, orig_cia_callable)
        try:
            yield
        finally:
            for op in patched_ops:
                op.py_kernels.clear()
                op.py_kernels.update(saved_tables[op])
                op._dispatch_cache.clear()
                EP._deregister_op_impl(op)

    EP._override_composite_implicit_decomp = override_composite_implicit_decomp


def float_state(module) -> list:
    """(name, tensor) of the module's float parameters and buffers, in a fixed order."""
    return [(k, v) for k, v in module.state_dict().items() if v.dtype.is_floating_point]


def sentinel_values(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct float32 values in [1, 2) (distinct mantissas), shuffled."""
    if n > 2 ** 23:
        raise ValueError("too many weights for sentinels")
    start = int(rng.integers(0, 2 ** 23 - n + 1))
    bits = np.uint32(0x3F800000) + (start + rng.permutation(n)).astype(np.uint32)
    return bits.view(np.float32)


def locate(buffer: bytes, sentinels: np.ndarray):
    """(byte offset of each sentinel in ``buffer``, whether some sentinel is missing).

    The offsets (int64 array) are None unless every sentinel occurs exactly once, at a
    4-byte-aligned offset: then each is a verbatim weight copy. A missing sentinel means the
    lowering computed on the weights (folding); a duplicate is an ambiguous match."""
    if sentinels.size == 0:
        return np.zeros(0, np.int64), False
    words = np.frombuffer(buffer, dtype=np.uint32, count=len(buffer) // 4)
    bits = sentinels.view(np.uint32)
    order = np.argsort(bits)
    sorted_bits = bits[order]
    idx = np.searchsorted(sorted_bits, words)
    idx[idx == sorted_bits.size] = 0
    hit = sorted_bits[idx] == words
    word_pos = np.nonzero(hit)[0]
    element = order[idx[word_pos]]
    counts = np.bincount(element, minlength=sentinels.size)
    if not np.all(counts == 1):
        return None, bool(np.any(counts == 0))
    offsets = np.empty(sentinels.size, np.int64)
    offsets[element] = word_pos * 4
    return offsets, False


class Template:
    """A lowered program for one structure, plus where its weights live (or why it can't run)."""

    def __init__(self):
        self.buffer = None          # bytes of the serialised program
        self.offsets = None         # {state name: int64 byte offsets}, None if not patchable
        self.error = None           # exception to re-raise (Unsupported, lowering failure)
        self.facts = {}             # delegated nodes etc.
        self.kernels = None         # kernel names from the first run's ETDump
        self.fake_quant = None      # int8: (output of the fake-quantized graph, output scale)


class Lowerer:
    """Lowers, checks, caches and executes programs for one backend (XNNPACK or portable)."""

    def __init__(self, xnnpack: bool, max_templates: int = 256, max_programs: int = 64,
                 quantization: str | None = None):
        self.xnnpack = xnnpack
        self.quantization = quantization     # None (float) or "int8_per_tensor"/"int8_per_channel"
        if quantization is not None and not xnnpack:
            import executorch.kernels.quantized  # noqa: F401  (portable quantize/dequantize kernels)
        self.templates: OrderedDict = OrderedDict()   # structure key -> Template
        self.programs: OrderedDict = OrderedDict()    # content hash -> Template (unpatchable)
        self.unpatchable_families: set = set()
        self.max_templates, self.max_programs = max_templates, max_programs
        self.rng = np.random.default_rng(20261121)
        self.stats = {"lowerings": 0, "patched_runs": 0, "content_hits": 0}

    # ---- keys -----------------------------------------------------------------------------
    @staticmethod
    def structure_key(op, inputs, params):
        shapes = tuple((k, tuple(np.shape(v)), is_channels_last(v)) for k, v in inputs.items())
        return (op, repr(sorted(params.items())), shapes)

    @staticmethod
    def content_key(structure, inputs):
        h = hashlib.sha256(repr(structure).encode())
        for k, v in inputs.items():
            h.update(k.encode())
            h.update(np.ascontiguousarray(v, dtype=np.float32).tobytes())
        return h.hexdigest()

    # ---- lowering ---------------------------------------------------------------------------
    def _lower(self, module, x):
        import adapters
        tpl = Template()
        self.stats["lowerings"] += 1
        try:
            if self.quantization is not None:
                module = quantize_module(module, x, self.quantization)
                qfacts = quantization_facts(module)
                with torch.no_grad():
                    tpl.fake_quant = (module(x).detach().contiguous().numpy().copy(),
                                      qfacts["output_scale"])
            edge = lower_to_edge(module, x, self.xnnpack)
            tpl.facts = self._delegation_facts(edge)   # before to_executorch rewrites the graph
            if self.quantization is not None:
                tpl.facts["quantization"] = qfacts
            if self.xnnpack and tpl.facts["not_delegated"]:
                tpl.error = adapters.Unsupported(
                    "not delegated: " + ", ".join(tpl.facts["not_delegated"]))
                return tpl
            tpl.buffer = bytes(edge.to_executorch().buffer)
        except Exception as exc:          # a lowering failure is the backend's answer
            tpl.error = exc
        return tpl

    def _delegation_facts(self, edge) -> dict:
        """Nodes inside XNNPACK delegates, and compute nodes left outside any delegate."""
        gm = edge.exported_program().graph_module
        delegated, outside, n_delegates = [], [], 0
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            name = getattr(node.target, "__name__", str(node.target))
            if name == "executorch_call_delegate":
                n_delegates += 1
                lowered = getattr(gm, node.args[0].target)
                delegated += [_op_name(n.target) for n in lowered.original_module.graph.nodes
                              if n.op == "call_function"
                              and getattr(n.target, "__name__", "") != "getitem"]
            elif name != "getitem":
                outside.append(_op_name(node.target))
        facts = {"delegates": n_delegates, "delegated": delegated, "not_delegated": outside}
        if not self.xnnpack:
            facts = {"ops": outside}
        return facts

    def _template(self, op, inputs, params):
        key = self.structure_key(op, inputs, params)
        tpl = self.templates.get(key)
        if tpl is not None:
            self.templates.move_to_end(key)
            return key, tpl
        family = op          # folding is a property of the op's graph, not of its shapes
        if family in self.unpatchable_families or self.quantization is not None:
            # int8: the weights are quantized, and every scale depends on the values
            tpl = Template()                       # lowered per example (content cache)
        else:
            module, x = build_module(op, inputs, params)
            state = float_state(module)
            n = sum(t.numel() for _, t in state)
            values = sentinel_values(n, self.rng)
            with torch.no_grad():
                start = 0
                for _, t in state:
                    t.copy_(torch.from_numpy(values[start:start + t.numel()].reshape(t.shape)))
                    start += t.numel()
            tpl = self._lower(module, x)
            if tpl.error is None:
                found, missing = locate(tpl.buffer, values)
                if missing:                        # weights computed on: lower per example
                    self.unpatchable_families.add(family)
                if found is not None:
                    tpl.offsets, start = {}, 0
                    for name, t in state:
                        tpl.offsets[name] = found[start:start + t.numel()]
                        start += t.numel()
        self.templates[key] = tpl
        while len(self.templates) > self.max_templates:
            self.templates.popitem(last=False)
        return key, tpl

    # ---- running ----------------------------------------------------------------------------
    def run(self, op, inputs, params):
        """(NCHW output array, facts) for ``op`` on ``inputs``; raises Unsupported before
        running an undelegated graph, and lets ExecuTorch's runtime errors propagate."""
        key, tpl = self._template(op, inputs, params)
        if tpl.error is not None:
            raise tpl.error.with_traceback(None)
        module, x = build_module(op, inputs, params)
        if tpl.offsets is not None:
            buffer = bytearray(tpl.buffer)
            view = np.frombuffer(buffer, dtype=np.uint8)
            for name, t in float_state(module):
                offsets = tpl.offsets[name]
                if offsets.size:
                    values = t.detach().contiguous().numpy().astype(np.float32).ravel()
                    view[(offsets[:, None] + np.arange(4)).ravel()] = values.view(np.uint8)
            self.stats["patched_runs"] += 1
            program_tpl = tpl
        else:
            ckey = self.content_key(key, inputs)
            program_tpl = self.programs.get(ckey)
            if program_tpl is None:
                program_tpl = self._lower(module, x)
                self.programs[ckey] = program_tpl
                while len(self.programs) > self.max_programs:
                    self.programs.popitem(last=False)
            else:
                self.stats["content_hits"] += 1
                self.programs.move_to_end(ckey)
            if program_tpl.error is not None:
                raise program_tpl.error.with_traceback(None)
            if tpl.facts == {}:
                tpl.facts = program_tpl.facts
            buffer = program_tpl.buffer
        error = None
        with runtime_log() as log:
            try:
                if tpl.kernels is None:          # first run of this structure: with an ETDump
                    with tempfile.TemporaryDirectory() as d:
                        path = os.path.join(d, "run.etdp")
                        out = execute_program(buffer, x, etdump_path=path)
                        tpl.kernels = etdump_kernels(path)
                else:
                    out = execute_program(buffer, x)
            except Exception as exc:
                error = exc
        if error is not None:                    # same type, plus what the runtime logged
            lines = log.lines()
            try:
                detailed = type(error)(f"{error} | ExecuTorch log: " + " / ".join(lines))
            except Exception:
                detailed = None
            if not lines or detailed is None:
                detailed = error
            # what is known about the program, for a runner that reads ``exc.facts``
            detailed.facts = dict(program_tpl.facts, module=module_form(module))
            if detailed is error:
                raise error
            raise detailed from error
        facts = dict(program_tpl.facts)
        facts.update(tpl.kernels)
        if program_tpl.fake_quant is not None and program_tpl.fake_quant[0].shape == out.shape:
            reference, scale = program_tpl.fake_quant
            facts["max_lsb_vs_fake_quant"] = float(np.max(np.abs(
                out.astype(np.float64) - reference), initial=0.0) / scale)
        facts["module"] = module_form(module)
        facts["weights"] = "patched into a cached program" if tpl.offsets is not None else "lowered"
        return out, facts


class runtime_log:
    """Captures what the ExecuTorch runtime logs while it runs (its C++ ``ET_LOG`` lines say
    *why* an execute failed, e.g. "Attempted to resize a static tensor") and passes it on to
    the real stderr afterwards. The pybindings send it through Python's ``sys.stderr`` when that
    is redirected (pytest) and to file descriptor 2 otherwise, so both are captured.
    ``lines()``: the ``[file.cpp:N] ...`` lines, without the cpuinfo start-up noise."""

    def __enter__(self):
        import io
        import sys
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        self._saved_sys, self._sys = sys.stderr, io.StringIO()
        sys.stderr = self._sys
        self._text = ""
        return self

    def __exit__(self, *exc):
        import sys
        sys.stderr = self._saved_sys
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        self._text = self._tmp.read().decode("utf-8", "replace") + self._sys.getvalue()
        self._tmp.close()
        if self._text:
            sys.stderr.write(self._text)
        return False

    def lines(self, limit: int = 8) -> list:
        out = [ln.strip() for ln in self._text.splitlines()
               if ln.startswith("[") and ".cpp:" in ln and "cpuinfo" not in ln]
        return out[:limit]


def quantization_facts(converted) -> dict:
    """Scales and zero points the pt2e flow chose, read from the converted graph: the first
    (input) and last (output) per-tensor quantize nodes and the weight's dequantize node."""
    facts, activations = {}, []
    for node in converted.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if name.startswith("quantized_decomposed.quantize_per_tensor"):
            activations.append((float(node.args[1]), int(node.args[2])))
        elif name.startswith("quantized_decomposed.dequantize_per_channel"):
            scales = node.args[1]
            if getattr(scales, "op", "") == "get_attr":
                scales = getattr(converted, scales.target)
            facts["weight_scales"] = [float(v) for v in torch.as_tensor(scales).reshape(-1)]
        elif (name.startswith("quantized_decomposed.dequantize_per_tensor")
              and getattr(node.args[0], "op", "") == "get_attr"):
            facts["weight_scales"] = [float(node.args[1])]
        elif name.startswith(("aten.conv2d", "aten.convolution")) and len(node.args) > 2:
            bias = node.args[2]
            if getattr(bias, "op", "") == "get_attr":
                facts["bias_abs_max"] = float(torch.as_tensor(
                    functools.reduce(getattr, bias.target.split("."), converted)).abs().max())
    if activations:
        facts["input_scale"], facts["input_zero_point"] = activations[0]
        facts["output_scale"], facts["output_zero_point"] = activations[-1]
        if "weight_scales" in facts:
            # XNNPACK quantizes the float bias to int32 at input_scale * weight_scale, and
            # requantizes by input_scale * weight_scale / output_scale: name the two limits
            # its int8 kernels have (edgediff findings; see README).
            products = [facts["input_scale"] * s for s in facts["weight_scales"]]
            facts["requant_scale_max"] = max(p / facts["output_scale"] for p in products)
            if "bias_abs_max" in facts:
                facts["bias_int32_ratio"] = facts["bias_abs_max"] / min(products) / 2.0 ** 31
    return facts


def _op_name(target) -> str:
    name = str(target)
    for prefix in ("<EdgeOpOverload: ", "<OpOverload(op='"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.split(">")[0].split(":")[0].strip()


def module_form(module) -> str:
    if isinstance(module, FunctionModule):
        return module.form
    if isinstance(module, ConvModule):
        parts = (["F.pad"] if module.pad is not None else []) + ["nn.Conv2d"]
        return " -> ".join(parts + (["nn.BatchNorm2d.eval()"] if module.bn is not None else []))
    return f"nn.{type(module.bn).__name__}.eval()"


# ---- ETDump --------------------------------------------------------------------------------------

def etdump_events(path: str) -> list:
    """(name, delegated) of every profiling event in an ETDump file (size-prefixed flatbuffer,
    schema executorch/devtools/etdump/etdump_schema_flatcc.fbs), read directly: the devtools
    Inspector converts through flatc and JSON (~0.4 s a dump)."""
    from flatbuffers.table import Table
    import flatbuffers.number_types as N
    data = bytearray(open(path, "rb").read())
    if len(data) < 8:
        return []

    def table(pos):
        return Table(data, pos)

    def field_table(t, slot):
        o = t.Offset(4 + 2 * slot)
        return table(t.Indirect(o + t.Pos)) if o else None

    def field_vector(t, slot):
        o = t.Offset(4 + 2 * slot)
        if not o:
            return []
        start, n = t.Vector(o), t.VectorLen(o)
        return [table(t.Indirect(start + 4 * i)) for i in range(n)]

    def field_string(t, slot):
        o = t.Offset(4 + 2 * slot)
        return t.String(o + t.Pos).decode("utf-8", "replace") if o else None

    def field_int(t, slot, default):
        o = t.Offset(4 + 2 * slot)
        return t.Get(N.Int32Flags, o + t.Pos) if o else default

    root = table(4 + N.UOffsetTFlags.py_type(int.from_bytes(data[4:8], "little")))
    events = []
    for run in field_vector(root, 1):                   # ETDump.run_data
        for event in field_vector(run, 3):              # RunData.events
            prof = field_table(event, 0)                # Event.profile_event
            if prof is None:
                continue
            name = field_string(prof, 0)
            debug_str = field_string(prof, 4)           # delegate_debug_id_str
            debug_int = field_int(prof, 3, -1)
            delegated = debug_str is not None or debug_int != -1
            events.append((debug_str if debug_str is not None else name, delegated))
    return events


_RUNTIME_EVENTS = {"Method::init", "Program::load_method", "Method::execute", "DELEGATE_CALL",
                   "OPERATOR_CALL", None}


def etdump_kernels(path: str) -> dict:
    """{"xnnpack_kernels": [...]} (delegate events, "#n" suffix dropped) and
    {"kernels": [...]} (portable operator events) of one run."""
    delegated, operators = [], []
    for name, is_delegate in etdump_events(path):
        if name in _RUNTIME_EVENTS:
            continue
        if is_delegate:
            base = name.rsplit(" #", 1)[0] if " #" in name else name
            if base not in delegated:
                delegated.append(base)
        elif name not in operators:
            operators.append(name)
    out = {}
    if delegated:
        out["xnnpack_kernels"] = delegated
    if operators:
        out["kernels"] = operators
    return out


# ---- repro source ---------------------------------------------------------------------------------

REPRO_RUN = '''

def run(inputs, params):
    """Build the module, lower it as edgediff did and execute it with the ExecuTorch runtime."""
    module, x = build_module(OP, inputs, params)
    if QUANTIZATION:                       # int8: pt2e quantization calibrated on x itself
        if not XNNPACK:
            import executorch.kernels.quantized  # noqa: F401
        module = quantize_module(module, x, QUANTIZATION)
    edge = lower_to_edge(module, x, xnnpack=XNNPACK)
    if XNNPACK and not_delegated(edge):
        print("note: not delegated to XNNPACK:", not_delegated(edge))
    return execute_program(edge.to_executorch().buffer, x)
'''


def repro_source(op: str, xnnpack: bool, quantization: str | None = None) -> str:
    import inspect
    head = ["import numpy as np", "import torch", "import torch.nn.functional as F", "",
            f"OP = {op!r}", f"XNNPACK = {xnnpack!r}", f"QUANTIZATION = {quantization!r}", ""]
    body = []
    for obj in STANDALONE:
        src = inspect.getsource(obj)
        src = src.replace("(torch.nn.Module if torch is not None else object)", "(torch.nn.Module)")
        body.append(src)
    return "\n".join(head) + "\n\n" + "\n\n".join(body) + REPRO_RUN


# ---- the op functions both adapters expose ----------------------------------------------------------

INT8_OPS = ("conv2d", "depthwise_conv2d", "conv2d_batch_norm")   # what XNNPACKQuantizer annotates


class Backend:
    """The adapter-contract op functions over one Lowerer per path: the float path, and the
    int8 paths ``{path: quantization}`` (for ``INT8_OPS``). Lowering machinery is set up on
    first use, so importing an adapter (e.g. to list backends) stays cheap."""

    def __init__(self, xnnpack: bool, path: str, int8_paths: dict | None = None):
        self.xnnpack, self.path = xnnpack, path
        self.quantization = {path: None, **(int8_paths or {})}
        self._lowerers = {}

    def lowerer_for(self, path: str) -> Lowerer:
        if path not in self.quantization:
            raise ValueError(f"unknown path {path!r}; this backend has {list(self.quantization)}")
        if path not in self._lowerers:
            setup()
            self._lowerers[path] = Lowerer(self.xnnpack, quantization=self.quantization[path])
        return self._lowerers[path]

    @property
    def lowerer(self) -> Lowerer:
        """The float path's Lowerer."""
        return self.lowerer_for(self.path)

    def _run(self, op, arrays, params, path):
        import adapters
        if path not in self.quantization:
            raise ValueError(f"unknown path {path!r}; this backend has {list(self.quantization)}")
        if self.quantization[path] is not None and op not in INT8_OPS:
            raise adapters.Unsupported(f"{path}: XNNPACKQuantizer annotates only {INT8_OPS}")
        arrays = {k: v for k, v in arrays.items() if v is not None}
        return self.lowerer_for(path).run(op, arrays, params)

    def conv2d(self, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, path=None):
        return self._run("conv2d", dict(x=x, w=w, b=b), dict(
            stride=stride, padding=padding, dilation=dilation, groups=groups), path or self.path)

    def depthwise_conv2d(self, x, w, b=None, stride=1, padding=0, dilation=1, path=None):
        return self._run("depthwise_conv2d", dict(x=x, w=w, b=b), dict(
            stride=stride, padding=padding, dilation=dilation), path or self.path)

    def conv2d_batch_norm(self, x, w, running_mean, running_var, b=None, weight=None, bias=None,
                          stride=1, padding=0, dilation=1, groups=1, eps=1e-5, path=None):
        arrays = dict(x=x, w=w, b=b, running_mean=running_mean, running_var=running_var,
                      weight=weight, bias=bias)
        return self._run("conv2d_batch_norm", arrays, dict(
            stride=stride, padding=padding, dilation=dilation, groups=groups, eps=eps),
            path or self.path)

    def clamp(self, x, min=None, max=None, path=None):  # noqa: A002
        return self._run("clamp", dict(x=x), dict(min=min, max=max), path or self.path)

    def mean(self, x, dim=None, keepdim=False, path=None):
        return self._run("mean", dict(x=x), dict(dim=dim, keepdim=keepdim), path or self.path)

    def view(self, x, shape, path=None):
        return self._run("view", dict(x=x), dict(shape=shape), path or self.path)

    def permute(self, x, dims, path=None):
        return self._run("permute", dict(x=x), dict(dims=dims), path or self.path)

    def batch_norm(self, x, running_mean, running_var, weight=None, bias=None, eps=1e-5, path=None):
        arrays = dict(x=x, running_mean=running_mean, running_var=running_var, weight=weight,
                      bias=bias)
        return self._run("batch_norm", arrays, dict(eps=eps), path or self.path)

    def repro_source(self, op, path=None):
        return repro_source(op, self.xnnpack, self.quantization.get(path or self.path))


def sampling(int8_paths):
    """(max_examples, values_per_structure) for an adapter with these int8 paths.

    max_examples: examples per (op, path) test in the dev and ci profiles. Every new float
    structure is a lowering (~1 s); every int8 example is a quantize + lowering (~1.5-2.5 s).
    values_per_structure: new float values are patched into the cached program (~2 ms), so
    16 value sets per structure; int8 calibration and BN folding depend on the values and
    lower anew each time, so 1."""
    def max_examples(op, path):
        return 2 if path in int8_paths else 5

    def values_per_structure(op, path):
        return 1 if path in int8_paths or op in ("conv2d_batch_norm", "batch_norm") else 16

    return max_examples, values_per_structure
