"""The cortex_m adapter's build and checker: a tree that is not one is refused naming what is
missing, a program lowered for MVE is refused, the golden interpreter catches a program whose
kernels computed something else (a planted change to a constant), and a finding's standalone
repro exits 0 on the right int8 output and 1 on a wrong one."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import adapters
from adapters import _source_build as sb


def test_locate_names_the_missing_tree_and_file(tmp_path, monkeypatch):
    from adapters import cortex_m
    monkeypatch.delenv("EXECUTORCH_ROOT", raising=False)
    monkeypatch.setattr(sb, "checkouts_file", lambda: tmp_path / "none.json")
    with pytest.raises(sb.BuildUnavailable, match="set EXECUTORCH_ROOT"):
        cortex_m.locate()
    monkeypatch.setenv("EXECUTORCH_ROOT", str(tmp_path))
    with pytest.raises(sb.BuildUnavailable, match="no backends/cortex_m/ops/operators.yaml"):
        cortex_m.locate()


try:
    CM = adapters.load("cortex_m")
except adapters.AdapterUnavailable as exc:
    CM = None
    REASON = str(exc)
needs_build = pytest.mark.skipif(CM is None, reason=f"cortex_m unavailable: {REASON if CM is None else ''}")


def _conv_case():
    r = np.random.default_rng(3)
    arrays = {"x": r.standard_normal((1, 3, 5, 4)).astype(np.float32),
              "w": r.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.5,
              "b": r.standard_normal(4).astype(np.float32)}
    return arrays, {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}


@needs_build
def test_the_checker_catches_a_program_that_computed_something_else():
    from properties.test_cortex_m import check
    arrays, params = _conv_case()
    out, facts = CM.run("quantized_conv2d", "scalar", arrays, params)
    message, want_q, scale, zp = check("quantized_conv2d", "scalar", arrays, params, out, facts)
    assert message is None, message
    # plant: the golden now sees a different bias for channel 0; the kernels' output is unchanged
    conv = next(n for n in facts["program"]["nodes"] if n["op"].startswith("cortex_m.quantized_conv2d"))
    conv["args"][2]["const"][0] += 5000
    message, *_ = check("quantized_conv2d", "scalar", arrays, params, out, facts)
    assert message and "differ from the int8 golden" in message and "first at NCHW (0, 0" in message


@needs_build
def test_the_standalone_repro_passes_on_the_right_output_and_fails_on_a_wrong_one(tmp_path):
    from properties.test_cortex_m import check
    arrays, params = _conv_case()
    out, facts = CM.run("quantized_conv2d", "scalar", arrays, params)
    _, want_q, scale, zp = check("quantized_conv2d", "scalar", arrays, params, out, facts)
    env = dict(os.environ, CORTEX_M_KERNELS=str(CM.build()))
    env.pop("PYTHONPATH", None)
    for label, expected in (("right", want_q), ("wrong", want_q + (np.arange(want_q.size) == 0).reshape(want_q.shape))):
        script = tmp_path / f"repro_{label}.py"
        script.write_text(CM.standalone_repro("quantized_conv2d", "scalar", arrays, params, expected, scale, zp, "t"))
    # both scripts in one fresh interpreter (each as __main__, its exit status recorded): one
    # torch + executorch import instead of two
    runner = ("import runpy, sys\nfor name in ('right', 'wrong'):\n    try:\n"
              "        runpy.run_path(f'repro_{name}.py', run_name='__main__'); code = 0\n"
              "    except SystemExit as e:\n        code = e.code or 0\n"
              "    print(f'== {name} exit {code}', flush=True)\n")
    done = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=300)
    out = done.stdout
    right, wrong = out.split("== right exit ")[0], out.split("== right exit ")[1]
    assert "PASS" in right and out.count("== right exit 0") == 1, out + done.stderr[-2000:]
    assert "FAIL: 1 of" in wrong and "== wrong exit 1" in wrong, out
    assert "edgediff" not in CM.standalone_repro("quantized_conv2d", "scalar", arrays, params, want_q, scale, zp,
                                                 "t").split('"""', 2)[2]       # no edgediff import
