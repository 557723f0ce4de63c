"""Building a backend from the user's own checkout, into a cache outside that checkout.

A backend engineer gates *their* tree: an environment variable names the checkout
(``EXECUTORCH_GGML_ROOT``, ``GGML_ROOT``, ``CMSIS_NN_ROOT``, ...). edgediff never builds in place
(the tree may be read-only, and a build writes generated headers and libraries into it): the
build happens under ``cache_dir()`` in a folder keyed by the *content* of the sources that go
into it, so an edited source gets a fresh build and an unchanged one is reused.

``scripts/setup.sh`` unpacks the source snapshots of ``../shared/third_party/`` (when present)
and records where they went in ``checkouts.json`` in the virtual environment; a variable the
user sets always wins over that record.

Nothing here knows a particular backend: ``adapters/executorch_ggml.py`` and the others say
which files matter and how to build.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


class BuildUnavailable(Exception):
    """The checkout is not named, lacks a piece, or did not build: the message says which."""


def cache_dir() -> Path:
    """``EDGEDIFF_CACHE``, else ``$XDG_CACHE_HOME/edgediff`` (``~/.cache/edgediff``)."""
    explicit = os.environ.get("EDGEDIFF_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgediff"


def checkouts_file() -> Path:
    """Where ``scripts/setup.sh`` records the snapshot checkouts it unpacked."""
    return Path(sys.prefix) / "checkouts.json"


def checkout(variable: str) -> tuple[Path | None, str]:
    """(path, where it came from) of the checkout named by ``variable``, or (None, "")."""
    value = os.environ.get(variable, "").strip()
    if value:
        return Path(value).expanduser(), f"${variable}"
    try:
        recorded = json.loads(checkouts_file().read_text()).get(variable)
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded:
        return Path(recorded), f"{variable} recorded by scripts/setup.sh"
    return None, ""


def tree_digest(root: Path, subdirs, suffixes=(".c", ".cc", ".cpp", ".h", ".hpp", ".cu", ".fbs",
                                                ".cmake", ".txt", ".in", ".py", ".yaml"),
                extra: str = "") -> str:
    """sha256 (16 hex digits) over the relative path and bytes of every source file below
    ``root/<subdir>`` for each of ``subdirs`` (a file name is taken as is), plus ``extra``."""
    h = hashlib.sha256(extra.encode())
    for sub in subdirs:
        top = root / sub
        files = [top] if top.is_file() else sorted(
            p for p in top.rglob("*") if p.is_file() and p.suffix in suffixes
            and "__pycache__" not in p.parts and ".git" not in p.parts)
        for p in files:
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on ``path`` (created): parallel test workers build once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run(cmd: list, log: Path, what: str, timeout: float, cwd=None, env=None) -> None:
    """Run a build step, appending its output to ``log``; BuildUnavailable with the last lines
    of the output when it fails or times out."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "a") as fh:
        fh.write(f"$ {shlex.join(str(c) for c in cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.run([str(c) for c in cmd], stdout=fh, stderr=subprocess.STDOUT,
                                  cwd=cwd, env=env, timeout=timeout)
        except FileNotFoundError:
            raise BuildUnavailable(f"{what}: {cmd[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise BuildUnavailable(f"{what} took over {timeout:.0f} s (log: {log})") from None
        fh.write(f"# exit {proc.returncode} after {time.monotonic() - start:.1f} s\n")
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:])
        raise BuildUnavailable(f"{what} failed (exit {proc.returncode}; log: {log}):\n{tail}")


def git_describe(root: Path) -> str | None:
    """``git describe --always --dirty`` of a git checkout; None when it is not one."""
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--tags", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
