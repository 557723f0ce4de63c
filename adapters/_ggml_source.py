"""ggml built from a source checkout, with a ctypes binding checked against that checkout's headers.

The ``ggml`` adapter normally drives the ggml bundled in ggml-python. A ggml contributor gates
their own tree instead: ``GGML_ROOT`` (or ``--backend ggml@/path``) names a ggml checkout, or a
llama.cpp checkout holding ``ggml/``. This module

1. builds it with ggml's own CMake (CPU backend only, ``GGML_NATIVE=OFF``, static libraries,
   position independent) into ``<cache>/ggml/<key>``, where the key is the content of
   ``CMakeLists.txt``, ``cmake/``, ``include/``, ``src/`` and of the binding below: an edited
   source gets a new build, an unchanged one is reused, the checkout is never written to;
2. compiles a small C file against the checkout's ``ggml.h`` / ``ggml-cpu.h`` that asserts, for
   every function the adapter calls, that the header declares exactly the prototype this binding
   passes to ctypes (``_Static_assert`` + ``__builtin_types_compatible_p``), and exports the
   offsets of the ``struct ggml_tensor`` / ``struct ggml_init_params`` fields the adapter reads,
   and the enum values it uses. A header that changed a signature fails the build with the
   function's name, instead of a ctypes call that silently passes the wrong arguments;
3. links that file and the whole static ggml into one ``libedgediff-ggml.so`` (``-Bsymbolic``, so
   it never binds to another ggml loaded in the same process, such as ggml-python's), and
4. exposes it as an object with the names ggml-python uses (``ggml_conv_2d``, ``GGML_TYPE_F16``,
   ``ggml_init_params``, ``t.contents.ne`` ...), so the adapter's ggml section runs unchanged on
   either binding.

``python -m adapters._ggml_source [ROOT]`` builds (``scripts/setup.sh`` runs it on the snapshot)
and prints the version.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import sys
from pathlib import Path

from adapters import _source_build as sb

VARIABLE = "GGML_ROOT"
BUILD_TIMEOUT = 1800

# ---- the binding: one row per function, C types spelled as ggml.h spells them -----------------
# Each type name maps to (C declaration, ctypes type); "tensor" is a pointer to the Tensor
# structure built from the offsets the compiled file reports.
T_CTX, T_TENSOR, T_CTENSOR, T_GRAPH = "ctx", "tensor", "ctensor", "graph"
C_TYPES = {
    "ctx": "struct ggml_context *", "tensor": "struct ggml_tensor *",
    "ctensor": "const struct ggml_tensor *", "graph": "struct ggml_cgraph *",
    "int": "int", "int64": "int64_t", "size": "size_t", "float": "float", "bool": "bool",
    "void": "void", "voidp": "void *", "cstr": "const char *", "type": "enum ggml_type",
    "pool": "enum ggml_op_pool", "status": "enum ggml_status", "params": "struct ggml_init_params",
    "cfloatp": "const float *", "fp16p": "ggml_fp16_t *", "cint64p": "const int64_t *",
}
_CONV = ("tensor", ["ctx", "tensor", "tensor", "int", "int", "int", "int", "int", "int"])
_UNARY = ("tensor", ["ctx", "tensor"])
_BINARY = ("tensor", ["ctx", "tensor", "tensor"])
FUNCTIONS = {
    "ggml_init": ("ctx", ["params"]),
    "ggml_free": ("void", ["ctx"]),
    "ggml_graph_overhead": ("size", []),
    "ggml_new_tensor": ("tensor", ["ctx", "type", "int", "cint64p"]),
    "ggml_get_data": ("voidp", ["ctensor"]),
    "ggml_type_name": ("cstr", ["type"]),
    "ggml_op_desc": ("cstr", ["ctensor"]),
    "ggml_is_contiguous": ("bool", ["ctensor"]),
    "ggml_version": ("cstr", []),
    "ggml_fp32_to_fp16_row": ("void", ["cfloatp", "fp16p", "int64"]),
    "ggml_new_graph": ("graph", ["ctx"]),
    "ggml_new_graph_custom": ("graph", ["ctx", "size", "bool"]),
    "ggml_build_forward_expand": ("void", ["graph", "tensor"]),
    "ggml_graph_n_nodes": ("int", ["graph"]),
    "ggml_graph_node": ("tensor", ["graph", "int"]),
    "ggml_graph_compute_with_ctx": ("status", ["ctx", "graph", "int"]),
    "ggml_conv_2d": _CONV,
    "ggml_conv_2d_direct": _CONV,
    "ggml_conv_2d_dw": _CONV,
    "ggml_conv_2d_dw_direct": _CONV,
    "ggml_im2col": ("tensor", ["ctx", "tensor", "tensor", "int", "int", "int", "int", "int", "int",
                               "bool", "type"]),
    "ggml_pool_2d": ("tensor", ["ctx", "tensor", "pool", "int", "int", "int", "int", "float", "float"]),
    "ggml_clamp": ("tensor", ["ctx", "tensor", "float", "float"]),
    "ggml_mean": _UNARY, "ggml_sqrt": _UNARY, "ggml_cont": _UNARY, "ggml_dup": _UNARY,
    "ggml_add": _BINARY, "ggml_sub": _BINARY, "ggml_mul": _BINARY, "ggml_div": _BINARY,
    "ggml_permute": ("tensor", ["ctx", "tensor", "int", "int", "int", "int"]),
    "ggml_reshape_1d": ("tensor", ["ctx", "tensor", "int64"]),
    "ggml_reshape_2d": ("tensor", ["ctx", "tensor", "int64", "int64"]),
    "ggml_reshape_3d": ("tensor", ["ctx", "tensor", "int64", "int64", "int64"]),
    "ggml_reshape_4d": ("tensor", ["ctx", "tensor", "int64", "int64", "int64", "int64"]),
    "ggml_repeat_4d": ("tensor", ["ctx", "tensor", "int64", "int64", "int64", "int64"]),
}
CONSTANTS = ("GGML_TYPE_F32", "GGML_TYPE_F16", "GGML_OP_POOL_AVG", "GGML_OP_POOL_MAX",
             "GGML_STATUS_SUCCESS", "GGML_MAX_DIMS")
LAYOUT = (("tensor", "sizeof(struct ggml_tensor)"), ("type", "offsetof(struct ggml_tensor, type)"),
          ("ne", "offsetof(struct ggml_tensor, ne)"), ("nb", "offsetof(struct ggml_tensor, nb)"),
          ("data", "offsetof(struct ggml_tensor, data)"),
          ("params", "sizeof(struct ggml_init_params)"),
          ("mem_size", "offsetof(struct ggml_init_params, mem_size)"),
          ("mem_buffer", "offsetof(struct ggml_init_params, mem_buffer)"),
          ("no_alloc", "offsetof(struct ggml_init_params, no_alloc)"))


def check_source() -> str:
    """The C file compiled against the checkout's headers (see the module docstring)."""
    lines = ["/* generated by edgediff (adapters/_ggml_source.py): the ctypes binding, checked */",
             "#include <stddef.h>", "#include <stdint.h>", "#include <stdbool.h>",
             '#include "ggml.h"', '#include "ggml-cpu.h"', "",
             "#define EDGEDIFF_CHECK(fn, type) _Static_assert(__builtin_types_compatible_p("
             "__typeof__(&fn), type), \"ggml.h declares \" #fn \" differently from the prototype "
             "edgediff's binding uses: \" #type);"]
    for fn, (ret, args) in FUNCTIONS.items():
        proto = f"{C_TYPES[ret]} (*)({', '.join(C_TYPES[a] for a in args) or 'void'})"
        lines.append(f"EDGEDIFF_CHECK({fn}, {proto})")
    lines.append("const int64_t edgediff_ggml_constants[] = {"
                 + ", ".join(f"(int64_t){c}" for c in CONSTANTS) + "};")
    lines.append("const int64_t edgediff_ggml_layout[] = {"
                 + ", ".join(f"(int64_t){expr}" for _, expr in LAYOUT) + "};")
    return "\n".join(lines) + "\n"


# ---- locating and building ---------------------------------------------------------------------

def locate(root: str | os.PathLike | None = None) -> Path:
    """The ggml source folder: ``root`` (a ggml checkout, or a llama.cpp checkout holding ggml/),
    else ``$GGML_ROOT`` / the one ``scripts/setup.sh`` recorded. BuildUnavailable says what is
    missing."""
    if root is None or str(root) == "":
        found, origin = sb.checkout(VARIABLE)
        if found is None:
            raise sb.BuildUnavailable(f"no ggml checkout: set {VARIABLE}=/path/to/ggml (a ggml or "
                                      "llama.cpp checkout), or run scripts/setup.sh where "
                                      "../shared/third_party/ holds a ggml snapshot")
    else:
        found, origin = Path(root).expanduser(), "ggml@"
    found = found.resolve()
    if (found / "ggml" / "include" / "ggml.h").is_file() and not (found / "include" / "ggml.h").is_file():
        found = found / "ggml"                                   # a llama.cpp checkout
    if not found.is_dir():
        raise sb.BuildUnavailable(f"{origin}: {found} is not a folder")
    missing = [p for p in ("CMakeLists.txt", "include/ggml.h", "include/ggml-cpu.h", "src/ggml.c")
               if not (found / p).is_file()]
    if missing:
        raise sb.BuildUnavailable(f"{origin}: {found} is not a ggml checkout (no {', '.join(missing)})")
    for tool in ("cmake", "ninja", "cc", "c++"):
        if shutil.which(tool) is None:
            raise sb.BuildUnavailable(f"building ggml needs {tool} on PATH")
    return found


def cmake_version(root: Path) -> str:
    text = (root / "CMakeLists.txt").read_text(errors="replace")
    parts = [re.search(rf"set\(GGML_VERSION_{p}\s+(\d+)\)", text) for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) for m in parts) if all(parts) else "unknown"


def describe(root: Path) -> str:
    """The checkout's version: ``git describe`` of a git checkout, else the version in its
    CMakeLists.txt with the commit setup recorded for a snapshot (``.edgediff-snapshot``)."""
    described = sb.git_describe(root)
    if described:
        return described
    stamp = root / ".edgediff-snapshot"
    commit = stamp.read_text().strip() if stamp.is_file() else ""
    version = cmake_version(root)
    return f"v{version}-{commit}" if commit else f"v{version}"


def build(root: Path) -> Path:
    """``libedgediff-ggml.so`` for the checkout at ``root`` (built unless the cache has it)."""
    key = sb.tree_digest(root, ["CMakeLists.txt", "cmake", "include", "src"],
                         extra=check_source() + "|static,native=off,cpu|1")
    out = sb.cache_dir() / "ggml" / key
    lib = out / "libedgediff-ggml.so"
    with sb.locked(out.parent / f"{key}.lock"):
        if lib.is_file():
            return lib
        shutil.rmtree(out, ignore_errors=True)
        log = out / "build.log"
        bdir = out / "build"
        sb.run(["cmake", "-S", root, "-B", bdir, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                "-DGGML_NATIVE=OFF", "-DGGML_CUDA=OFF", "-DCMAKE_CUDA_COMPILER=OFF",
                "-DGGML_METAL=OFF", "-DGGML_VULKAN=OFF", "-DGGML_OPENMP=OFF",
                "-DGGML_BUILD_EXAMPLES=OFF", "-DGGML_BUILD_TESTS=OFF", "-DBUILD_SHARED_LIBS=OFF",
                "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
                f"-DCMAKE_C_FLAGS=-ffile-prefix-map={root}=ggml",
                f"-DCMAKE_CXX_FLAGS=-ffile-prefix-map={root}=ggml"],
               log, f"configuring ggml at {root} (cmake)", BUILD_TIMEOUT)
        sb.run(["cmake", "--build", bdir, "-j", str(os.cpu_count() or 2)], log,
               f"building ggml at {root}", BUILD_TIMEOUT)
        archives = [bdir / "src" / f"lib{n}.a" for n in ("ggml-cpu", "ggml", "ggml-base")]
        missing = [a.name for a in archives if not a.is_file()]
        if missing:
            raise sb.BuildUnavailable(f"the ggml build finished without {', '.join(missing)} (log: {log})")
        check = out / "edgediff_ggml_check.c"
        check.write_text(check_source())
        obj = out / "edgediff_ggml_check.o"
        sb.run(["cc", "-std=c11", "-O1", "-fPIC", "-c", check, "-o", obj, "-I", root / "include"],
               log, "checking edgediff's ggml binding against ggml.h (a prototype changed?)", 300)
        partial = out / "libedgediff-ggml.so.partial"
        sb.run(["c++", "-shared", "-o", partial, obj, "-Wl,--whole-archive", *archives,
                "-Wl,--no-whole-archive", "-Wl,-Bsymbolic", "-lm", "-lpthread", "-ldl"],
               log, "linking libedgediff-ggml.so", 300)
        (out / "VERSION").write_text(describe(root) + "\n")
        partial.rename(lib)
    return lib


# ---- the binding object ------------------------------------------------------------------------

class Binding:
    """ggml-python's names over ``libedgediff-ggml.so``: the functions of ``FUNCTIONS``, the
    constants, ``ggml_init_params``, ``ggml_fp16_t``, tensors as ``POINTER(ggml_tensor)``."""

    def __init__(self, lib_path: Path, version: str):
        self.lib = ctypes.CDLL(str(lib_path))
        self.checkout_version = version
        consts = (ctypes.c_int64 * len(CONSTANTS)).in_dll(self.lib, "edgediff_ggml_constants")
        for name, value in zip(CONSTANTS, consts):
            setattr(self, name, int(value))
        layout = dict(zip((n for n, _ in LAYOUT),
                          (ctypes.c_int64 * len(LAYOUT)).in_dll(self.lib, "edgediff_ggml_layout")))
        dims = self.GGML_MAX_DIMS
        self.ggml_tensor = _struct("ggml_tensor", layout["tensor"], [
            ("type", layout["type"], ctypes.c_int), ("ne", layout["ne"], ctypes.c_int64 * dims),
            ("nb", layout["nb"], ctypes.c_size_t * dims), ("data", layout["data"], ctypes.c_void_p)])
        self.ggml_init_params = _struct("ggml_init_params", layout["params"], [
            ("mem_size", layout["mem_size"], ctypes.c_size_t),
            ("mem_buffer", layout["mem_buffer"], ctypes.c_void_p),
            ("no_alloc", layout["no_alloc"], ctypes.c_bool)])
        self.ggml_fp16_t = ctypes.c_uint16
        tensor_p = ctypes.POINTER(self.ggml_tensor)
        ctypes_of = {
            "ctx": ctypes.c_void_p, "tensor": tensor_p, "ctensor": tensor_p, "graph": ctypes.c_void_p,
            "int": ctypes.c_int, "int64": ctypes.c_int64, "size": ctypes.c_size_t,
            "float": ctypes.c_float, "bool": ctypes.c_bool, "void": None, "voidp": ctypes.c_void_p,
            "cstr": ctypes.c_char_p, "type": ctypes.c_int, "pool": ctypes.c_int, "status": ctypes.c_int,
            "params": self.ggml_init_params, "cfloatp": ctypes.POINTER(ctypes.c_float),
            "fp16p": ctypes.POINTER(ctypes.c_uint16), "cint64p": ctypes.POINTER(ctypes.c_int64),
        }
        for fn, (ret, args) in FUNCTIONS.items():
            f = getattr(self.lib, fn)
            f.restype = ctypes_of[ret]
            f.argtypes = [ctypes_of[a] for a in args]
            setattr(self, fn, f)


def _struct(name, size, fields):
    """A ctypes Structure of ``size`` bytes with ``fields`` (name, offset, type) at those offsets."""
    spec, at = [], 0
    for i, (fname, offset, ctype) in enumerate(sorted(fields, key=lambda f: f[1])):
        if offset > at:
            spec.append((f"_pad{i}", ctypes.c_char * (offset - at)))
        spec.append((fname, ctype))
        at = offset + ctypes.sizeof(ctype)
    if size > at:
        spec.append(("_tail", ctypes.c_char * (size - at)))
    cls = type(name, (ctypes.Structure,), {"_fields_": spec})
    for fname, offset, _ in fields:
        if getattr(cls, fname).offset != offset:
            raise sb.BuildUnavailable(f"struct {name}: field {fname} lands at "
                                      f"{getattr(cls, fname).offset}, ggml.h says {offset}")
    return cls


def load(root=None) -> Binding:
    """Build (if needed) and load ggml from ``root`` or ``$GGML_ROOT``. A worker whose parent
    already located the build for this checkout gets it as ``EDGEDIFF_GGML_LIB``."""
    found = locate(root)
    known = os.environ.get("EDGEDIFF_GGML_LIB", "")
    if known and os.environ.get("EDGEDIFF_GGML_LIB_FOR") == str(found) and Path(known).is_file():
        return Binding(Path(known), describe(found))
    return Binding(build(found), describe(found))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        binding = load(argv[0] if argv else None)
    except sb.BuildUnavailable as exc:
        print(f"ggml from source: {exc}", file=sys.stderr)
        return 3
    print(f"ggml from source: {binding.checkout_version} (ggml_version() = "
          f"{binding.ggml_version().decode()}), {binding.lib._name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
