"""The replay corpus: minimized findings in fixtures/corpus/ run as plain regression tests on
every run, before any random example (this file sorts first). A corpus case that fails again
is a finding (xfail when it is in the known-failures baseline)."""
from pathlib import Path

import pytest

import adapters
from edgediff.pytest_plugin import Target
from edgediff.replay import CORPUS, load_record, run_stored
from edgediff.runner import findings_in

ENTRIES = sorted(p for p in CORPUS.glob("*") if (p / "finding.json").exists()) if CORPUS.is_dir() else []


def _builds(entry: Path) -> list[str]:
    """Which builds replay an entry: the one it was found on ("found"), and for a backend that
    also builds from a checkout (ggml) the other one too ("ggml@" for a ggml-python finding,
    "ggml" for a checkout's), so every ggml finding says whether each build has it."""
    label = load_record(entry)[0]["adapter"]
    base = label.partition("@")[0]
    if base not in adapters.FROM_CHECKOUT or "==" in label:
        return ["found"]
    return ["found", base if "@" in label else f"{base}@"]


PARAMS = [pytest.param(e, b, id=f"{e.name}" + ("" if b == "found" else f"-on-{b}"))
          for e in ENTRIES for b in _builds(e)]


def _selected(edgediff_run, label: str):
    """The selected adapter for a label; a checkout build (ggml@...) matches whichever ggml@
    build this run selected, since a gate runs the user's own commit."""
    chosen = dict(edgediff_run.selected)
    if label in chosen:
        return label, chosen[label]
    if "@" in label:
        base = label.partition("@")[0] + "@"
        for name, adapter in edgediff_run.selected:
            if name.startswith(base):
                return name, adapter
    return label, None


@pytest.mark.parametrize("entry,build", PARAMS or [pytest.param(None, None, marks=pytest.mark.skip(
    reason="fixtures/corpus/ is empty: promote findings with `edgediff baseline --promote`"))])
def test_corpus_case(entry: Path, build: str, edgediff_run):
    record, case = load_record(entry)
    label, adapter = _selected(edgediff_run, record["adapter"] if build == "found" else build)
    if adapter is None:
        pytest.skip(f"backend {label} is not selected in this run")
    target = Target(case.op, label, adapter, record["path"])
    outcome = run_stored(case, adapter, record["path"])
    try:
        edgediff_run.account(target, outcome, stop_on_known=True)   # a replayed case is already minimal
    except AssertionError as exc:
        failures = findings_in(exc)
        verdicts = edgediff_run.report(target, failures)
        if failures and all(v is not None for v in verdicts):
            pytest.xfail("known failure: " + "; ".join(sorted({v.reason for v in verdicts})))
        raise
