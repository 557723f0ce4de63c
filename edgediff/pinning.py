"""Backend version pinning: ``--backend NAME==VERSION``.

A pinned backend runs in its own virtual environment, created once and cached under
``.venvs/NAME-VERSION`` (same Python as edgediff, the backend's PyPI package at that version
plus NumPy), through the isolated worker. Its findings carry the label ``NAME==VERSION`` and
the version the worker reports, so two pins of one backend can run side by side in a gate
(``--backend litert==2.3.0,litert==2.2.0``) to compare a release candidate with the last
release or bisect a regression.

An adapter module says how to install its backend with ``pip_package`` (the distribution
name) and optionally ``pip_requires`` (other requirements, e.g. a pinned torch).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import adapters
from edgediff.findings import locked

REPO = Path(__file__).resolve().parent.parent
VENVS = Path(os.environ.get("EDGEDIFF_VENVS", REPO / ".venvs"))


def split_pin(text: str) -> tuple[str, str | None]:
    name, sep, version = text.partition("==")
    name, version = name.strip(), version.strip()
    if sep and not version:
        raise adapters.UsageError(f"--backend {text!r}: missing version after '=='")
    return name, (version or None)


def environment_for(name: str, version: str, module) -> Path:
    """The interpreter of a venv holding ``module.pip_package==version`` (created if needed)."""
    package = getattr(module, "pip_package", None)
    if not package:
        raise adapters.UsageError(f"--backend {name}=={version}: {name} is not installed from PyPI, "
                                  "so it cannot be pinned")
    venv = VENVS / f"{name}-{version}"
    python = venv / "bin" / "python"
    stamp = venv / ".edgediff-ready"
    with locked(VENVS):
        if not stamp.exists():
            requirements = [f"{package}=={version}", "numpy"] + list(getattr(module, "pip_requires", ()))
            try:
                if not python.exists():
                    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                                   capture_output=True, text=True)
                subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                *requirements], check=True, capture_output=True, text=True)
            except subprocess.CalledProcessError as exc:
                tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
                raise adapters.AdapterUnavailable(
                    f"{name}=={version}: could not create its environment: {' / '.join(tail)}") from None
            stamp.write_text(" ".join(requirements) + "\n")
    return python


def load_pinned(text: str, ops):
    """An IsolatedAdapter for ``NAME==VERSION`` running in that version's environment."""
    from edgediff.isolation import isolate
    name, version = split_pin(text)
    if name not in adapters.BUILTINS:
        raise adapters.UsageError(f"unknown backend {name!r}; known backends: {', '.join(adapters.BUILTINS)}")
    import importlib
    try:
        module = importlib.import_module(adapters.BUILTINS[name])
    except ImportError as exc:
        raise adapters.AdapterUnavailable(f"{name}: no adapter module ({exc})") from None
    python = environment_for(name, version, module)
    adapter = isolate(module, name, ops, label=f"{name}=={version}", python=str(python))
    if version not in adapter.version:
        adapter.close()
        raise adapters.AdapterUnavailable(
            f"{name}=={version}: the environment reports version {adapter.version!r}")
    return adapter
