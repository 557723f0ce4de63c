"""The bounded mutant run: a handful of planted bugs must be found within the ci budget.

Each mutant here stands for one strategy dimension; if a change to ``properties/`` stops
the strategies from reaching it (asymmetric padding, a 1x1 output, a channels_last view,
NaN in clamp, rounding ties in int8, groups, depth multipliers), this fails.
The full run over every mutant is ``edgediff power`` (results in benchmarks/RESULTS.md).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgediff import power

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("torch", reason="the mutants wrap the torch adapter")

BOUNDED = ["pad_split_before", "one_by_one_output_no_bias", "view_memory_order",
           "clamp_drops_nan", "dw_multiplier_order", "int8_rdbpot_half_even"]


@pytest.fixture(scope="module")
def results():
    return {r.mutant.removeprefix("mutant_"): r
            for r in power.measure_all(power.select(BOUNDED), profile="ci")}


@pytest.mark.parametrize("name", BOUNDED)
def test_mutant_detected_within_ci_budget(results, name):
    r = results[name]
    assert r.detected, (f"{name} ({r.bug}) escaped {r.examples_run} ci-profile examples: "
                        f"the strategies no longer reach its trigger ({power.select([name])[0][1].trigger})")
    assert r.examples_to_detect <= 40
    assert r.repro_elements < power.GOALS["median_repro_elements"], \
        f"{name}: shrunk repro has {r.repro_elements} input elements: {r.repro}"


def test_registry_has_at_least_25_mutants_with_documented_bugs():
    chosen = power.select()
    assert len(chosen) >= 25
    for _, m in chosen:
        assert m.bug and m.trigger and m.mutated_ops, m.name
    assert len({m.name for _, m in chosen}) == len(chosen), "mutant names must be unique"


def test_unknown_mutant_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "edgediff", "power", "--mutant", "no_such_bug"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown mutant" in proc.stderr and "pad_swapped" in proc.stderr
