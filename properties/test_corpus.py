"""The replay corpus: minimized findings in fixtures/corpus/ run as plain regression tests on
every run, before any random example (this file sorts first). A corpus case that fails again
is a finding (xfail when it is in the known-failures baseline)."""
from pathlib import Path

import pytest

from edgediff.pytest_plugin import Target
from edgediff.replay import CORPUS, load_record, run_stored
from edgediff.runner import findings_in

ENTRIES = sorted(p for p in CORPUS.glob("*") if (p / "finding.json").exists()) if CORPUS.is_dir() else []


@pytest.mark.parametrize("entry", ENTRIES or [pytest.param(None, marks=pytest.mark.skip(
    reason="fixtures/corpus/ is empty: promote findings with `edgediff baseline --promote`"))],
    ids=[p.name for p in ENTRIES] or ["empty-corpus"])
def test_corpus_case(entry: Path, edgediff_run):
    record, case = load_record(entry)
    adapter = dict(edgediff_run.selected).get(record["adapter"])
    if adapter is None:
        pytest.skip(f"backend {record['adapter']} is not selected in this run")
    target = Target(case.op, record["adapter"], adapter, record["path"])
    outcome = run_stored(case, adapter, record["path"])
    try:
        edgediff_run.account(target, outcome, stop_on_known=True)   # a replayed case is already minimal
    except AssertionError as exc:
        failures = findings_in(exc)
        verdicts = edgediff_run.report(target, failures)
        if failures and all(v is not None for v in verdicts):
            pytest.xfail("known failure: " + "; ".join(sorted({v.reason for v in verdicts})))
        raise
