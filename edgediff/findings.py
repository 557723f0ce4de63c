"""Findings: every failure becomes files a backend engineer can act on.

For a shrunk failing example, ``FindingStore.write`` creates (or updates)
``<findings-dir>/<signature id>/`` with

- ``finding.json``: op, adapter name/version/path, failure kind, params, shapes, dtypes,
  error statistics, backend facts, how often the signature was seen;
- ``inputs.npz``: the inputs plus ``expected`` (golden) and ``bound`` (allowed error);
- ``case.json``: the Case, so replay and ``repro.py`` reload it losslessly;
- ``repro.py``: standalone (NumPy + the backend) and prints PASS or FAIL;
- ``ISSUE.md``: ready to paste upstream.

Findings with one signature (op, adapter, path, failure kind, parameter pattern) are one
directory; a later, smaller example replaces the stored one. Every failing example, shrunk
or not, is also appended to ``log/<worker>.jsonl``. Writes take a file lock, so pytest-xdist
workers can share one directory.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgediff.case import plain, to_jsonable
from edgediff.runner import Outcome


def signature(outcome: Outcome, pattern: tuple) -> dict:
    return {"op": outcome.case.op, "adapter": outcome.adapter, "path": outcome.path,
            "kind": outcome.kind, "pattern": list(pattern)}


def signature_id(sig: dict) -> str:
    digest = hashlib.sha1(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:10]
    safe_path = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in sig["path"])
    return f"{sig['adapter']}-{sig['op']}-{safe_path}-{sig['kind']}-{digest}"


def environment() -> dict:
    return {"python": sys.version.split()[0], "numpy": np.__version__,
            "platform": platform.platform(), "machine": platform.machine()}


@contextlib.contextmanager
def locked(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def machine_paths() -> list:
    """(path, placeholder) pairs for the folders of this machine that tracebacks and backend
    messages name, longest first: a finding is read on other machines and may be committed."""
    import site
    import sysconfig
    pairs = [(str(Path(__file__).resolve().parent.parent), "<edgediff>"),
             (sysconfig.get_paths()["purelib"], "<site-packages>"),
             (sys.prefix, "<python>"), (sys.base_prefix, "<python>"),
             (os.path.expanduser("~"), "~")]
    try:
        from adapters._source_build import cache_dir
        pairs.append((str(cache_dir()), "<edgediff-cache>"))
    except ImportError:
        pass
    pairs += [(p, "<site-packages>") for p in getattr(site, "getsitepackages", lambda: [])()]
    return sorted({(p, r) for p, r in pairs if p and p != "/"}, key=lambda pr: -len(pr[0]))


def scrub(text: str) -> str:
    """``text`` without this machine's folders (see ``machine_paths``)."""
    for path, placeholder in machine_paths():
        text = text.replace(path, placeholder)
    return text


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class FindingStore:
    def __init__(self, root, worker: str = "main"):
        self.root = Path(root)
        self.worker = worker

    # ---- every failing example ----------------------------------------------------------
    def log(self, outcome: Outcome, pattern: tuple, shrunk: bool = False, known: str | None = None) -> None:
        sig = signature(outcome, pattern)
        record = {"signature": signature_id(sig), "shrunk": shrunk, "known": known, "kind": outcome.kind,
                  "adapter": outcome.adapter, "version": outcome.version, "path": outcome.path,
                  "case": outcome.case.to_json(), "detail": outcome.detail,
                  "stats": outcome.stats.to_json() if outcome.stats else None}
        log_dir = self.root / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{self.worker}.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    # ---- one directory per signature ----------------------------------------------------
    def write(self, outcome: Outcome, pattern: tuple, repro_source: str | None,
              known: dict | None = None, repro_script: str | None = None) -> tuple[Path, bool]:
        """Store the shrunk example; returns (its directory, whether the signature is new).
        ``repro_script``: a whole repro.py in the backend's own idiom with the data inline
        (the adapter's ``standalone_repro``), used instead of the generic template; or
        (file name, text) for another language (``repro.c``), written beside the generic
        repro.py."""
        sig = signature(outcome, pattern)
        sid = signature_id(sig)
        directory = self.root / sid
        with locked(self.root):
            is_new = not (directory / "finding.json").exists()
            if not is_new:
                previous = json.loads((directory / "finding.json").read_text())
                occurrences = previous.get("occurrences", 1) + 1
                replace = outcome.case.n_elements < previous.get("input_elements", 1 << 62)
                if not replace:
                    previous["occurrences"] = occurrences
                    atomic_write(directory / "finding.json", json.dumps(previous, indent=2))
                    return directory, False
            else:
                occurrences = 1
            directory.mkdir(parents=True, exist_ok=True)
            record = self._record(outcome, sig, sid, occurrences, known)
            extra = {"expected": outcome.expected}
            if outcome.bound is not None:
                extra["bound"] = np.broadcast_to(outcome.bound, np.shape(outcome.expected))
            if outcome.observed is not None:
                extra["observed"] = outcome.observed
            outcome.case.save(directory, extra)
            script_name, script = (repro_script if isinstance(repro_script, tuple)
                                   else ("repro.py", repro_script))
            if script and script_name != "repro.py":      # e.g. repro.c, beside the Python form
                atomic_write(directory / script_name, script)
            atomic_write(directory / "repro.py", script if script and script_name == "repro.py"
                         else render_repro(outcome, sid, repro_source))
            atomic_write(directory / "ISSUE.md",
                         scrub(render_issue(record, outcome, script, script_name)))
            atomic_write(directory / "finding.json",
                         scrub(json.dumps(record, indent=2, default=str)))
        return directory, is_new

    def _record(self, outcome, sig, sid, occurrences, known) -> dict:
        case = outcome.case
        return {"id": sid, "signature": sig, "op": case.op, "adapter": outcome.adapter,
                "version": outcome.version, "path": outcome.path, "kind": outcome.kind,
                "params": plain(case.params), "layout": case.layout, "dtype": case.dtype,
                "shapes": {k: list(v.shape) for k, v in case.inputs.items()},
                "input_dtypes": {k: str(v.dtype) for k, v in case.inputs.items()},
                "input_elements": case.n_elements, "detail": outcome.detail,
                "stats": outcome.stats.to_json() if outcome.stats else None,
                "backend_facts": to_jsonable(outcome.extra), "occurrences": occurrences,
                "known": known, "environment": environment()}


def load_findings(root) -> list[dict]:
    root = Path(root)
    if not root.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/finding.json"))]


# ---- repro.py and ISSUE.md ------------------------------------------------------------------

REPRO_TEMPLATE = '''#!/usr/bin/env python3
"""Standalone repro for edgediff finding {sid}.

{title}

Needs NumPy and the backend only. Run from anywhere:  python repro.py
Prints PASS when the backend now agrees with the golden result within the
tolerance edgediff allowed, FAIL otherwise (exit status 1).
"""
import json
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

def _params(v):
    if isinstance(v, dict):
        if set(v) == {{"__tuple__"}}:
            return tuple(_params(x) for x in v["__tuple__"])
        return {{k: _params(x) for k, x in v.items()}}
    if isinstance(v, list):
        return [_params(x) for x in v]
    return v

META = json.loads((HERE / "case.json").read_text())
PARAMS = _params(META["params"])
DATA = np.load(HERE / "inputs.npz")
INPUTS = {{k: DATA[k] for k in META["input_names"]}}
if META["layout"] == "channels_last":          # NHWC memory, NCHW shape, as edgediff passed it
    INPUTS["x"] = np.ascontiguousarray(INPUTS["x"].transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

# ---- how the backend computes it ({adapter} {version}, path {path}) ----
{backend}
# ----

def main():
    try:
        observed = np.asarray(run(INPUTS, PARAMS), dtype=np.float64)
    except Exception as exc:
        print(f"FAIL: backend raised {{type(exc).__name__}}: {{exc}}")
        return 1
    expected = DATA["expected"]
    if observed.shape != expected.shape:
        print(f"FAIL: output shape {{observed.shape}}, expected {{expected.shape}}")
        return 1
    bound = DATA["bound"] if "bound" in DATA.files else np.zeros_like(expected)
    finite = np.isfinite(expected) & np.isfinite(observed)
    same_special = (np.isnan(expected) & np.isnan(observed)) | (np.isinf(expected) & (expected == observed))
    err = np.where(finite, np.abs(observed - expected), 0.0)
    bad = (finite & (err > bound)) | (~finite & ~same_special)
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        print(f"FAIL: {{int(bad.sum())}} of {{bad.size}} elements outside tolerance; first at {{i}}: "
              f"expected {{float(expected[i])!r}}, observed {{float(observed[i])!r}}, "
              f"allowed error {{float(bound[i]):.3g}}")
        return 1
    print("PASS")
    return 0

if __name__ == "__main__":
    sys.exit(main())
'''

FALLBACK_BACKEND = '''# This adapter gave no standalone source; this repro calls it through edgediff, which must
# be installed (pip install edgediff, or -e from its checkout): no path of the machine that
# wrote it is baked in.
import adapters as _adapters

def run(inputs, params):
    adapter = {loader}
    return _adapters.call(adapter, META["op"], {path!r}, inputs, params)
'''


def issue_title(outcome: Outcome) -> str:
    return f"[{outcome.adapter} {outcome.path}] {outcome.case.op}: {outcome.kind} on {outcome.case.describe()}"


def render_repro(outcome: Outcome, sid: str, source: str | None) -> str:
    if not source:
        builtins = __import__("adapters").BUILTINS
        base, at, _ = outcome.adapter.partition("@")
        loader = (f"_adapters.load({outcome.adapter!r})" if outcome.adapter in builtins
                  else f"_adapters.load({base + '@'!r})  # the checkout $GGML_ROOT names"
                  if at and base in builtins
                  else f"_adapters.load_spec({outcome.extra.get('spec', '')!r})")
        source = FALLBACK_BACKEND.format(loader=loader, path=outcome.path)
    return REPRO_TEMPLATE.format(sid=sid, title=issue_title(outcome), adapter=outcome.adapter,
                                 version=outcome.version, path=outcome.path, backend=source.strip("\n"))


def render_issue(record: dict, outcome: Outcome, standalone: str | None = None,
                 standalone_name: str = "repro.py") -> str:
    env = record["environment"]
    lines = [f"# {issue_title(outcome)}", "",
             "## Environment",
             f"- backend: {outcome.adapter} {outcome.version}, path `{outcome.path}`",
             f"- Python {env['python']}, NumPy {env['numpy']}, {env['platform']}", "",
             "## Minimal case (shrunk by Hypothesis)",
             f"- op: `{outcome.case.op}`, layout: {outcome.case.layout}, dtype: {outcome.case.dtype}",
             f"- inputs: " + ", ".join(f"`{k}` {tuple(v.shape)}" for k, v in outcome.case.inputs.items()),
             f"- params: `{json.dumps(record['params'])}`", "",
             "## What differed"]
    if outcome.stats is not None:
        lines += ["```", outcome.stats.summary(), "```",
                  "Allowed error per element comes from edgediff's error model for this path "
                  f"(arithmetic {outcome.extra.get('arithmetic', {})}); a correct implementation stays "
                  "below 1x the bound."]
    else:
        lines += ["```", outcome.detail or outcome.kind, "```"]
        if outcome.extra.get("stderr_tail"):
            lines += ["Last lines of the backend's stderr:", "```", outcome.extra["stderr_tail"], "```"]
    if outcome.stats is not None and outcome.observed is not None and np.size(outcome.expected) <= 16:
        lines += ["", "Whole output (small enough to show):",
                  f"- expected: `{np.asarray(outcome.expected).ravel().tolist()}`",
                  f"- observed: `{np.asarray(outcome.observed, np.float64).ravel().tolist()}`"]
    facts = {k: v for k, v in outcome.extra.items()
             if k not in ("arithmetic", "traceback", "stderr_tail", "spec")}
    if facts:
        lines += ["", "## Backend facts", f"`{json.dumps(to_jsonable(facts), default=str)}`"]
    if standalone:     # the backend's own idiom, data inline: the repro is the report
        lines += ["", "## Reproduce",
                  "Standalone (the backend's own API, the inputs, expected values and allowed error "
                  "inline); exits 1 while the bug is present, or dies where the backend aborts:",
                  "```" + ("c" if standalone_name.endswith(".c") else "python"),
                  standalone.rstrip("\n"), "```",
                  "", "Expected semantics: PyTorch's (`torch.nn.functional`) for float ops.", ""]
        return "\n".join(lines)
    lines += ["", "## Reproduce",
              "`inputs.npz` holds the inputs, the expected (float64 golden) output and the allowed error.",
              "```", "python repro.py   # prints PASS or FAIL", "```",
              "", "Expected semantics: PyTorch's (`torch.nn.functional`) for float ops.", ""]
    return "\n".join(lines)
