"""Run an adapter in a persistent worker process, so an abort, a segfault or a hang in
the backend becomes a finding instead of a dead test run.

``IsolatedAdapter`` follows the adapter contract. It starts ``python -m edgediff.worker``
once (under the adapter's own interpreter when it names one), reuses it across examples,
and restarts it after it dies. A call that outlives ``timeout`` seconds kills the worker
and raises ``WorkerHung``; a worker that dies raises ``WorkerDied`` with the signal, the
exit status and the last lines of its stderr (for ggml, the ``GGML_ASSERT(...)`` line).
"""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import adapters
from edgediff.runner import WorkerDied, WorkerHung
from edgediff.tolerance import Arithmetic
from edgediff.wire import pack, unpack

REPO = Path(__file__).resolve().parent.parent
STDERR_TAIL_LINES = 12
# A C++ log line naming its source ("[op_quantized_conv2d.cpp:80] ..."), as ExecuTorch logs.
LOG_LINE = re.compile(r"^\[[\w./-]+\.(?:cpp|cc|c|h):\d+\] ")
MIN_HANG_TIMEOUT = 0.25    # seconds; see IsolatedAdapter.call_timeout
HANG_FACTOR = 20.0


class BackendError(Exception):
    """An exception the backend raised inside the worker; its text is the backend's."""


class IsolatedAdapter:
    def __init__(self, spec: str, ops, python: str | None = None, timeout: float = 60.0,
                 env: dict | None = None, cwd: str | None = None, startup_timeout: float = 300.0,
                 label: str | None = None):
        self.spec, self.ops = spec, list(ops)
        self.python = python or sys.executable
        self.timeout, self.startup_timeout = float(timeout), float(startup_timeout)
        self.env, self.cwd = dict(env or {}), cwd
        self.isolated = True
        self.proc = None
        self.restarts = 0
        self.slowest_ok = 0.0      # seconds of the slowest call that answered
        self.hung = False
        self._stderr = tempfile.TemporaryFile()
        hello = self._start()
        self.name = label or hello["name"]
        self.version = hello["version"]
        self.paths = {op: tuple(p) for op, p in hello["paths"].items()}
        self._arith = {k: Arithmetic(**v) for k, v in hello["arithmetic"].items()}
        self._repro = hello["repro"]
        self.worker_python = hello["python"]
        self.graph_paths = tuple(hello["graph_paths"]) if hello.get("graph_paths") else None
        self.fork_server = bool(hello.get("fork_server"))

    # ---- the adapter contract ------------------------------------------------------------
    def __getattr__(self, op):
        if op == "run_graph" and self.__dict__.get("graph_paths"):
            return self._run_graph
        if op.startswith("_") or op not in self.__dict__.get("paths", {}):
            raise AttributeError(op)
        def call(path=adapters.DEFAULT_PATH, **kwargs):
            arrays = {k: v for k, v in kwargs.items() if hasattr(v, "dtype")}
            params = {k: v for k, v in kwargs.items() if k not in arrays}
            return self.call(op, path, arrays, params)
        return call

    def arithmetic(self, op, path):
        return self._arith[f"{op}|{path}"]

    def repro_source(self, op, path):
        return self._repro.get(f"{op}|{path}")

    # ---- worker lifecycle ----------------------------------------------------------------
    def _start(self) -> dict:
        env = dict(os.environ, **self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
        self._stderr.seek(0, os.SEEK_END)
        mark = self._stderr.tell()
        self.proc = subprocess.Popen(
            [self.python, "-m", "edgediff.worker", self.spec, ",".join(self.ops)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
            cwd=self.cwd, start_new_session=True)
        try:
            hello, _ = self._receive(self.startup_timeout, mark)
        except (WorkerDied, WorkerHung) as exc:
            raise adapters.AdapterUnavailable(f"{self.spec}: worker failed to start: {exc}") from None
        if hello["status"] != "ready":
            self.close()
            raise adapters.AdapterUnavailable(f"{self.spec}: {hello.get('reason', hello)}")
        return hello

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._kill()
        self.proc = None

    def _kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- one call --------------------------------------------------------------------------
    def call(self, op, path, arrays, params):
        out, facts = self._request({"op": op, "path": path, "params": params}, arrays)
        return (out["result"], facts) if facts else out["result"]

    def recycle(self) -> None:
        """A fresh process for the next call (after a failing example, whose backend state
        must not leak into the next one): a new fork-server child, or nothing for a plain
        worker, which a failure of that kind has already restarted or left intact."""
        if not self.fork_server or self.proc is None or self.proc.poll() is not None:
            return
        self._stderr.seek(0, os.SEEK_END)
        mark = self._stderr.tell()
        try:
            self.proc.stdin.write(pack({"recycle": True}))
            self.proc.stdin.flush()
            reply, _ = self._receive(self.startup_timeout, mark)
        except (BrokenPipeError, WorkerDied, WorkerHung):
            return                     # restarted on the next call
        if reply.get("status") != "recycled":
            raise RuntimeError(f"worker answered {reply} to a recycle request")

    def _run_graph(self, graph_spec, arrays, path=adapters.DEFAULT_PATH):
        """The adapter's ``run_graph`` in the worker: ({node: array}, facts)."""
        return self._request({"graph": graph_spec, "path": path}, arrays)

    def _request(self, header: dict, arrays: dict):
        """Send one request; (arrays, facts) of an ok reply, Unsupported or BackendError
        otherwise; WorkerDied / WorkerHung when the worker does not answer."""
        if self.proc is None or self.proc.poll() is not None:
            self.restarts += 1
            self._start()
        self._stderr.seek(0, os.SEEK_END)
        mark = self._stderr.tell()
        try:
            self.proc.stdin.write(pack(header, arrays))
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker died; _receive reports how
        t0 = time.monotonic()
        try:
            reply, out = self._receive(self.call_timeout(), mark)
        except WorkerHung:
            self.hung = True
            raise
        self.slowest_ok = max(self.slowest_ok, time.monotonic() - t0)
        if reply["status"] == "ok":
            return out, reply.get("facts") or {}
        if reply["status"] == "unsupported":
            raise adapters.Unsupported(reply["reason"])
        # What the backend logged about it (ExecuTorch's "Check failed (...)" lines, ...): the
        # exception text alone often says only "error 0x12".
        self._stderr.seek(mark)
        text = self._stderr.read().decode(errors="replace")
        logged = [ln.strip() for ln in text.splitlines()[-200:]
                  if ("failed" in ln.lower() or "error" in ln.lower() or LOG_LINE.match(ln.strip()))
                  and "type id" not in ln][-3:]
        detail = f" [stderr: {' | '.join(logged)}]" if logged else ""
        raise BackendError(f"{reply['type']}: {reply['message']}{detail}")

    def call_timeout(self) -> float:
        """The configured timeout; once a call has hung, a tighter one derived from the slowest
        call that answered, so shrinking a hang does not wait the full timeout per step."""
        if not self.hung:
            return self.timeout
        return min(self.timeout, max(MIN_HANG_TIMEOUT, HANG_FACTOR * self.slowest_ok))

    def _receive(self, timeout, mark):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                self.proc = None
                raise WorkerHung(f"no answer within {timeout:g} s (worker killed)")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                break
        try:
            reply = unpack(self.proc.stdout)
        except (EOFError, OSError):
            rc = self.proc.wait()
            self.proc = None
            raise self._died(rc, mark) from None
        if reply[0].get("status") == "died":      # a fork-server child died; the server lives
            self.restarts += 1
            raise self._died(int(reply[0]["returncode"]), mark)
        return reply

    def _died(self, rc: int, mark) -> WorkerDied:
        tail = self._stderr_tail(mark)
        sig = signal.Signals(-rc).name if rc < 0 and -rc in signal.Signals._value2member_map_ else None
        how = f"killed by {sig}" if sig else f"exited with status {rc}"
        lines = tail.strip().splitlines()
        # The line that says why: a failed assertion when there is one (ggml's GGML_ASSERT or
        # an abort message), else the last line.
        why = next((ln for ln in reversed(lines) if "GGML_ASSERT" in ln or "Assertion" in ln
                    or "assert" in ln.lower()), lines[-1] if lines else "(no stderr)")
        return WorkerDied(f"worker {how}: {why.strip()}", signal=sig, exitcode=rc, stderr_tail=tail)

    def _stderr_tail(self, mark) -> str:
        self._stderr.seek(mark)
        text = self._stderr.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-STDERR_TAIL_LINES:])


def isolate(adapter, spec: str, ops, label: str | None = None, **overrides) -> IsolatedAdapter:
    """Wrap an adapter (loaded in-process only to read its settings) in a worker."""
    settings = dict(python=getattr(adapter, "python", None),
                    timeout=getattr(adapter, "timeout", 60.0),
                    env=getattr(adapter, "worker_env", None),
                    cwd=getattr(adapter, "worker_cwd", None))
    settings.update({k: v for k, v in overrides.items() if v is not None})
    worker = IsolatedAdapter(spec, ops, label=label, **settings)
    # Sampling limits and the standalone repro writer are read in this process: they are
    # plain functions of (op, path) or of a case, and the worker need not answer for them.
    for attr in ("max_examples", "values_per_structure", "standalone_repro", "standalone_repro_file",
                 "graph_arithmetic"):
        if hasattr(adapter, attr):
            setattr(worker, attr, getattr(adapter, attr))
    return worker
