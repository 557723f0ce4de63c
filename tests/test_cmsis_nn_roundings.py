"""CMSIS-NN under test with both of its requantization roundings: the int8 properties (which
run against the library the environment or the setup names, double rounding by default) run
again in a child pytest against the CMSIS_NN_USE_SINGLE_ROUNDING build that scripts/setup.sh
makes from the shared snapshot, and the adapter must see that it is the single-rounding one."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters import _source_build as sb

REPO = Path(__file__).resolve().parent.parent


def single_rounding_env():
    root, _ = sb.checkout("CMSIS_NN_ROOT")
    lib, _ = sb.checkout("CMSIS_NN_LIB_SINGLE")
    if root is None or lib is None or not Path(lib).is_file():
        pytest.skip("no single-rounding CMSIS-NN build: scripts/setup.sh makes one from "
                    "../shared/third_party/ (or set CMSIS_NN_ROOT and CMSIS_NN_LIB_SINGLE)")
    env = dict(os.environ, CMSIS_NN_ROOT=str(root), CMSIS_NN_LIB=str(lib))
    env.pop("CMSIS_NN_INCLUDE", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


def test_the_adapter_sees_the_single_rounding_build():
    proc = subprocess.run([sys.executable, "adapters/_cmsis_nn/build.py"], cwd=REPO,
                          env=single_rounding_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rounding  : single" in proc.stdout, proc.stdout


def test_the_int8_properties_hold_with_single_rounding(tmp_path):
    env = single_rounding_env()
    env["HYPOTHESIS_STORAGE_DIRECTORY"] = str(tmp_path / "hypothesis")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "properties/test_int8.py", "--hypothesis-profile", "ci", "-rs",
                           "--findings-dir", str(tmp_path / "findings")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert " passed" in out and "CMSIS-NN is not supplied" not in out, out[-2000:]
