"""End-to-end runs of the property suite in a subprocess: findings are written once per
signature, pytest-xdist workers' records merge, known failures become xfail, crashes and
hangs are findings while the run carries on, and bad options are usage errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_pytest(tmp_path, *args, timeout=600):
    """The property suite in a child pytest, under the derandomized ``ci`` profile unless the
    caller names another: a meta-test must not depend on a lucky draw (issue 23: with the
    random ``dev`` profile, 1 seed in 15 missed the planted clamp bug)."""
    env = dict(os.environ, HYPOTHESIS_STORAGE_DIRECTORY=str(tmp_path / "hypothesis"))
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("EDGEDIFF_PROFILE", None)
    profile = [] if "--hypothesis-profile" in args else ["--hypothesis-profile", "ci"]
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *profile,
           "--findings-dir", str(tmp_path / "findings"), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def finding_dirs(tmp_path):
    return sorted(p.parent.name for p in (tmp_path / "findings").glob("*/finding.json"))


def test_xdist_workers_merge_and_each_bug_is_one_finding(tmp_path):
    code, out = run_pytest(tmp_path, "properties/test_differential.py", "-n", "2",
                           "--adapter", "tests.planted:swapped_padding",
                           "--adapter", "tests.planted:clamp_order", "--max-examples", "60")
    assert code == 1, out
    found = finding_dirs(tmp_path)
    assert len([f for f in found if f.startswith("planted_swapped_padding-conv2d-")]) == 1, found
    assert len([f for f in found if f.startswith("planted_clamp_order-clamp-")]) == 1, found
    assert len(found) == 2, found
    stats = sorted((tmp_path / "findings" / ".stats").glob("*.json"))
    assert [p.stem for p in stats] == ["gw0", "gw1"]
    assert "edgediff op x backend" in out and "new findings: 2" in out
    for f in found:
        d = tmp_path / "findings" / f
        assert {"finding.json", "inputs.npz", "repro.py", "ISSUE.md", "case.json"} <= {p.name for p in d.iterdir()}
        # a user adapter's repro calls it through edgediff: its module must be importable, as
        # it is for the worker; it fails on the numbers, not on an import
        repro = subprocess.run([sys.executable, "repro.py"], cwd=d, capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert repro.returncode == 1 and repro.stdout.startswith("FAIL"), repro.stdout + repro.stderr
        assert "outside tolerance" in repro.stdout, repro.stdout
    logged = [json.loads(line) for p in (tmp_path / "findings" / "log").glob("*.jsonl")
              for line in p.read_text().splitlines()]
    assert sum(r["shrunk"] for r in logged) == 2 and len(logged) > 2


def test_known_failures_become_xfail_and_stale_entries_are_reported(tmp_path):
    known = tmp_path / "known.toml"
    known.write_text('''
[[known]]
adapter = "planted_swapped_padding"
op = "conv2d"
kind = "mismatch"
when = "isinstance(padding, tuple) and isinstance(padding[0], tuple)"
reason = "planted: pads swapped"

[[known]]
adapter = "planted_swapped_padding"
op = "clamp"
reason = "was broken once"
''')
    code, out = run_pytest(tmp_path, "properties/test_differential.py", "-k", "conv2d- or clamp-",
                           "--adapter", "tests.planted:swapped_padding", "--known-failures", str(known),
                           "--max-examples", "60", "-rxs")
    assert code == 0, out
    assert "known failure: planted: pads swapped" in out
    assert "fixed?" in out and "planted_swapped_padding/clamp" in out
    assert finding_dirs(tmp_path) == [], "a known failure is counted, not shrunk and written again"
    logged = [json.loads(line) for p in (tmp_path / "findings" / "log").glob("*.jsonl")
              for line in p.read_text().splitlines()]
    assert logged and all(r["known"] == "planted: pads swapped" for r in logged)
    assert all(not r["shrunk"] for r in logged)


def test_a_known_failure_does_not_hide_a_new_one_in_the_same_target(tmp_path):
    known = tmp_path / "known.toml"      # the planted bug is known on contiguous inputs only
    known.write_text('''
[[known]]
adapter = "planted_swapped_padding"
op = "conv2d"
kind = "mismatch"
when = "layout == 'contiguous'"
reason = "planted: pads swapped (contiguous)"
''')
    code, out = run_pytest(tmp_path, "properties/test_differential.py", "-k", "conv2d-",
                           "--adapter", "tests.planted:swapped_padding", "--known-failures", str(known),
                           "--hypothesis-profile", "ci", "--max-examples", "100", "-rxs")
    assert code == 1, out
    found = finding_dirs(tmp_path)
    assert len(found) == 1 and found[0].startswith("planted_swapped_padding-conv2d-"), found
    record = json.loads((tmp_path / "findings" / found[0] / "finding.json").read_text())
    # Stopping at the first failure would shrink to a contiguous case (known) and end there;
    # the search goes on instead, and the new channels_last failure is shrunk and written.
    assert record["layout"] == "channels_last" and record["known"] is None, record


def test_crashes_and_hangs_are_grouped_findings_and_the_run_carries_on(tmp_path):
    code, out = run_pytest(tmp_path, "properties/test_differential.py", "-n", "2", "-k", "conv2d-",
                           "--adapter", "tests.planted_crash:aborts",
                           "--adapter", "tests.planted_crash:segfaults",
                           "--adapter", "tests.planted_crash:hangs",
                           "--adapter", "tests.planted:correct", "--max-examples", "40")
    assert code == 1, out
    found = finding_dirs(tmp_path)
    for prefix in ("planted_aborts-conv2d-default-crash-", "planted_segfaults-conv2d-default-crash-",
                   "planted_hangs-conv2d-default-hang-"):
        assert len([f for f in found if f.startswith(prefix)]) == 1, (prefix, found)
    assert len(found) == 3, found
    assert "3 failed, 2 passed" in out, out[-2000:]   # the correct adapter ran on
    abort = json.loads((tmp_path / "findings" / next(f for f in found if "aborts" in f) / "finding.json").read_text())
    assert abort["backend_facts"]["signal"] == "SIGABRT"
    assert "GGML_ASSERT(kernel fits) failed" in abort["backend_facts"]["stderr_tail"]
    assert abort["shapes"]["w"][2] == 5          # shrunk to the smallest kernel that aborts


@pytest.mark.parametrize("args, message", [
    (["--backend", "nosuch"], "unknown backend 'nosuch'; known backends: torch"),
    (["--max-examples", "0"], "--max-examples must be >= 1"),
    (["--known-failures", "missing.toml"], "missing.toml does not exist"),
    (["--adapter", "no_such_pkg:thing"], "cannot import 'no_such_pkg'"),
])
def test_bad_options_are_usage_errors(tmp_path, args, message):
    code, out = run_pytest(tmp_path, "properties/test_differential.py", *args)
    assert code == 4, out
    assert message in out, out
