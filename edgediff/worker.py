"""Worker process for an isolated adapter: ``python -m edgediff.worker ADAPTER``.

ADAPTER is a built-in name or ``module:attribute``. The worker imports only NumPy, the
adapter and this package's wire format, so it runs under another interpreter or
virtual environment (for example TT-NN's Python 3.12 with numpy<2).

Protocol, over the process's original stdout (fd 1 is then pointed at stderr, so
whatever the backend prints cannot corrupt it): a hello message with the adapter's
name, version, paths, arithmetic and repro sources (and ``graph_paths`` when the adapter
has ``run_graph``); then one reply per request: ``{"op", "path", "params"}`` for one op,
``{"graph", "path"}`` for a whole graph (``edgediff.graph``).
"""
from __future__ import annotations

import os
import sys
import traceback


def _load(spec: str):
    import adapters
    if ":" in spec or spec.partition("@")[0] not in adapters.BUILTINS:
        return adapters.load_spec(spec)
    return adapters.load(spec)


def _describe(adapter, ops):
    import adapters
    paths, arith, repro = {}, {}, {}
    for op in ops:
        ps = adapters.paths(adapter, op)
        if not ps:
            continue
        paths[op] = list(ps)
        for p in ps:
            arith[f"{op}|{p}"] = vars(adapters.arithmetic(adapter, op, p)).copy()
            src = getattr(adapter, "repro_source", None)
            repro[f"{op}|{p}"] = src(op, p) if callable(src) else None
    return {"name": adapter.name, "version": adapter.version, "paths": paths,
            "python": sys.executable, "python_version": sys.version.split()[0],
            "arithmetic": arith, "repro": repro,
            "declares_paths": isinstance(getattr(adapter, "paths", None), dict)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec, ops = argv[0], argv[1].split(",")
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)                                    # backend prints go to stderr
    sys.stdout = sys.stderr
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    from edgediff.wire import pack, unpack
    import adapters
    try:
        adapter = _load(spec)
        fork = bool(getattr(adapter, "fork_server", False)) and hasattr(os, "fork")
        if fork and callable(getattr(adapter, "prewarm", None)):
            adapter.prewarm()                   # import the backend once, before any fork
        hello = {"status": "ready", **_describe(adapter, ops), "fork_server": fork}
        if callable(getattr(adapter, "run_graph", None)):      # this adapter also runs graphs
            hello["graph_paths"] = list(getattr(adapter, "graph_paths", ("default",)))
    except Exception as exc:  # unavailable: say why and stop
        channel.write(pack({"status": "unavailable", "reason": f"{type(exc).__name__}: {exc}"}))
        return 0
    channel.write(pack(hello))
    if fork:
        return fork_server(adapter, stdin, channel)
    return serve(adapter, stdin, channel)


RECYCLE_EXIT = 75      # a fork-server child that leaves on request (``{"recycle": true}``)


def fork_server(adapter, stdin, channel) -> int:
    """Serve from forked children of this process, which keeps the imported backend and runs
    nothing itself. A child that dies (an abort, a segfault) is reported with a ``died`` reply
    in place of its answer and replaced by a new fork: milliseconds, instead of a new
    interpreter importing the backend again (~6 s for torch + ExecuTorch), which is what
    shrinking a crash costs per step. A hang still kills the whole process group. The test
    process asks for a fresh child after every failing example (``recycle``): a backend that
    corrupted its heap then cannot make the next, innocent example crash."""
    from edgediff.wire import pack
    while True:
        pid = os.fork()
        if pid == 0:                                  # the child serves until stdin closes
            code = 1
            try:
                code = serve(adapter, stdin, channel)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return 0                                  # stdin closed: the run is over
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == RECYCLE_EXIT:
            channel.write(pack({"status": "recycled"}))   # asked for: a fresh child next
            continue
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        channel.write(pack({"status": "died", "returncode": rc}))


def serve(adapter, stdin, channel) -> int:
    from edgediff.wire import pack, unpack
    import adapters
    while True:
        try:
            req, arrays = unpack(stdin)
        except EOFError:
            return 0
        if req.get("recycle"):
            return RECYCLE_EXIT
        try:
            graph = "graph" in req
            if graph:          # a whole graph: the reply carries every node result by name
                result = adapter.run_graph(req["graph"], arrays, path=req["path"])
            else:
                result = adapters.call(adapter, req["op"], req["path"], arrays, req["params"])
            facts = {}
            if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
                result, facts = result
            reply = pack({"status": "ok", "facts": facts}, result if graph else {"result": result})
        except adapters.Unsupported as exc:
            reply = pack({"status": "unsupported", "reason": str(exc)})
        except Exception as exc:
            reply = pack({"status": "error", "type": type(exc).__name__, "message": str(exc),
                          "traceback": traceback.format_exc(limit=8)})
        channel.write(reply)


if __name__ == "__main__":
    sys.exit(main())
