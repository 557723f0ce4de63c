"""The CMSIS-NN defects as maintainers get them: fixtures/cmsis_nn/*/repro.c, C programs against
arm_nnfunctions.h with the data inline. Each is what adapters._cmsis_nn.c_repro writes today
(no stale copy), and compiled against the CMSIS-NN build alone it still fails (exit 1, or a
fault); the same template on an ordinary case prints PASS and exits 0."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from adapters._cmsis_nn import build as cmsis_build
from adapters._cmsis_nn import c_repro
from reference import quant

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cmsis_nn"

try:
    CFG = cmsis_build.locate()
except cmsis_build.BuildUnavailable as exc:
    CFG, REASON = None, str(exc)


def test_committed_repros_are_what_the_generator_writes(tmp_path):
    written = c_repro.write_pinned(tmp_path)
    assert {p.parent.name for p in written} == {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    for path in written:
        assert (FIXTURES / path.parent.name / "repro.c").read_text() == path.read_text(), path.parent.name


def _run(source: str, tmp_path: Path):
    if CFG is None:
        pytest.skip(f"CMSIS-NN unavailable: {REASON}")
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    c, exe = tmp_path / "repro.c", tmp_path / "repro"
    c.write_text(source)
    built = subprocess.run(["cc", "-O1", str(c), "-I", str(CFG.include), str(CFG.lib), "-o", str(exe)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    return subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_each_cmsis_nn_repro_still_fails(name, tmp_path):
    out = _run((FIXTURES / name / "repro.c").read_text(), tmp_path)
    assert (out.returncode == 1 and "FAIL" in out.stdout) or out.returncode < 0, out.stdout


def test_the_template_passes_where_cmsis_nn_is_right(tmp_path):
    case = dict(x=np.arange(-6, 12, dtype=np.int8).reshape(1, 3, 3, 2), w=np.ones((2, 3, 3, 2), np.int8),
                bias=np.array([3, -5], np.int32), input_offset=1, output_offset=-2,
                multipliers=np.full(2, 1 << 30, np.int32), shifts=np.full(2, -1, np.int32),
                padding=((1, 1), (1, 1)))
    expected = quant.conv2d_s8(**case, rounding="double")
    out = _run(c_repro.program("arm_convolve_wrapper_s8", case, expected, "ordinary"), tmp_path)
    assert out.returncode == 0 and "PASS" in out.stdout, out.stdout
