"""ExecuTorch's Cortex-M backend (``executorch/backends/cortex_m``) end to end on x86: the
built-in adapter named ``cortex_m``.

Each op is a small ``torch.nn.Module`` as a user would write it, quantized and lowered with the
backend's own flow, as its test harness does (``backends/cortex_m/test/tester.py``):
``torch.export`` -> ``prepare_pt2e(CortexMQuantizer())`` -> calibration on the example's own
input -> ``convert_pt2e`` -> ``to_edge(cortex_m_edge_compile_config())`` ->
``CortexMPassManager(target_config=...)`` (which decides, e.g., when a conv becomes
``cortex_m::quantized_depthwise_conv2d``) -> ``to_executorch`` -> ExecuTorch 1.5.1's runtime in
this process, running the real ``cortex_m::*`` C++ kernels over CMSIS-NN's plain-C kernels.

Read top to bottom:

1. Build: ``EXECUTORCH_ROOT`` names an ExecuTorch source tree (the kernels are not in the pip
   wheel). edgediff compiles every ``backends/cortex_m/ops/op_*.cpp``, the registration file
   ExecuTorch's own codegen writes from ``backends/cortex_m/ops/operators.yaml``, and the
   portable util files they call, against the wheel's headers (overlaid with ``kernels/`` and
   ``backends/`` from the tree), and links them with the CMSIS-NN library the ``cmsis_nn``
   adapter uses (``CMSIS_NN_ROOT`` / ``CMSIS_NN_LIB``) and the wheel's ``libexecutorch.so``,
   into a cache keyed by the content of those sources. Loaded with ``RTLD_GLOBAL``, the kernels
   register in the runtime ``executorch.runtime`` uses.
2. The op table ``OPS``: the torch code of each op. The lowering, the facts and a finding's
   standalone repro all read it.
3. Lowering and running. The facts carry the lowered program (every node of the final edge
   graph, its arguments and constant tensors: weights, biases, requantization multipliers and
   shifts, scales, zero points), the program's output run by the backend's Python reference ops
   (the edge program executed by torch), and the float model's output. ``properties/
   test_cortex_m.py`` recomputes the program with ``reference.quant`` and compares bit for bit.

Paths: ``scalar`` (lowered for ``CortexMTargetConfig(cpu=M55, isa=SCALAR)``, what x86 runs) and
``scalar/nhwc`` (the pass manager's explicit-layout pass list: ``*_nhwc`` ops, permutes made
explicit). A program lowered for MVE or DSP (``mve``, ``dsp``) runs kernels x86 cannot: those
paths are refused as Unsupported after lowering, never run and judged.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import adapters
from adapters import _source_build as sb
from adapters._torch_source import array_source, literal

name = "cortex_m"
isolated = True
fork_server = True           # the worker imports torch + executorch once and forks per example
timeout = 120.0
VARIABLE = "EXECUTORCH_ROOT"
BUILD_TIMEOUT = 1200
# The portable util sources the cortex_m kernels call (found with -Wl,--no-undefined).
UTIL_SOURCES = ("broadcast_util", "repeat_util", "delinearize_index")

# =================================================================================================
# 1. Build the kernel library from the ExecuTorch tree
# =================================================================================================


def _wheel() -> Path:
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise sb.BuildUnavailable("executorch is not installed (pip install torch==2.13.0 "
                                  "executorch==1.5.1)")
    return Path(list(spec.submodule_search_locations)[0])


def locate() -> dict:
    """What the build needs, or BuildUnavailable naming exactly the missing piece."""
    root, origin = sb.checkout(VARIABLE)
    if root is None:
        raise sb.BuildUnavailable(
            f"set {VARIABLE} to an ExecuTorch source tree (github.com/pytorch/executorch at the "
            "commit of your wheel; it needs backends/cortex_m, codegen and kernels/portable); "
            f"edgediff builds the cortex_m kernels into {sb.cache_dir()}/cortex_m")
    root = root.expanduser().resolve()
    for rel in ("backends/cortex_m/ops/operators.yaml", "codegen/gen.py",
                *(f"kernels/portable/cpu/util/{u}.cpp" for u in UTIL_SOURCES)):
        if not (root / rel).is_file():
            raise sb.BuildUnavailable(f"{origin}={root} is not an ExecuTorch tree with the "
                                      f"Cortex-M backend: no {rel}")
    wheel = _wheel()
    if not (wheel / "include" / "executorch" / "runtime").is_dir() or not (wheel / "lib" / "libexecutorch.so").is_file():
        raise sb.BuildUnavailable(f"the executorch wheel at {wheel} has no include/executorch/runtime "
                                  "or lib/libexecutorch.so (ExecuTorch 1.5.1's wheel has both)")
    try:
        from adapters._cmsis_nn import build as cmsis_build
        cmsis = cmsis_build.locate()
    except Exception as exc:               # BuildUnavailable of the cmsis_nn adapter
        raise sb.BuildUnavailable(f"the cortex_m kernels call CMSIS-NN: {exc}") from None
    torchgen = importlib.util.find_spec("torchgen")
    if torchgen is None:
        raise sb.BuildUnavailable("torchgen is not importable (it comes with torch)")
    yamls = Path(list(torchgen.submodule_search_locations)[0]) / "packaged" / "ATen" / "native"
    for tool in ("c++",):
        if shutil.which(tool) is None:
            raise sb.BuildUnavailable(f"building the cortex_m kernels needs {tool} on PATH")
    return {"root": root, "origin": origin, "wheel": wheel, "cmsis": cmsis, "yamls": yamls}


def rounding(cfg: dict) -> str:
    """The requantization rounding the linked CMSIS-NN was built with."""
    return "single" if "-DCMSIS_NN_USE_SINGLE_ROUNDING" in cfg["cmsis"].defines else "double"


def build(cfg: dict | None = None) -> Path:
    """``libcortex_m_kernels.so`` for the tree (built unless the cache has it)."""
    cfg = cfg or locate()
    root, wheel, cmsis = cfg["root"], cfg["wheel"], cfg["cmsis"]
    h = hashlib.sha256()
    h.update(sb.tree_digest(root, ["backends/cortex_m/ops", "codegen",
                                   *(f"kernels/portable/cpu/util/{u}.cpp" for u in UTIL_SOURCES)]).encode())
    h.update(hashlib.sha256(cmsis.lib.read_bytes()).digest())
    h.update((_package_version("executorch") or "?").encode() + " ".join(cmsis.defines).encode())
    key = h.hexdigest()[:16]
    out = sb.cache_dir() / "cortex_m" / key
    lib = out / "libcortex_m_kernels.so"
    with sb.locked(out.parent / f"{key}.lock"):
        if lib.is_file():
            return lib
        shutil.rmtree(out, ignore_errors=True)
        log, gen = out / "build.log", out / "gen"
        gen.mkdir(parents=True)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")   # never write into the tree
        ops_yaml = root / "backends/cortex_m/ops/operators.yaml"
        sb.run([sys.executable, "-m", "codegen.tools.gen_oplist",
                f"--output_path={gen / 'selected_operators.yaml'}", f"--ops_schema_yaml_path={ops_yaml}"],
               log, "ExecuTorch codegen (gen_oplist)", 300, cwd=root, env=env)
        sb.run([sys.executable, "-m", "codegen.gen", "--source-path=codegen",
                f"--tags-path={cfg['yamls'] / 'tags.yaml'}",
                f"--aten-yaml-path={cfg['yamls'] / 'native_functions.yaml'}",
                f"--op-selection-yaml-path={gen / 'selected_operators.yaml'}",
                f"--custom-ops-yaml-path={ops_yaml}", f"--install-dir={gen}"],
               log, "ExecuTorch codegen (gen)", 300, cwd=root, env=env)
        # The wheel's headers, with kernels/ and backends/ from the tree (the wheel has neither).
        inc = out / "include" / "executorch"
        inc.mkdir(parents=True)
        for part, base in (("runtime", wheel / "include/executorch"), ("extension", wheel / "include/executorch"),
                           ("kernels", root), ("backends", root)):
            (inc / part).symlink_to(base / part)
        flags = ["-std=c++17", "-fPIC", "-O2", "-DC10_USING_CUSTOM_GENERATED_MACROS",
                 f"-ffile-prefix-map={root}=executorch", *cmsis.defines,
                 "-I", out / "include", "-I", wheel / "include",
                 "-I", wheel / "include/executorch/runtime/core/portable_type/c10",
                 "-I", gen, "-I", cmsis.include]
        sources = sorted((root / "backends/cortex_m/ops").glob("op_*.cpp"))
        sources += [gen / "RegisterCodegenUnboxedKernelsEverything.cpp"]
        sources += [root / f"kernels/portable/cpu/util/{u}.cpp" for u in UTIL_SOURCES]
        objs = [out / "obj" / f"{i:02d}_{s.stem}.o" for i, s in enumerate(sources)]
        objs[0].parent.mkdir()

        def compile_one(pair):
            src, obj = pair
            sb.run(["c++", *flags, "-c", src, "-o", obj], out / "obj" / f"{obj.stem}.log",
                   f"compiling {src.name}", BUILD_TIMEOUT)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(compile_one, zip(sources, objs)))
        partial = out / "libcortex_m_kernels.so.partial"
        sb.run(["c++", "-shared", "-o", partial, *objs, cmsis.lib, "-L", wheel / "lib", "-lexecutorch",
                f"-Wl,-rpath,{wheel / 'lib'}", "-Wl,--no-undefined"], log, "linking the cortex_m kernels", 300)
        partial.rename(lib)
    return lib


def tree_version(cfg: dict) -> str:
    """The tree's version: ``git describe``, or the commit setup recorded for a snapshot."""
    root = cfg["root"]
    described = sb.git_describe(root)
    stamp = root / ".edgediff-snapshot"
    commit = described or (stamp.read_text().strip() if stamp.is_file() else "unknown commit")
    cmsis = cfg["cmsis"]
    cmsis_stamp = cmsis.root / ".edgediff-snapshot" if cmsis.root else None
    cmsis_commit = (cmsis_stamp.read_text().strip() if cmsis_stamp and cmsis_stamp.is_file()
                    else sb.git_describe(cmsis.root) if cmsis.root else None) or "unknown"
    return (f"ExecuTorch cortex_m {commit} (kernels built from source), CMSIS-NN {cmsis_commit} "
            f"({rounding(cfg)} rounding), executorch {_package_version('executorch')}")


def _package_version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


_LOADED = {}


def load_kernels() -> None:
    """Build (if needed) and load the kernels into this process's ExecuTorch runtime."""
    if "lib" in _LOADED:
        return
    cfg = locate()
    path = build(cfg)
    from executorch.runtime import Runtime  # noqa: F401  (libexecutorch.so first)
    _LOADED["lib"] = ctypes.CDLL(str(path), ctypes.RTLD_GLOBAL)
    _LOADED["rounding"] = rounding(cfg)


def unavailable_reason():
    try:
        build(locate())
    except sb.BuildUnavailable as exc:
        return str(exc)
    return None


def _version() -> str:
    try:
        return tree_version(locate())
    except sb.BuildUnavailable:
        return "not built"


version = _version()

# =================================================================================================
# 2. The op table: each op as the torch code a user writes
# =================================================================================================
# Each entry: (layers, forward, state) from the op's params and input arrays:
#   layers: lines of ``__init__`` (``self.<name> = ...``), forward: the return expression,
#   state: {module state name: input array name} whose values are copied in.
# Activations (``activation`` param on conv and linear): what the quantizer fuses.
# The ops are named after the backend's kernels (``cortex_m::quantized_conv2d``, ...): float in
# and out, int8 inside, they are judged bit for bit by properties/test_cortex_m.py, not by the
# float properties.

ACTIVATIONS = {None: "{}", "relu": "F.relu({})", "relu6": "F.relu6({})"}


def _conv(p, a, depthwise):
    x, w = a["x"], a["w"]
    o, cg, kh, kw = w.shape
    groups = x.shape[1] if depthwise else int(p.get("groups", 1))
    layer = (f"nn.Conv2d({cg * groups}, {o}, {literal((kh, kw))}, stride={literal(p.get('stride', 1))}, "
             f"padding={literal(p.get('padding', 0))}, dilation={literal(p.get('dilation', 1))}, "
             f"groups={groups}, bias={'b' in a})")
    state = {"conv.weight": "w", **({"conv.bias": "b"} if "b" in a else {})}
    return [f"self.conv = {layer}"], ACTIVATIONS[p.get("activation")].format("self.conv(x)"), state


OPS = {
    "quantized_conv2d": lambda p, a: _conv(p, a, depthwise=False),
    "quantized_depthwise_conv2d": lambda p, a: _conv(p, a, depthwise=True),
    "quantized_linear": lambda p, a: (
        [f"self.fc = nn.Linear({a['w'].shape[1]}, {a['w'].shape[0]}, bias={'b' in a})"],
        ACTIVATIONS[p.get("activation")].format("self.fc(x)"),
        {"fc.weight": "w", **({"fc.bias": "b"} if "b" in a else {})}),
    "quantized_add": lambda p, a: ([], ACTIVATIONS[p.get("activation")].format("x + y"), {}),
    "quantized_avg_pool2d": lambda p, a: (
        [f"self.pool = nn.AvgPool2d({literal(p['kernel'])}, stride={literal(p.get('stride', p['kernel']))}, "
         f"padding={literal(p.get('padding', 0))})"], "self.pool(x)", {}),
    "quantized_mean": lambda p, a: ([], f"torch.mean(x, dim={literal(tuple(p.get('dim', (2, 3))))}, keepdim=True)", {}),
    "quantized_clamp": lambda p, a: ([], "F.relu6(x)" if (p.get("min"), p.get("max")) == (0.0, 6.0) else
                           f"torch.clamp(x, min={literal(p.get('min'))}, max={literal(p.get('max'))})", {}),
}
INPUTS = {"quantized_add": ("x", "y")}                 # activations the model takes (default: x)
paths = {op: ("scalar", "scalar/nhwc") for op in OPS}
REFUSED_PATHS = {"mve": "MVE", "dsp": "DSP"}  # lowered, then refused: x86 cannot run them


def nhwc_model(op, arrays, path) -> bool:
    """Whether the model takes and returns NHWC tensors (``*/nhwc`` paths, 4-D activations):
    it permutes to NCHW first and back last, as code whose data is NHWC does, and the
    explicit-layout passes turn those permutes into ``*_nhwc`` kernels."""
    return path.endswith("/nhwc") and np.ndim(arrays.get("x")) == 4


def model_source(op, params, arrays, nhwc=False) -> tuple[str, dict]:
    """(source of ``class Model(nn.Module)``, {state name: array name}) for op."""
    if op not in OPS:
        raise adapters.Unsupported(f"cortex_m: no op table entry for {op!r}")
    layers, forward, state = OPS[op](params, arrays)
    names = INPUTS.get(op, ("x",))
    init = "\n".join(f"        {line}" for line in layers) or "        pass"
    body = "".join(f"        {k} = {k}.permute(0, 3, 1, 2)\n" for k in names) if nhwc else ""
    result = f"({forward}).permute(0, 2, 3, 1)" if nhwc else forward
    return (f"class Model(nn.Module):\n    def __init__(self):\n        super().__init__()\n{init}\n\n"
            f"    def forward(self, {', '.join(names)}):\n{body}        return {result}\n"), state


def build_model(op, params, arrays, nhwc=False):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    source, state = model_source(op, params, arrays, nhwc)
    scope = {"torch": torch, "nn": nn, "F": F}
    exec(compile(source, f"<cortex_m {op} model>", "exec"), scope)  # noqa: S102 - our own source
    model = scope["Model"]().eval()
    with torch.no_grad():
        for key, arr in state.items():
            model.get_parameter(key).copy_(torch.from_numpy(np.ascontiguousarray(arrays[arr], np.float32)))
    return model, source, state


def example_inputs(op, arrays, nhwc=False):
    """The model's inputs as torch tensors: 4-D activations channels_last, as the Cortex-M flow
    hands them over (its convs need NHWC); for an NHWC model, contiguous NHWC tensors."""
    import torch
    out = []
    for k in INPUTS.get(op, ("x",)):
        a = np.asarray(arrays[k], np.float32)
        t = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 3, 1) if nhwc else a))
        out.append(t.to(memory_format=torch.channels_last) if t.dim() == 4 and not nhwc else t)
    return tuple(out)


# =================================================================================================
# 3. Lowering (the backend's flow) and running (the pip runtime with the built kernels)
# =================================================================================================

def target_config(path):
    from executorch.backends.cortex_m.library import cmsis_nn
    from executorch.backends.cortex_m.target_config import CortexM, CortexMTargetConfig
    isa = {"scalar": cmsis_nn.Backend.SCALAR, "mve": cmsis_nn.Backend.MVE,
           "dsp": cmsis_nn.Backend.DSP}[path.split("/")[0]]
    return CortexMTargetConfig(cpu=CortexM.M55, isa=isa)


def lower(model, inputs, path):
    """(edge program manager after the Cortex-M passes, its final ExportedProgram)."""
    import torch
    import executorch.backends.cortex_m.passes  # noqa: F401  (before ops.operators, as the notes say)
    from executorch.backends.cortex_m.edge_compile_config import cortex_m_edge_compile_config
    from executorch.backends.cortex_m.passes.cortex_m_pass_manager import CortexMPassManager
    from executorch.backends.cortex_m.quantizer.quantizer import CortexMQuantizer
    from executorch.exir import to_edge
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    with torch.no_grad():
        graph = torch.export.export(model, inputs, strict=True).module(check_guards=False)
        explicit = path.endswith("/nhwc")
        prepared = prepare_pt2e(graph, CortexMQuantizer(use_explicit_layout=explicit))
        prepared(*inputs)                                   # calibrate on the example itself
        converted = convert_pt2e(prepared)
        edge = to_edge(torch.export.export(converted, inputs, strict=True),
                       compile_config=cortex_m_edge_compile_config())
        manager = CortexMPassManager(edge.exported_program(), target_config=target_config(path),
                                     use_explicit_layout=explicit)
        edge._edge_programs["forward"] = manager.transform()     # as the backend's RunPasses stage
    return edge, edge.exported_program()


def _encode(value, ep, consts):
    """A node argument as plain data: node references by name, constant tensors inline."""
    import torch
    if isinstance(value, torch.fx.Node):
        key = consts.get(value.name)
        if key is not None:
            t = ep.state_dict[key] if key in ep.state_dict else ep.constants[key]
            return {"const": t.detach().cpu().reshape(-1).tolist(), "shape": list(t.shape),
                    "dtype": str(t.dtype).replace("torch.", "")}
        return {"ref": value.name}
    if isinstance(value, (list, tuple)):
        return [_encode(v, ep, consts) for v in value]
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return repr(value)


def program_nodes(ep) -> dict:
    """The final edge graph as data: {"inputs": [...], "nodes": [{name, op, args}], "outputs"}."""
    sig = ep.graph_signature
    consts = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
              **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
    user_inputs = [s.arg.name for s in sig.input_specs if s.kind.name == "USER_INPUT"]
    input_orders = {n.name: list(n.meta["val"].dim_order()) for n in ep.graph.nodes
                    if n.op == "placeholder" and n.name in user_inputs and hasattr(n.meta.get("val"), "dim_order")}
    nodes, outputs = [], []
    for node in ep.graph.nodes:
        if node.op == "call_function":
            op = getattr(node.target, "__name__", None) or str(node.target)   # cortex_m.quantized_conv2d.default
            val = node.meta.get("val")
            nodes.append({"name": node.name, "op": op,
                          "args": [_encode(a, ep, consts) for a in node.args],
                          "dim_order": list(val.dim_order()) if hasattr(val, "dim_order") else None})
        elif node.op == "output":
            outputs = [a.name for a in node.args[0]]
    return {"inputs": user_inputs, "input_dim_orders": input_orders, "nodes": nodes, "outputs": outputs}


def run(op, path, arrays, params):
    """Lower op's model for ``path``, run it with the built kernels: (output, facts)."""
    import torch
    base = path.split("/")[0]
    if base not in ("scalar",) + tuple(REFUSED_PATHS):
        raise ValueError(f"unknown cortex_m path {path!r}")
    arrays = {k: v for k, v in arrays.items() if v is not None}
    nhwc = nhwc_model(op, arrays, path)
    model, source, _ = build_model(op, params, arrays, nhwc)
    inputs = example_inputs(op, arrays, nhwc)
    edge, ep = lower(model, inputs, path)
    program = program_nodes(ep)
    kinds = sorted({n["op"] for n in program["nodes"]})
    facts = {"program_ops": kinds, "model_layout": "NHWC" if nhwc else "NCHW (channels_last)"}
    if base in REFUSED_PATHS:
        raise adapters.Unsupported(
            f"lowered for {REFUSED_PATHS[base]} (cortex_m ops {', '.join(k for k in kinds if 'cortex_m' in k)}): "
            "its CMSIS-NN kernels use instructions an x86 host cannot run, so the program is "
            "not run or judged here")
    if not any(k.startswith("cortex_m.quantized") for k in kinds):
        raise adapters.Unsupported(f"not lowered to a cortex_m quantized op (program: {', '.join(kinds)})")
    with torch.no_grad():
        float_out = model(*inputs)
        try:
            python_reference = ep.module()(*inputs)         # the backend's Python reference ops
        except Exception as exc:                            # their failure is a fact, not ours
            python_reference = None
            facts["python_reference_error"] = f"{type(exc).__name__}: {exc}"[:300]
    load_kernels()
    buffer = bytes(edge.to_executorch().buffer)
    from executorch.runtime import Runtime
    loaded = Runtime.get().load_program(buffer)
    out = loaded.load_method("forward").execute(list(inputs))[0]
    back = (lambda t: t.permute(0, 3, 1, 2)) if nhwc and out.dim() == 4 else (lambda t: t)
    facts.update(program=program, rounding=_LOADED["rounding"],
                 python_reference=(None if python_reference is None
                                   else back(python_reference).contiguous().reshape(-1).tolist()),
                 float_model=back(float_out).contiguous().reshape(-1).tolist())
    return back(out).detach().contiguous().numpy().copy(), facts      # NCHW, as edgediff reads


def _op(op):
    def call(path="scalar", **kwargs):
        arrays = {k: v for k, v in kwargs.items() if isinstance(v, np.ndarray) or v is None}
        params = {k: v for k, v in kwargs.items() if k not in arrays}
        return run(op, path, arrays, params)
    call.__name__ = op
    return call


for _name in OPS:
    globals()[_name] = _op(_name)


def prewarm():
    """What the fork server does before it forks: import torch, the backend and the runtime,
    and load the kernels (nothing is lowered)."""
    import executorch.backends.cortex_m.passes  # noqa: F401
    from executorch.backends.cortex_m.passes.cortex_m_pass_manager import CortexMPassManager  # noqa: F401
    from executorch.backends.cortex_m.quantizer.quantizer import CortexMQuantizer  # noqa: F401
    from executorch.exir import to_edge  # noqa: F401
    load_kernels()


# ---- a finding as a maintainer runs it ----------------------------------------------------------

REPRO = '''#!/usr/bin/env python3
"""{title}

{version}; torch {torch}.
Standalone: needs torch and executorch (with the cortex_m kernels built for the host and loaded:
set CORTEX_M_KERNELS to that library). Exits 1 while the bug is present, 0 once it is fixed.
Found by edgediff: the program's output, read back in int8, against the same program computed
with CMSIS-NN's arithmetic ({rounding} rounding) from its own constants.
"""
import ctypes
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from executorch.runtime import Runtime
import executorch.backends.cortex_m.passes  # noqa: F401
from executorch.backends.cortex_m.edge_compile_config import cortex_m_edge_compile_config
from executorch.backends.cortex_m.library import cmsis_nn
from executorch.backends.cortex_m.passes.cortex_m_pass_manager import CortexMPassManager
from executorch.backends.cortex_m.quantizer.quantizer import CortexMQuantizer
from executorch.backends.cortex_m.target_config import CortexM, CortexMTargetConfig
from executorch.exir import to_edge
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

ctypes.CDLL(os.environ["CORTEX_M_KERNELS"], ctypes.RTLD_GLOBAL)


{model}

model = Model().eval()
with torch.no_grad():
{weights}
{inputs}
inputs = ({args},)
with torch.no_grad():
    graph = torch.export.export(model, inputs, strict=True).module(check_guards=False)
    prepared = prepare_pt2e(graph, CortexMQuantizer(use_explicit_layout={explicit}))
    prepared(*inputs)
    converted = convert_pt2e(prepared)
    edge = to_edge(torch.export.export(converted, inputs, strict=True),
                   compile_config=cortex_m_edge_compile_config())
    target = CortexMTargetConfig(cpu=CortexM.M55, isa=cmsis_nn.Backend.SCALAR)
    manager = CortexMPassManager(edge.exported_program(), target_config=target,
                                 use_explicit_layout={explicit})
    edge._edge_programs["forward"] = manager.transform()
buffer = bytes(edge.to_executorch().buffer)
got = Runtime.get().load_program(buffer).load_method("forward").execute(list(inputs))[0].numpy()

# int8 output as CMSIS-NN computes it from the program's own scales and constants:
expected_q = {expected_q}
scale, zero_point = {out_scale!r}, {out_zp!r}
got_q = np.rint(got / np.float32(scale)).astype(np.int64) + zero_point
differ = np.argwhere(got_q != expected_q)
print("expected (int8):", expected_q.reshape(-1)[:16].tolist())
print("got      (int8):", got_q.reshape(-1)[:16].tolist())
if differ.size:
    i = tuple(differ[0])
    print(f"FAIL: {{len(differ)}} of {{got_q.size}} int8 outputs differ; first at {{i}}: "
          f"expected {{expected_q[i]}}, got {{got_q[i]}}")
    sys.exit(1)
print("PASS")
'''


def standalone_repro(op, path, arrays, params, expected_q, out_scale, out_zp, title) -> str:
    """repro.py with inline data: the model, the backend's flow, the runtime, the expected int8
    output (as ``reference.quant`` computes the program)."""
    arrays = {k: v for k, v in arrays.items() if v is not None}
    nhwc = nhwc_model(op, arrays, path)
    source, state = model_source(op, params, arrays, nhwc)
    weights = "\n".join(f"    model.get_parameter({k!r}).copy_(torch.from_numpy({array_source(arrays[a])}))"
                        for k, a in state.items()) or "    pass"
    names = INPUTS.get(op, ("x",))
    q = np.asarray(expected_q, np.int64)
    lines = []
    for k in names:
        a = np.asarray(arrays[k], np.float32)
        t = f"{k} = torch.from_numpy({array_source(a.transpose(0, 2, 3, 1) if nhwc else a)})"
        if np.ndim(a) == 4 and not nhwc:
            t += ".to(memory_format=torch.channels_last)"
        lines.append(t)
    if nhwc and q.ndim == 4:                      # the model returns NHWC
        q = q.transpose(0, 2, 3, 1)
    expected = f"np.array({q.reshape(-1).tolist()}, dtype=np.int64).reshape({literal(q.shape)})"
    return REPRO.format(title=title, version=version, torch=_package_version("torch"),
                        rounding=_LOADED.get("rounding", "double"), model=source.rstrip("\n"),
                        weights=weights, inputs="\n".join(lines), args=", ".join(names),
                        explicit=path.endswith("/nhwc"), expected_q=expected,
                        out_scale=float(out_scale), out_zp=int(out_zp))


if __name__ == "__main__":          # python -m adapters.cortex_m: build now, say what
    try:
        _cfg = locate()
        print(f"cortex_m: {tree_version(_cfg)}")
        print(f"cortex_m: kernels {build(_cfg)}")
    except sb.BuildUnavailable as exc:
        print(f"cortex_m: unavailable: {exc}", file=sys.stderr)
        sys.exit(3)
