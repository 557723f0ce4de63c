"""Unpack the backend source snapshots of ``../shared/third_party/`` (when present) as stand-in
checkouts, build them, and record where they are for the adapters (executorch-ggml, ggml, CMSIS-NN, ExecuTorch's Cortex-M backend).

A backend engineer points edgediff at their own checkout with an environment variable
(``EXECUTORCH_GGML_ROOT``, ...). On edgediff's own machines and in CI the snapshots stand in for
those checkouts: this script unpacks each into the edgediff cache (``adapters._source_build.
cache_dir()``, outside this repository and outside the snapshot folder, which is read-only),
applies the build-fix patch that comes with it, writes the snapshot's commit into
``.edgediff-snapshot`` (the trees have no ``.git``), records the checkout in the virtual
environment's ``checkouts.json`` and builds it, so the tests run the real backend.

    python scripts/snapshots.py [--third-party DIR]     # default: ../shared/third_party

Exit 0 when every snapshot found was unpacked and built (or there were none); 3 when one could
not be (the adapter then reports itself unavailable with the reason, and its tests skip).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from adapters import _source_build as sb  # noqa: E402


def unpack(tarball: Path, top: str, dest: Path) -> None:
    """Unpack ``tarball``'s single folder ``top`` as ``dest`` (atomically: a half-unpacked tree
    is never left under the final name)."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tarball) as tf:
        tf.extractall(tmp, filter="data")
    if not (tmp / top).is_dir():
        raise RuntimeError(f"{tarball.name} does not unpack into {top}/")
    shutil.rmtree(dest, ignore_errors=True)
    (tmp / top).rename(dest)
    shutil.rmtree(tmp, ignore_errors=True)


def commit_of(tarball: Path, project: str) -> str:
    m = re.fullmatch(rf"{re.escape(project)}-([0-9a-f]+)\.tar\.gz", tarball.name)
    return m.group(1) if m else "unknown"


def executorch_ggml(third_party: Path, src: Path) -> str | None:
    """The executorch-ggml snapshot with ggml at third-party/llama.cpp/ggml, patched."""
    tars = sorted(third_party.glob("executorch-ggml-*.tar.gz"))
    ggml_tars = sorted(third_party.glob("ggml-*.tar.gz"))
    if not tars or not ggml_tars:
        return None
    tar, ggml_tar = tars[-1], ggml_tars[-1]
    commit, ggml_commit = commit_of(tar, "executorch-ggml"), commit_of(ggml_tar, "ggml")
    dest = src / f"executorch-ggml-{commit}+ggml-{ggml_commit}"
    stamp = dest / ".edgediff-snapshot"
    if stamp.is_file():
        return str(dest)
    unpack(tar, "executorch-ggml", dest)
    llama = dest / "third-party/llama.cpp"
    shutil.rmtree(llama, ignore_errors=True)
    unpack(ggml_tar, "ggml", llama / "ggml")
    (llama / "ggml/.edgediff-snapshot").write_text(ggml_commit + "\n")
    patch = third_party / f"executorch-ggml-{commit}-build-fixes.patch"
    if patch.is_file():
        with open(patch) as fh:
            subprocess.run(["patch", "-p1", "--quiet"], stdin=fh, cwd=dest, check=True)
    stamp.write_text(commit + "\n")
    return str(dest)


def ggml(third_party: Path, src: Path) -> str | None:
    """ggml on its own (the ``ggml@`` backend: ggml built from a checkout, beside ggml-python's)."""
    tars = sorted(third_party.glob("ggml-*.tar.gz"))
    if not tars:
        return None
    commit = commit_of(tars[-1], "ggml")
    root = src / f"ggml-{commit}"
    if not (root / ".edgediff-snapshot").is_file():
        unpack(tars[-1], "ggml", root)
        (root / ".edgediff-snapshot").write_text(commit + "\n")
    return str(root)


def executorch_cortex_m(third_party: Path, src: Path) -> str | None:
    """ExecuTorch's Cortex-M backend sources (backends/cortex_m, codegen, kernels/portable): the
    ExecuTorch tree the ``cortex_m`` adapter builds its kernels from."""
    tars = sorted(third_party.glob("executorch-cortex_m-*.tar.gz"))
    if not tars:
        return None
    commit = commit_of(tars[-1], "executorch-cortex_m")
    root = src / f"executorch-cortex_m-{commit}"
    if not (root / ".edgediff-snapshot").is_file():
        unpack(tars[-1], "executorch-cortex_m", root)
        (root / ".edgediff-snapshot").write_text(commit + "\n")
    return str(root)


def cmsis_nn(third_party: Path, src: Path) -> dict | None:
    """CMSIS-NN unpacked, and built twice with its own CMake (plain-C kernels, position
    independent, -O2 as the Cortex-M notes advise): the default double rounding, and
    CMSIS_NN_USE_SINGLE_ROUNDING. Returns the variables the cmsis_nn adapter reads."""
    tars = sorted(third_party.glob("CMSIS-NN-*.tar.gz"))
    if not tars:
        return None
    commit = commit_of(tars[-1], "CMSIS-NN")
    root = src / f"CMSIS-NN-{commit}"
    if not (root / ".edgediff-snapshot").is_file():
        unpack(tars[-1], "CMSIS-NN", root)
        (root / ".edgediff-snapshot").write_text(commit + "\n")
    libs = {}
    for rounding, flags in (("double", ""), ("single", "-DCMSIS_NN_USE_SINGLE_ROUNDING")):
        build = sb.cache_dir() / "cmsis-nn" / f"{commit}-{rounding}"
        lib = build / "libcmsis-nn.a"
        if not lib.is_file():
            log = build / "build.log"
            sb.run(["cmake", "-S", root, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                    "-DCMAKE_POSITION_INDEPENDENT_CODE=ON", "-DCMSIS_OPTIMIZATION_LEVEL=-O2",
                    f"-DCMAKE_C_FLAGS={flags}"], log, f"configuring CMSIS-NN ({rounding})", 600)
            sb.run(["cmake", "--build", build, "-j", "2"], log, f"building CMSIS-NN ({rounding})", 900)
        libs[rounding] = str(lib)
    return {"CMSIS_NN_ROOT": str(root), "CMSIS_NN_LIB": libs["double"],
            "CMSIS_NN_LIB_SINGLE": libs["single"]}


def record_one(variable):
    """Wrap a preparer that returns one checkout path as {variable: path}."""
    def wrap(prepare):
        def run(third_party, src):
            path = prepare(third_party, src)
            return None if path is None else {variable: path}
        return run
    return wrap


SNAPSHOTS = {"executorch-ggml": (record_one("EXECUTORCH_GGML_ROOT")(executorch_ggml),
                                 [sys.executable, "-m", "adapters.executorch_ggml"]),
             "ggml": (record_one("GGML_ROOT")(ggml), [sys.executable, "-m", "adapters._ggml_source"]),
             "CMSIS-NN": (cmsis_nn, [sys.executable, "adapters/_cmsis_nn/build.py"]),
             "executorch-cortex_m": (record_one("EXECUTORCH_ROOT")(executorch_cortex_m),
                                     [sys.executable, "-m", "adapters.cortex_m"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--third-party", type=Path, default=REPO.parent / "shared" / "third_party")
    args = ap.parse_args(argv)
    if not args.third_party.is_dir():
        print(f"snapshots: no {args.third_party}; backends built from source need their "
              "checkout variables (see README)")
        return 0
    record_file = sb.checkouts_file()
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        record = {}
    status = 0
    for project, (prepare, check) in SNAPSHOTS.items():
        try:
            found = prepare(args.third_party, sb.cache_dir() / "src")
        except (OSError, RuntimeError, subprocess.CalledProcessError, tarfile.TarError,
                sb.BuildUnavailable) as exc:
            print(f"snapshots: {project}: could not unpack or build: {exc}")
            status = 3
            continue
        if found is None:
            continue
        record.update(found)
        record_file.write_text(json.dumps(record, indent=2) + "\n")
        print(f"snapshots: {project} -> " + ", ".join(f"{k}={v}" for k, v in found.items()))
        if subprocess.run(check, cwd=REPO).returncode != 0:      # builds edgediff's side
            status = 3
    return status


if __name__ == "__main__":
    sys.exit(main())
