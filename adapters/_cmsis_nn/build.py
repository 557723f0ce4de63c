"""Compile edgediff's CMSIS-NN binding (binding.cpp) against a CMSIS-NN the user built.

edgediff ships no CMSIS-NN code and never fetches or builds it. Point it at your build:

    CMSIS_NN_ROOT=/path/to/CMSIS-NN            # source root; headers in $CMSIS_NN_ROOT/Include
    CMSIS_NN_LIB=/path/to/build/libcmsis-nn.a  # the static library CMSIS-NN's CMake built
                                               # (configured with
                                               #  -DCMAKE_POSITION_INDEPENDENT_CODE=ON)
    # or CMSIS_NN_INCLUDE=/path/to/Include instead of CMSIS_NN_ROOT
    # optional: CMSIS_NN_DEFINES="-DCMSIS_NN_USE_SINGLE_ROUNDING"  (flags for binding.cpp only;
    #           the kernels' rounding is whatever the library was built with, and the adapter
    #           detects it numerically)
    # optional: CMSIS_NN_BUILD_DIR (cache; default adapters/_cmsis_nn/_build), CXX (compiler)

Only binding.cpp is compiled; the library is linked in. The extension lands in a cache
directory keyed by the binding source, the headers, the library file, the flags and the
Python version, so a rebuilt library gets a fresh extension. ``python
adapters/_cmsis_nn/build.py`` builds it and prints what was found.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shlex
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "binding.cpp"
MODULE = "_cmsis_nn_binding"
DEFAULT_CACHE = HERE / "_build"
HEADERS = ("arm_nnfunctions.h", "arm_nn_types.h", "arm_nnsupportfunctions.h")
COMPILE_TIMEOUT = 300


class BuildUnavailable(Exception):
    """CMSIS-NN is not supplied (env vars missing or wrong), or the binding did not build."""


@dataclass(frozen=True)
class Config:
    include: Path
    lib: Path
    root: Path | None
    defines: tuple[str, ...]


def locate(env=None) -> Config:
    """The CMSIS-NN headers and library named by the environment, or BuildUnavailable."""
    env = os.environ if env is None else env
    root, inc, lib = (env.get(k, "").strip()
                      for k in ("CMSIS_NN_ROOT", "CMSIS_NN_INCLUDE", "CMSIS_NN_LIB"))
    if env is os.environ and not (root or inc or lib):     # what scripts/setup.sh built
        root, lib = (str(_recorded(k) or "") for k in ("CMSIS_NN_ROOT", "CMSIS_NN_LIB"))
    if not (root or inc) or not lib:
        missing = [k for k, v in (("CMSIS_NN_ROOT (or CMSIS_NN_INCLUDE)", root or inc),
                                  ("CMSIS_NN_LIB", lib)) if not v]
        raise BuildUnavailable(
            f"CMSIS-NN is not supplied: set {' and '.join(missing)}. edgediff does not ship or "
            "build CMSIS-NN; build ARM-software/CMSIS-NN with its CMake "
            "(-DCMAKE_POSITION_INDEPENDENT_CODE=ON), then set CMSIS_NN_ROOT to the source root "
            "(with Include/) and CMSIS_NN_LIB to the built libcmsis-nn.a")
    include = Path(inc).expanduser() if inc else Path(root).expanduser() / "Include"
    if not (include / "arm_nnfunctions.h").is_file():
        raise BuildUnavailable(f"no arm_nnfunctions.h in {include} "
                               f"({'CMSIS_NN_INCLUDE' if inc else 'CMSIS_NN_ROOT/Include'})")
    lib_path = Path(lib).expanduser()
    if not lib_path.is_file():
        raise BuildUnavailable(f"CMSIS_NN_LIB={lib} is not a file (expected the libcmsis-nn.a "
                               "that CMSIS-NN's CMake build produced)")
    root_path = Path(root).expanduser().resolve() if root else None
    defines = tuple(shlex.split(env.get("CMSIS_NN_DEFINES", "")))
    return Config(include.resolve(), lib_path.resolve(), root_path, defines)


def _recorded(variable):
    """The path scripts/setup.sh recorded for ``variable`` (a snapshot it built), or None."""
    try:
        sys.path.insert(0, str(HERE.parent.parent))
        from adapters._source_build import checkout
    except ImportError:
        return None
    path, _ = checkout(variable)
    return path


def _pybind11_include() -> str:
    try:
        import pybind11
    except ImportError:
        raise BuildUnavailable("pybind11 is not installed (pip install pybind11)") from None
    return pybind11.get_include()


def _key(cfg: Config, cxx: str) -> str:
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    for name in HEADERS:
        p = cfg.include / name
        h.update(p.read_bytes() if p.is_file() else b"-")
    st = cfg.lib.stat()
    h.update(f"{cfg.lib}|{st.st_size}|{st.st_mtime_ns}|{cfg.defines}|{cxx}|{sys.version}".encode())
    h.update((sysconfig.get_config_var("EXT_SUFFIX") or "").encode())
    return h.hexdigest()[:16]


def build(env=None) -> Path:
    """The compiled extension for this configuration, compiling it if it is not cached."""
    env = os.environ if env is None else env
    cfg = locate(env)
    cxx = env.get("CXX", "c++")
    cache = Path(env.get("CMSIS_NN_BUILD_DIR") or DEFAULT_CACHE) / _key(cfg, cxx)
    target = cache / (MODULE + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{MODULE}.{os.getpid()}.tmp.so"
    cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden",
           "-I", _pybind11_include(), "-I", sysconfig.get_paths()["include"], "-I", str(cfg.include),
           *cfg.defines, str(SOURCE), str(cfg.lib), "-o", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
    except FileNotFoundError:
        raise BuildUnavailable(f"no C++ compiler {cxx!r} on PATH (set CXX)") from None
    except subprocess.TimeoutExpired:
        raise BuildUnavailable(
            f"compiling the CMSIS-NN binding took over {COMPILE_TIMEOUT} s") from None
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BuildUnavailable(f"the CMSIS-NN binding did not compile ({shlex.join(cmd)}):\n{tail}")
    (cache / "command.txt").write_text(shlex.join(cmd) + "\n")
    os.replace(tmp, target)                      # atomic: concurrent builders both succeed
    return target


def load(env=None):
    """Build if needed and import the extension module."""
    path = build(env)
    loader = importlib.machinery.ExtensionFileLoader(MODULE, str(path))
    spec = importlib.util.spec_from_file_location(MODULE, str(path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    try:
        loader.exec_module(module)
    except ImportError as exc:
        raise BuildUnavailable(
            f"the CMSIS-NN binding built but does not load: {exc} (was CMSIS_NN_LIB built "
            "with -DCMAKE_POSITION_INDEPENDENT_CODE=ON?)") from None
    return module


def cmsis_version(cfg: Config) -> str:
    """``<pack release> (git <commit>)`` from ARM.CMSIS-NN.pdsc and the checkout's .git,
    read as files (no git command); "unknown" parts when they cannot be found."""
    root = cfg.root or cfg.include.parent
    release = "unknown"
    pdsc = root / "ARM.CMSIS-NN.pdsc"
    if pdsc.is_file():
        import re
        m = re.search(r'<release\s+version="([^"]+)"', pdsc.read_text(errors="replace"))
        if m:
            release = m.group(1)
    commit = _git_head(root)
    if commit is None and (root / ".edgediff-snapshot").is_file():      # setup's snapshot
        commit = (root / ".edgediff-snapshot").read_text().strip()
    return f"{release} (git {commit[:8]})" if commit else release


def _git_head(root: Path) -> str | None:
    git = root / ".git"
    try:
        if git.is_file():                                    # worktree / submodule: "gitdir: ..."
            text = git.read_text().strip()
            if text.startswith("gitdir:"):
                git = (root / text.split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        for base in (git, _common_dir(git)):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
    except OSError:
        return None
    return None


def _common_dir(git: Path) -> Path:
    common = git / "commondir"
    return (git / common.read_text().strip()).resolve() if common.is_file() else git


if __name__ == "__main__":
    try:
        cfg = locate()
        path = build()
    except BuildUnavailable as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"extension : {path}")
    print(f"CMSIS-NN  : {cmsis_version(cfg)} from {cfg.include}, {cfg.lib}")
    sys.path.insert(0, str(HERE.parent.parent))
    from adapters import cmsis_nn
    print(f"rounding  : {cmsis_nn.rounding()}")
