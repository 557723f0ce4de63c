"""Re-run a stored finding (or a corpus entry): does it still reproduce?"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import adapters
from edgediff.case import Case
from edgediff.runner import Outcome, run_case

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("EDGEDIFF_CORPUS", REPO / "fixtures" / "corpus"))


def load_record(directory) -> tuple[dict, Case]:
    directory = Path(directory)
    if not (directory / "finding.json").exists():
        raise adapters.UsageError(f"{directory} is not a finding directory (no finding.json)")
    try:
        record = json.loads((directory / "finding.json").read_text())
        case = Case.load(directory)
        for key in ("adapter", "path"):
            if not isinstance(record.get(key), str):
                raise KeyError(key)
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise adapters.UsageError(f"{directory} is a corrupt finding ({what})") from None
    return record, case


def adapter_for(label: str, spec: str | None = None):
    """The adapter a finding names: a built-in (isolated when it says so), a pin, or a user spec."""
    from properties.ops import OPS
    if "==" in label:
        from edgediff.pinning import load_pinned
        return load_pinned(label, OPS)
    if label in adapters.BUILTINS:
        adapter = adapters.load(label)
        spec = label
    elif "@" in label and label.partition("@")[0] in adapters.FROM_CHECKOUT:
        # ggml@v0.21.0-...: built from a checkout; replayed on the one $GGML_ROOT (or setup)
        # names now, whose version the outcome reports
        spec = label.partition("@")[0] + "@"
        adapter = adapters.load(spec)
    elif spec:
        adapter = adapters.load_spec(spec)
    else:
        raise adapters.UsageError(f"finding names adapter {label!r}, which is neither built in nor "
                                  "loadable (no --adapter spec recorded)")
    if getattr(adapter, "isolated", False):
        from edgediff.isolation import isolate
        return isolate(adapter, spec, OPS)
    return adapter


def run_stored(case: Case, adapter, path: str) -> Outcome:
    """run_case for an op, run_relation for a metamorphic relation's finding."""
    from properties.ops import OPS
    from properties.relations import RELATIONS, run_relation
    if case.op in RELATIONS:
        rel = RELATIONS[case.op]
        return run_relation(rel, replace(case, op=rel.primary), adapter, path)
    return run_case(case, adapter, path, OPS[case.op])


def replay(directory) -> Outcome:
    record, case = load_record(directory)
    adapter = adapter_for(record["adapter"], (record.get("backend_facts") or {}).get("spec"))
    return run_stored(case, adapter, record["path"])


def promote(directory, corpus: Path = CORPUS) -> Path:
    """Copy a minimized finding into the replay corpus (case, inputs, finding record)."""
    record, _ = load_record(directory)
    dest = Path(corpus) / record["id"]
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("finding.json", "case.json", "inputs.npz", "repro.py", "repro.c", "ISSUE.md"):
        if (Path(directory) / name).exists():
            shutil.copy2(Path(directory) / name, dest / name)
    return dest
