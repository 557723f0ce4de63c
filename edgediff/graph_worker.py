"""Worker process running graphs on an isolated adapter: ``python -m edgediff.graph_worker ADAPTER``.

The protocol of ``edgediff.worker`` (same wire format, same hello), with one request kind:
``{"graph": <Graph.spec()>}`` plus the graph's arrays; the reply carries every node result the
adapter returned, as named arrays. A backend abort kills this process, and the parent reports
a crash, exactly as for single ops.
"""
from __future__ import annotations

import os
import sys
import traceback


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = argv[0]
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)                                    # backend prints go to stderr
    sys.stdout = sys.stderr
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    from edgediff.wire import pack, unpack
    from edgediff.worker import _describe, _load
    import adapters
    try:
        adapter = _load(spec)
        if not callable(getattr(adapter, "run_graph", None)):
            raise adapters.AdapterUnavailable(f"{spec} has no run_graph")
        hello = {"status": "ready", **_describe(adapter, []),
                 "graph_paths": list(getattr(adapter, "graph_paths", ("default",)))}
    except Exception as exc:
        channel.write(pack({"status": "unavailable", "reason": f"{type(exc).__name__}: {exc}"}))
        return 0
    channel.write(pack(hello))
    while True:
        try:
            req, arrays = unpack(stdin)
        except EOFError:
            return 0
        try:
            result = adapter.run_graph(req["graph"], arrays, path=req["path"])
            facts = {}
            if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
                result, facts = result
            reply = pack({"status": "ok", "facts": facts}, result)
        except adapters.Unsupported as exc:
            reply = pack({"status": "unsupported", "reason": str(exc)})
        except Exception as exc:
            reply = pack({"status": "error", "type": type(exc).__name__, "message": str(exc),
                          "traceback": traceback.format_exc(limit=8)})
        channel.write(reply)


if __name__ == "__main__":
    sys.exit(main())
