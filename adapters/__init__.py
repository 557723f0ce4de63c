"""The adapter contract, and the registry of built-in adapters.

An adapter is any object (a module is fine) with:

- ``name`` (str) and ``version`` (the backend library's version string);
- functions named and shaped like ``reference``'s ops (``conv2d(x, w, b=None, stride=1,
  padding=0, dilation=1, groups=1)``, ``clamp(x, min=None, max=None)``, ...), taking and
  returning NumPy arrays in NCHW order. A 4-D input whose strides are NHWC-contiguous is a
  channels_last input; an adapter for a backend with layouts should honour it;
- optionally ``paths``: ``{op: ("path-a", "path-b")}`` when the backend has several ways to
  compute an op; the op function then takes a ``path=`` keyword. Without it, every op has
  one path, ``"default"``;
- optionally ``arithmetic(op, path) -> edgediff.tolerance.Arithmetic`` (default float32
  inputs and accumulation), which selects the tolerance model;
- optionally ``repro_source(op, path) -> str``: Python source that defines
  ``run(inputs: dict, params: dict) -> np.ndarray`` using only NumPy and the backend, for the
  standalone ``repro.py`` of a finding;
- optionally ``isolated = True`` (run in a worker process) and ``python`` (its interpreter);
  ``timeout`` and ``worker_env`` for the worker; ``fork_server = True`` with ``prewarm()``:
  the worker imports the backend once and serves from forked children, so a crash costs a
  fork instead of a new interpreter (and every failing example gets a fresh child);
- optionally ``max_examples(op, path)`` and ``values_per_structure(op, path)`` (slow backends:
  structures per test in the dev/ci profiles, value sets checked on each structure);
- optionally ``standalone_repro(op, path, inputs, params, layout, expected, bound, title) ->
  str``: a whole ``repro.py`` in the backend's own idiom with the data inline (used instead
  of the generic template that loads ``case.json``);
- optionally ``graph_arithmetic(op, path)``: the arithmetic of a graph node (float32 default);
- optionally ``run_graph(graph, arrays, path=...) -> ({node name: array}, facts)`` and
  ``graph_paths``: run an ``edgediff.graph`` Graph (``graph`` is its ``spec()``: nodes with
  op, inputs by argument name and params; ``arrays`` holds its inputs, NHWC-strided for
  channels_last, and constants) as ONE backend program, and return the nodes whose values the
  backend can observe without changing what it runs (nodes hidden by a fusion or overwritten
  in place are left out; ``edgediff.graph_check`` compares them together with the next
  returned node). Isolated adapters run graphs in their worker (``edgediff.worker``).

A configuration the backend cannot express raises ``Unsupported(reason)`` *before* calling
the backend. Anything the backend does after that (wrong values, exceptions, crashes) is a
result that edgediff compares and reports.
"""
from __future__ import annotations

import importlib

BUILTINS = {
    "torch": "adapters.torch_eager",
    "xnnpack": "adapters.xnnpack",
    "executorch_portable": "adapters.executorch_portable",
    "ggml": "adapters.ggml",
    "ttnn": "adapters.ttnn",
    "cmsis_nn": "adapters.cmsis_nn",
    "litert": "adapters.litert",
    "executorch_ggml": "adapters.executorch_ggml",
    "cortex_m": "adapters.cortex_m",
}
DEFAULT_PATH = "default"


class Unsupported(Exception):
    """The backend cannot express this configuration; raised before calling the backend."""


class AdapterUnavailable(Exception):
    """A built-in adapter whose backend is not installed or cannot run here."""


class UsageError(Exception):
    """A bad backend name or adapter spec given by the user."""


def load(name: str):
    """The built-in adapter called ``name``; raises AdapterUnavailable with the reason.

    ``NAME@PATH`` is a built-in built from the source checkout at PATH (``NAME@`` alone: the
    checkout its variable names, e.g. ``$GGML_ROOT``), for the adapters that can
    (``from_checkout``)."""
    base, at, where = name.partition("@")
    if at:
        module = load(base) if base in BUILTINS else None
        if module is None or not callable(getattr(module, "from_checkout", None)):
            able = [n for n in BUILTINS if n in FROM_CHECKOUT]
            raise UsageError(f"--backend {name!r}: {base!r} cannot be built from a checkout "
                             f"(NAME@PATH works for: {', '.join(able)})")
        return module.from_checkout(where)
    if name not in BUILTINS:
        raise UsageError(f"unknown backend {name!r}; known backends: {', '.join(BUILTINS)}")
    try:
        module = importlib.import_module(BUILTINS[name])
    except ModuleNotFoundError as exc:
        if exc.name == BUILTINS[name]:
            raise AdapterUnavailable(f"{name}: no adapter module yet ({BUILTINS[name]})") from None
        raise AdapterUnavailable(f"{name}: {exc.name} is not installed ({exc})") from None
    except ImportError as exc:
        raise AdapterUnavailable(f"{name}: import failed: {exc}") from None
    reason = getattr(module, "unavailable_reason", lambda: None)()
    if reason:
        raise AdapterUnavailable(f"{name}: {reason}")
    return module


# Built-ins that also build from a source checkout (``NAME@PATH``), with the variable that
# names the checkout a default run includes (set by the user, or recorded by scripts/setup.sh).
FROM_CHECKOUT = {"ggml": "GGML_ROOT"}


def default_backends() -> list[str]:
    """What a run without ``--backend`` selects: every built-in, plus ``NAME@`` for each
    checkout variable that is set or recorded (so ggml runs both as ggml-python's build and as
    the checkout's)."""
    from adapters._source_build import checkout
    names = list(BUILTINS)
    for base, variable in FROM_CHECKOUT.items():
        if checkout(variable)[0] is not None:
            names.insert(names.index(base) + 1, f"{base}@")
    return names


def available() -> tuple[list[str], dict[str, str]]:
    """(names of built-ins that can run here, {name: reason} for the ones that cannot)."""
    ok, missing = [], {}
    for name in default_backends():
        try:
            load(name)
            ok.append(name)
        except AdapterUnavailable as exc:
            missing[name] = str(exc)
    return ok, missing


def load_spec(spec: str):
    """A user adapter from ``package.module:attribute`` (or a whole module ``package.module``)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--adapter {spec!r}: cannot import {module_name!r}: {exc}") from None
    obj = getattr(module, attr, None) if attr else module
    if attr and obj is None:
        raise UsageError(f"--adapter {spec!r}: {module_name} has no attribute {attr!r}")
    check_contract(obj, spec)
    return obj


def check_contract(adapter, label: str) -> None:
    missing = [a for a in ("name", "version") if not isinstance(getattr(adapter, a, None), str)]
    if missing:
        raise UsageError(f"adapter {label!r} lacks string attribute(s) {missing}")


def paths(adapter, op: str) -> tuple[str, ...]:
    """The named ways ``adapter`` computes ``op`` (empty when it has no such op)."""
    if not callable(getattr(adapter, op, None)):
        return ()
    declared = getattr(adapter, "paths", None)
    if isinstance(declared, dict):
        return tuple(declared.get(op, ()))
    return (DEFAULT_PATH,)


def arithmetic(adapter, op: str, path: str):
    from edgediff.tolerance import FLOAT32
    fn = getattr(adapter, "arithmetic", None)
    return fn(op, path) if callable(fn) else FLOAT32


def call(adapter, op: str, path: str, arrays: dict, params: dict):
    """Run ``op`` on ``adapter`` through ``path``; inputs are passed by name."""
    fn = getattr(adapter, op, None)
    if not callable(fn):
        raise Unsupported(f"{adapter.name} has no {op}")
    kwargs = dict(params)
    if isinstance(getattr(adapter, "paths", None), dict):
        kwargs["path"] = path
    return fn(**arrays, **kwargs)
