"""A finding of the ``ggml`` adapter as a C program against ``ggml.h``: what a ggml maintainer runs.

The program is not written by hand per op: the adapter's own ggml code runs once more on the
finding's inputs with its binding wrapped in a ``Tracer``, which records every ggml call that
builds the graph (tensor creation, the data put into each input tensor, every op with its
arguments) and stops where the graph would be computed. ``c_program`` turns that record into
C: the inputs as exact hex-float literals, the same calls in the same order, one
``ggml_graph_compute_with_ctx`` with one thread, then the result read through its ``ne``/``nb``
and compared with the expected values (PyTorch semantics, float64) within the allowed error.
It prints expected vs got and exits 1 while the bug is present (or dies where ggml aborts).

The tracing runs in a child process (``python -m adapters._ggml_repro``): a GGML_ASSERT while
the graph is built kills the child, and the calls recorded up to it are the repro.
"""
from __future__ import annotations

import ctypes
import math
import pickle
import subprocess
import sys

import numpy as np

from adapters._ggml_source import FUNCTIONS

# Calls that only ask ggml something; they are not part of the program.
QUERIES = {"ggml_get_data", "ggml_type_name", "ggml_op_desc", "ggml_is_contiguous", "ggml_version",
           "ggml_graph_overhead", "ggml_graph_n_nodes", "ggml_graph_node"}


class StopTrace(Exception):
    """Raised where the traced code would compute the graph."""


def _address(p):
    return ctypes.cast(p, ctypes.c_void_p).value if p else None


class Tracer:
    """Wraps a ggml binding (ggml-python's module or ``_ggml_source.Binding``); ``events`` is
    the record, each event also handed to ``emit`` as soon as it happens."""

    def __init__(self, binding, emit):
        self._b, self._emit = binding, emit
        self._names = {}                 # tensor address -> C variable
        self._data = {}                  # data address -> tensor variable
        self._pending = []               # new F32 tensors whose data is not captured yet
        self._filled = set()

    def __getattr__(self, attr):
        value = getattr(self._b, attr)
        if attr not in FUNCTIONS:
            return value
        ret, kinds = FUNCTIONS[attr]

        def call(*args):
            if attr not in QUERIES and attr != "ggml_fp32_to_fp16_row":
                self._capture_pending()
            if attr == "ggml_graph_compute_with_ctx":
                self._emit({"call": attr, "args": ["ctx", "gf", 1]})
                raise StopTrace()
            if attr == "ggml_fp32_to_fp16_row":
                n = int(args[2])
                src = np.ctypeslib.as_array(ctypes.cast(args[0], ctypes.POINTER(ctypes.c_float)), (n,)).copy()
                var = self._data[_address(args[1])]
                self._filled.add(var)
                self._emit({"data": var, "values": src.tolist(), "convert": "f16"})
                return value(*args)
            if attr in QUERIES:
                out = value(*args)
                if attr == "ggml_get_data" and out:
                    self._data[int(out)] = self._names[_address(args[0])]
                return out
            if attr == "ggml_init":
                shown = [int(args[0].mem_size)]
            else:
                shown = [self._arg(k, a) for k, a in zip(kinds, args)]
            event = {"call": attr, "args": shown}
            if ret == "tensor":
                event["result"] = f"t{len(self._names)}"
            if attr == "ggml_new_tensor":
                event["ne"] = [int(v) for v in args[3][:int(args[2])]]
            self._emit(event)                       # before the call: it may abort
            out = value(*args)
            if ret == "tensor":
                self._names[_address(out)] = event["result"]
                if attr == "ggml_new_tensor":
                    self._pending.append((event["result"], out, int(args[1]), event["ne"]))
            return out
        return call

    def _arg(self, kind, a):
        if kind in ("tensor", "ctensor"):
            return self._names[_address(a)]
        if kind == "ctx":
            return "ctx"
        if kind == "graph":
            return "gf"
        if kind == "cint64p":
            return None                                  # the ne array: shown from new_tensor's n
        if kind == "float":
            return float(a)
        if kind == "bool":
            return bool(a)
        return int(a)

    def _capture_pending(self):
        for var, t, gtype, ne in self._pending:
            if var in self._filled or gtype != self._b.GGML_TYPE_F32:
                continue
            n = math.prod(ne)
            data = self._b.ggml_get_data(t)
            values = np.ctypeslib.as_array(ctypes.cast(data, ctypes.POINTER(ctypes.c_float)), (n,)).copy()
            self._filled.add(var)
            self._emit({"data": var, "values": values.tolist()})
        self._pending = [p for p in self._pending if p[0] not in self._filled]


# ---- the child: run the op once under the tracer ---------------------------------------------

def _trace_main() -> int:
    request = pickle.loads(sys.stdin.buffer.read())      # written by trace() below, never a file
    import adapters
    from adapters import ggml as default
    module = default.from_checkout(request["checkout"]) if request["checkout"] is not None else default

    def emit(event):
        sys.stdout.write(repr(event) + "\n")
        sys.stdout.flush()
    module.ggml = Tracer(module.ggml, emit)
    inputs = dict(request["inputs"])
    if request["layout"] == "channels_last" and np.ndim(inputs.get("x")) == 4:   # pickling lost the strides
        inputs["x"] = np.ascontiguousarray(inputs["x"].transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    try:
        adapters.call(module, request["op"], request["path"], inputs, request["params"])
    except StopTrace:
        return 0
    except adapters.Unsupported as exc:
        emit({"unsupported": str(exc)})
        return 0
    emit({"no_compute": True})
    return 0


def trace(checkout, op, path, inputs, params, layout="contiguous", timeout=120.0) -> tuple[list, str]:
    """(events, how the child ended) for op/path on inputs; ``checkout`` None = ggml-python."""
    import ast
    request = pickle.dumps({"checkout": checkout, "op": op, "path": path, "layout": layout,
                            "inputs": {k: v for k, v in inputs.items() if v is not None},
                            "params": params})
    proc = subprocess.run([sys.executable, "-m", "adapters._ggml_repro"], input=request,
                          capture_output=True, timeout=timeout,
                          env=_child_env())
    events = [ast.literal_eval(line) for line in proc.stdout.decode().splitlines() if line.strip()]
    if proc.returncode > 0 or not events:        # a Python error, not a ggml abort (a signal)
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"tracing the ggml calls failed (exit {proc.returncode}): {tail[0]}")
    ended = "ok" if proc.returncode == 0 else f"the child died (status {proc.returncode})"
    return events, ended


def _child_env():
    import os
    from pathlib import Path
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([repo] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


# ---- C -----------------------------------------------------------------------------------------

def c_float(v: float) -> str:
    if math.isnan(v):
        return "NAN"
    if math.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    mantissa, _, exponent = float(v).hex().partition("p")
    mantissa = mantissa.rstrip("0").rstrip(".")              # 0x1.8000000000000p+0 -> 0x1.8p+0
    return f"{mantissa}p{exponent}"


def c_double(v: float) -> str:
    return c_float(v) if not math.isfinite(v) else repr(float(v))


TYPES = {0: "GGML_TYPE_F32", 1: "GGML_TYPE_F16"}
POOLS = {0: "GGML_OP_POOL_MAX", 1: "GGML_OP_POOL_AVG"}


def _array(name, ctype, values, fmt, per_line=6):
    items = [fmt(v) for v in values] or ["0"]
    rows = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return f"static const {ctype} {name}[{len(values) or 1}] = {{\n    " + ",\n    ".join(rows) + "\n};"


def _call_line(event, new_tensor_ne):
    fn, args = event["call"], list(event["args"])
    kinds = FUNCTIONS[fn][1]
    shown = []
    for kind, a in zip(kinds, args):
        if kind == "type":
            shown.append(TYPES.get(a, str(a)))
        elif kind == "pool":
            shown.append(POOLS.get(a, str(a)))
        elif kind == "float":
            shown.append(c_float(a) + ("f" if math.isfinite(a) else ""))
        elif kind == "bool":
            shown.append("true" if a else "false")
        else:
            shown.append(str(a))
    if fn == "ggml_new_tensor":
        ne = new_tensor_ne[event["result"]]
        return (f"struct ggml_tensor * {event['result']} = ggml_new_tensor_{len(ne)}d(ctx, {shown[1]}, "
                + ", ".join(str(v) for v in ne) + ");")
    if fn == "ggml_init":
        return ("struct ggml_context * ctx = ggml_init((struct ggml_init_params) {"
                f" .mem_size = {args[0]}, .mem_buffer = NULL, .no_alloc = false }});")
    if fn in ("ggml_new_graph", "ggml_new_graph_custom"):
        return f"struct ggml_cgraph * gf = {fn}({', '.join(shown)});"
    if fn == "ggml_graph_compute_with_ctx":
        return ("enum ggml_status status = ggml_graph_compute_with_ctx(ctx, gf, 1);\n"
                "    if (status != GGML_STATUS_SUCCESS) { printf(\"ggml_graph_compute_with_ctx: status %d\\n\", "
                "status); return 1; }")
    call = f"{fn}({', '.join(shown)})"
    return f"struct ggml_tensor * {event['result']} = {call};" if "result" in event else f"{call};"


C_TEMPLATE = '''// {title}
//
// Found by edgediff (differential testing against PyTorch semantics), shrunk by Hypothesis.
// ggml {version}; op `{op}` as edgediff drives it (path {path}).
// The input data, the expected values (float64) and the allowed error per element are inline.
//
// Build against a ggml checkout (CPU backend) and run:
//   cmake -S ggml -B ggml/build -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF && cmake --build ggml/build
//   cc -O2 repro.c -I ggml/include ggml/build/src/libggml.a ggml/build/src/libggml-cpu.a \\
//      ggml/build/src/libggml-base.a -lstdc++ -lm -lpthread -o repro && ./repro
// Prints expected vs got; exits 1 while the bug is present{abort_note}.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ggml.h"
#include "ggml-cpu.h"

{data}

static double value(const struct ggml_tensor * t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {{
    const char * p = (const char *) ggml_get_data(t) + i0*t->nb[0] + i1*t->nb[1] + i2*t->nb[2] + i3*t->nb[3];
    return t->type == GGML_TYPE_F16 ? ggml_fp16_to_fp32(*(const ggml_fp16_t *) p) : *(const float *) p;
}}

int main(void) {{
    {body}
{check}
}}
'''

CHECK = '''
    const struct ggml_tensor * out = {out};
    const int64_t want_ne[4] = {{{ne}}};
    if (out->ne[0] != want_ne[0] || out->ne[1] != want_ne[1] || out->ne[2] != want_ne[2] || out->ne[3] != want_ne[3]) {{
        printf("FAIL: result ne = [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld, %lld]\\n",
               (long long) out->ne[0], (long long) out->ne[1], (long long) out->ne[2], (long long) out->ne[3],
               (long long) want_ne[0], (long long) want_ne[1], (long long) want_ne[2], (long long) want_ne[3]);
        return 1;
    }}
    int64_t k = 0, bad = 0, worst = -1;
    double worst_excess = 0.0;
    for (int64_t i3 = 0; i3 < want_ne[3]; i3++)
    for (int64_t i2 = 0; i2 < want_ne[2]; i2++)
    for (int64_t i1 = 0; i1 < want_ne[1]; i1++)
    for (int64_t i0 = 0; i0 < want_ne[0]; i0++, k++) {{
        const double got = value(out, i0, i1, i2, i3), exp = expected[k];
        const int same = isnan(exp) ? isnan(got) : isinf(exp) ? got == exp : fabs(got - exp) <= bound[k];
        const double excess = isnan(got) || isnan(exp) || isinf(exp) ? INFINITY : fabs(got - exp) - bound[k];
        if (!same) {{
            if (bad < 8) {{
                printf("index [%lld, %lld, %lld, %lld] (NumPy order): expected %.9g, got %.9g (allowed error %.3g)\\n",
                       (long long) i3, (long long) i2, (long long) i1, (long long) i0, exp, got, bound[k]);
            }}
            bad++;
            if (worst < 0 || excess > worst_excess) {{ worst = k; worst_excess = excess; }}
        }}
    }}
    ggml_free(ctx);
    if (bad) {{
        printf("FAIL: %lld of %lld values differ beyond the allowed error\\n", (long long) bad, (long long) k);
        return 1;
    }}
    printf("PASS: all %lld values within the allowed error\\n", (long long) k);
    return 0;'''


def c_program(events, ended, expected, bound, title, version, op, path) -> str:
    """The C source for a traced run (see the module docstring)."""
    if any("unsupported" in e for e in events):
        raise ValueError(next(e["unsupported"] for e in events if "unsupported" in e))
    data, body, outputs = [], [], []
    ne_of = {e["result"]: e["ne"] for e in events if e.get("call") == "ggml_new_tensor"}
    for e in events:
        if "data" in e:
            name = f"{e['data']}_data"
            data.append(_array(name, "float", e["values"], c_float))
            if e.get("convert") == "f16":
                body.append(f"ggml_fp32_to_fp16_row({name}, (ggml_fp16_t *) ggml_get_data({e['data']}), "
                            f"{len(e['values'])});")
            else:
                body.append(f"memcpy(ggml_get_data({e['data']}), {name}, sizeof {name});")
        elif "call" in e:
            if e["call"] == "ggml_free":             # after the stop; the check frees ctx
                continue
            if e["call"] == "ggml_build_forward_expand":
                outputs.append(e["args"][1])
            body.append(_call_line(e, ne_of))
    computed = any(e.get("call") == "ggml_graph_compute_with_ctx" for e in events)
    expected = np.asarray(expected, np.float64)
    bound = np.broadcast_to(np.asarray(bound, np.float64), expected.shape)
    if computed and outputs:
        ne = list(reversed(expected.shape)) + [1] * (4 - expected.ndim)
        data.append(_array("expected", "double", expected.ravel().tolist(), c_double))
        data.append(_array("bound", "double", bound.ravel().tolist(), c_double))
        check = CHECK.format(out=outputs[-1], ne=", ".join(str(v) for v in ne))
        note = ""
    else:
        check = ('    printf("PASS: ggml built the graph without aborting\\n");\n    return 0;')
        note = " (here: ggml aborts while building the graph, at the last call before the check)"
    if ended != "ok" and computed:
        note = " (here: ggml aborts while computing the graph)"
    return C_TEMPLATE.format(title=title, version=version, op=op, path=path, abort_note=note,
                             data="\n".join(data), body="\n    ".join(body), check=check)


if __name__ == "__main__":
    sys.exit(_trace_main())
