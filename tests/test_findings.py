"""Findings: written once per signature, read back identically, smaller examples win,
and repro.py runs standalone."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgediff.case import Case
from edgediff.findings import FindingStore, load_findings
from edgediff.runner import run_case
from properties.ops import OPS, conv_pattern
from tests import planted


def conv_case(n=1, c=2, size=4):
    rng = np.random.default_rng(n * 100 + c)
    return Case("conv2d",
                {"x": rng.integers(-4, 5, (n, c, size, size)).astype(np.float32),
                 "w": rng.integers(-4, 5, (3, c, 2, 2)).astype(np.float32)},
                {"stride": 1, "padding": ((1, 0), (0, 1)), "dilation": 1, "groups": 1})


def failing_outcome(case):
    out = run_case(case, planted.swapped_padding, "default", OPS["conv2d"])
    assert out.kind == "mismatch"
    return out


def test_finding_files_round_trip(tmp_path):
    store = FindingStore(tmp_path)
    outcome = failing_outcome(conv_case())
    directory, new = store.write(outcome, conv_pattern(outcome.case), None)
    assert new
    back = Case.load(directory)
    assert back.params == outcome.case.params                # tuples stay tuples
    for k, v in outcome.case.inputs.items():
        np.testing.assert_array_equal(back.inputs[k], v)
        assert back.inputs[k].dtype == v.dtype
    record = json.loads((directory / "finding.json").read_text())
    assert record["kind"] == "mismatch" and record["stats"]["mismatches"] == outcome.stats.mismatches
    assert record["params"]["padding"] == [[1, 0], [0, 1]]   # readable form for people
    issue = (directory / "ISSUE.md").read_text()
    assert "planted_swapped_padding" in issue and "python repro.py" in issue
    assert "outside the bound" in issue


def test_same_signature_is_grouped_and_the_smaller_example_wins(tmp_path):
    store = FindingStore(tmp_path)
    big, small = failing_outcome(conv_case(n=2, c=3, size=6)), failing_outcome(conv_case())
    d1, new1 = store.write(big, conv_pattern(big.case), None)
    d2, new2 = store.write(small, conv_pattern(small.case), None)
    assert d1 == d2 and new1 and not new2
    assert Case.load(d1).inputs["x"].shape == (1, 2, 4, 4)
    d3, _ = store.write(big, conv_pattern(big.case), None)
    assert Case.load(d3).inputs["x"].shape == (1, 2, 4, 4)      # not replaced by a bigger one
    [record] = load_findings(tmp_path)
    assert record["occurrences"] == 3


def test_log_has_every_example(tmp_path):
    store = FindingStore(tmp_path, worker="gw7")
    outcome = failing_outcome(conv_case())
    store.log(outcome, ("a",))
    store.log(outcome, ("a",), shrunk=True)
    lines = (tmp_path / "log" / "gw7.jsonl").read_text().splitlines()
    assert [json.loads(l)["shrunk"] for l in lines] == [False, True]


def test_builtin_repro_is_standalone_and_says_pass_or_fail(tmp_path):
    pytest.importorskip("torch", reason="the torch adapter's repro needs torch")
    from adapters import torch_eager
    case = conv_case()
    outcome = run_case(case, torch_eager, "default", OPS["conv2d"])
    assert outcome.kind == "pass"
    outcome.kind = "mismatch"                            # store it as if it had failed
    store = FindingStore(tmp_path)
    directory, _ = store.write(outcome, conv_pattern(case), torch_eager.repro_source("conv2d", "default"))
    source = (directory / "repro.py").read_text()
    assert "edgediff" not in source.split("# ---- how the backend")[1]   # needs only numpy + torch
    env = {"PATH": "/usr/bin:/bin"}                                  # no PYTHONPATH to the repo
    ok = subprocess.run([sys.executable, "repro.py"], cwd=directory, capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and ok.stdout.strip() == "PASS", ok.stdout + ok.stderr
    with np.load(directory / "inputs.npz") as data:                   # plant a wrong expectation
        arrays = dict(data)
    arrays["expected"] = arrays["expected"] + 1.0
    np.savez(directory / "inputs.npz", **arrays)
    bad = subprocess.run([sys.executable, "repro.py"], cwd=directory, capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stdout.startswith("FAIL: "), bad.stdout + bad.stderr


def test_tally_keeps_report_ratios_finite_and_the_histogram_renders():
    """A known failure with an error where the bound is 0 has error/bound = inf; the main job's
    HTML report once died on it (numpy: 'supplied range of [-12, inf] is not finite')."""
    from edgediff.session import LOG10_RATIO_RANGE, Tally
    tally = Tally()
    for ratio in (0.0, 1e-3, 1.0, 5.0, np.inf, np.nan):
        tally.example("conv2d|x|default", "mismatch", worst_ratio=ratio)
    values = tally.rows["conv2d|x|default"]["log10_ratio"]
    assert values == [-12.0, -3.0, 0.0, round(np.log10(5.0), 3), 40.0, 40.0]
    assert all(LOG10_RATIO_RANGE[0] <= v <= LOG10_RATIO_RANGE[1] for v in values)
    pytest.importorskip("matplotlib", reason="the HTML report draws its plots with matplotlib")
    from edgediff.report import histogram
    assert histogram(values + [float("inf")], "x / conv2d").startswith("data:image/png;base64,")


def test_known_failure_is_counted_and_the_search_goes_on_and_the_time_budget_still_applies(tmp_path):
    """EdgeDiffRun.account: a failure matching the baseline is logged and counted, not raised; a
    new one is raised (for Hypothesis to shrink). A target that met only known failures still
    stops at its --time-budget share; one that is shrinking a new failure goes on."""
    import dataclasses
    import time

    from edgediff.known import KnownFailure
    from edgediff.pytest_plugin import BUDGET_REACHED, EdgeDiffRun, Target
    from edgediff.runner import FindingFailure
    known = [KnownFailure("planted_swapped_padding", "conv2d", kind="mismatch",
                          when="layout == 'contiguous'", reason="planted, contiguous")]
    run = EdgeDiffRun([], {}, FindingStore(tmp_path, "main"), known, False, "main", budget_per_target=0.0)
    target = Target("conv2d", "planted_swapped_padding", planted.swapped_padding, "default")
    failing = run_case(conv_case(), planted.swapped_padding, "default", OPS["conv2d"])
    assert failing.kind == "mismatch"
    assert run.account(target, failing) is failing                      # known: not raised
    assert set(run.item_known) == {known[0].key}
    assert run.tally.rows[target.key]["known"] == ["known:" + known[0].key]
    logged = [json.loads(line) for line in (tmp_path / "log" / "main.jsonl").read_text().splitlines()]
    assert [r["known"] for r in logged] == ["planted, contiguous"]
    run.started[target.key] = time.monotonic() - 1.0
    with pytest.raises(pytest.skip.Exception, match=BUDGET_REACHED):
        run.within_budget(target)                                       # known hits do not hold it open
    new = dataclasses.replace(failing, case=dataclasses.replace(failing.case, layout="channels_last"))
    with pytest.raises(FindingFailure):
        run.account(target, new)                                        # not in the baseline: raised
    run.within_budget(target)                                           # shrinking it goes on
    with pytest.raises(FindingFailure):
        run.account(target, failing, stop_on_known=True)                # replayed corpus cases stop


# ---- the baseline's `when` is data, never code ------------------------------------------------

ESCAPE = "().__class__.__base__.__subclasses__()[0]('touch /tmp/x') or True"


@pytest.mark.parametrize("when,refused", [
    (ESCAPE, "may call only|may not use Attribute"),
    ("stride.__class__ == 1", "may not use Attribute"),
    ("__import__('os').system('true') or True", "may call only"),
    ("open('/etc/passwd') is not None", "may call only"),
    ("1/0", "reads no field"),
    ("True", "reads no field"),
    ("lambda: stride", "may not use Lambda"),
    ("(s := stride)", "may not use NamedExpr"),
    ("secret == 1", "unknown name 'secret'"),
    ("max(stride, key=abs)", "positional arguments"),
    ("stride ==", "not an expression"),
])
def test_a_when_that_is_not_plain_data_is_refused_at_load_naming_the_entry(tmp_path, when, refused):
    from edgediff.known import load_known
    path = tmp_path / "known.toml"
    path.write_text(f'[[known]]\nadapter = "torch"\nop = "conv2d"\nwhen = {json.dumps(when)}\n')
    with pytest.raises(ValueError, match=refused) as exc:
        load_known(path)
    assert "known entry 0" in str(exc.value)


def test_when_reads_the_case_and_does_not_match_where_it_does_not_apply():
    from edgediff.known import KnownFailure
    perm = KnownFailure("x", "permute", when="any(dims[dims[i]] != i for i in range(len(dims)))")
    assert perm.matches("x", "permute", "default", "mismatch", {"dims": (0, 2, 3, 1)})
    assert not perm.matches("x", "permute", "default", "mismatch", {"dims": (0, 1, 3, 2)})
    fact = KnownFailure("x", "conv2d", when="facts['quantization']['bias_int32_ratio'] > 1")
    assert fact.matches("x", "conv2d", "p", "mismatch", {}, facts={"quantization": {"bias_int32_ratio": 2}})
    assert not fact.matches("x", "conv2d", "p", "mismatch", {}, facts={})      # key missing


def test_the_matrix_is_the_same_whatever_order_the_workers_report_in():
    from edgediff.session import matrix
    row = {"examples": 3, "unsupported": 0, "new": [], "known": []}
    keys = ["view|torch|default", "conv2d|xnnpack|xnnpack/f32", "folded_bn_is_conv_then_bn|ggml|p",
            "conv2d|ggml|conv_2d/f32", "clamp|torch|default"]
    tables = {matrix({k: dict(row) for k in order}) for order in (keys, keys[::-1], sorted(keys))}
    assert len(tables) == 1, tables
    lines = tables.pop().splitlines()
    assert [ln.split()[0] for ln in lines[2:5]] == ["conv2d", "clamp", "view"]
    assert lines[1].split()[1:] == ["ggml", "torch", "xnnpack"]
