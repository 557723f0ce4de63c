"""The worker mechanism: aborts, segfaults and hangs become outcomes, the worker restarts,
and arrays cross the process boundary intact."""
from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import adapters
import reference
from edgediff.case import Case
from edgediff.isolation import BackendError, IsolatedAdapter
from edgediff.runner import WorkerDied, run_case
from edgediff.wire import pack, unpack
from properties.ops import OPS

X = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
W_SMALL = np.ones((2, 3, 1, 1), np.float32)
W_BIG = np.ones((2, 3, 5, 1), np.float32)


def test_wire_round_trip_keeps_values_dtypes_and_nhwc_strides():
    nhwc = np.ascontiguousarray(X.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    arrays = {"x": nhwc, "i": np.arange(5, dtype=np.int8), "s": np.array(2.5)}
    header, back = unpack(io.BytesIO(pack({"params": {"padding": ((1, 2), (0, 1))}}, arrays)))
    assert header["params"] == {"padding": ((1, 2), (0, 1))}        # tuples survive
    assert "s" in back and "i" in back
    np.testing.assert_array_equal(back["x"], X)
    assert back["x"].strides == nhwc.strides                         # still channels_last
    assert back["i"].dtype == np.int8 and back["s"].shape == ()


@pytest.fixture(scope="module")
def aborting():
    a = IsolatedAdapter("tests.planted_crash:aborts", OPS)
    yield a
    a.close()


def test_worker_answers_like_the_adapter(aborting):
    out = aborting.call("conv2d", "default", {"x": X, "w": W_SMALL}, {})
    np.testing.assert_allclose(out, reference.conv2d(X, W_SMALL), rtol=1e-6)
    assert aborting.name == "planted_aborts" and aborting.paths["conv2d"] == ("default",)


def test_abort_is_reported_with_signal_and_stderr_then_worker_restarts(aborting):
    with pytest.raises(WorkerDied) as info:
        aborting.call("conv2d", "default", {"x": X, "w": W_BIG}, {})
    assert info.value.signal == "SIGABRT" and info.value.exitcode == -6
    assert "GGML_ASSERT(kernel fits) failed" in info.value.stderr_tail
    restarts = aborting.restarts
    out = aborting.call("conv2d", "default", {"x": X, "w": W_SMALL}, {})
    assert out.shape == (2, 2, 4, 5) and aborting.restarts == restarts + 1


def test_segfault_is_a_crash_outcome():
    a = IsolatedAdapter("tests.planted_crash:segfaults", OPS)
    case = Case("conv2d", {"x": X, "w": W_SMALL}, {"stride": 3, "padding": 0, "dilation": 1, "groups": 1})
    out = run_case(case, a, "default", OPS["conv2d"])
    assert out.kind == "crash" and out.extra["signal"] == "SIGSEGV"
    a.close()


def test_hang_is_a_hang_outcome_and_the_worker_is_replaced():
    a = IsolatedAdapter("tests.planted_crash:hangs", OPS, timeout=1.0)
    case = Case("conv2d", {"x": X, "w": W_SMALL}, {"stride": 1, "padding": 0, "dilation": 3, "groups": 1})
    out = run_case(case, a, "default", OPS["conv2d"])
    assert out.kind == "hang" and "1 s" in out.detail
    ok = run_case(Case("conv2d", {"x": X, "w": W_SMALL}, {}), a, "default", OPS["conv2d"])
    assert ok.kind == "pass"
    assert a.call_timeout() < 1.0          # later hangs are detected sooner
    a.close()


def test_backend_exception_in_worker_is_an_error_outcome():
    a = IsolatedAdapter("tests.planted_crash:aborts", OPS)
    bad = {"x": X, "w": np.ones((2, 2, 1, 1), np.float32)}            # channel mismatch
    with pytest.raises(BackendError) as info:
        a.call("conv2d", "default", bad, {})
    assert str(info.value).startswith("ValueError:") and "groups" in str(info.value)
    a.close()


def test_unknown_module_is_unavailable_with_reason():
    with pytest.raises(adapters.AdapterUnavailable, match="no_such_module"):
        IsolatedAdapter("no_such_module:thing", OPS)


PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"


def _other_python():
    for candidate in sorted(PYENV_VERSIONS.glob("3.1[0-9]*/bin/python3")):
        ok = subprocess.run([str(candidate), "-c", "import numpy"], capture_output=True).returncode == 0
        if ok:
            return str(candidate)
    return None


def test_worker_runs_under_another_interpreter():
    other = _other_python()
    if other is None:
        pytest.skip(f"no other Python interpreter with NumPy found under {PYENV_VERSIONS}")
    a = IsolatedAdapter("tests.planted_crash:aborts", OPS, python=other)
    assert a.worker_python == other
    np.testing.assert_allclose(a.call("conv2d", "default", {"x": X, "w": W_SMALL}, {}),
                               reference.conv2d(X, W_SMALL), rtol=1e-6)
    a.close()
