"""ExecuTorch's Cortex-M backend end to end: the kernels equal the int8 golden bit for bit.

Each example is a small float model (``adapters.cortex_m.OPS``) that the backend's own flow
quantizes (``CortexMQuantizer``, calibrated on the example's input) and lowers
(``CortexMPassManager``, SCALAR target; legacy and explicit-NHWC layouts), run by the pip
ExecuTorch runtime with the real ``cortex_m::*`` kernels over CMSIS-NN. Judged on:

1. the kernels' output, read back in int8, against the same program recomputed with
   ``reference.quant`` from the program's own constants and scales
   (``properties.cortex_m_golden``), **bit for bit**;
2. the backend's Python reference ops (the lowered edge program run by torch) against that
   same golden, bit for bit, except where a difference is already known (``KNOWN_PYTHON_REF``);
3. context, not judged: the float model's output, in output LSBs (``event``).

A failure is shrunk by Hypothesis and written to ``--findings-dir`` as a finding with a
standalone ``repro.py`` (the torch model, the Cortex-M flow, the runtime call, the expected
int8 output inline) and an ``ISSUE.md``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import adapters
from edgediff.isolation import BackendError, isolate
from properties import cortex_m_golden as golden

try:
    CM = adapters.load("cortex_m")
except adapters.AdapterUnavailable as exc:
    pytest.skip(str(exc), allow_module_level=True)

PATHS = ("scalar", "scalar/nhwc")
# The backend's Python reference ops that disagree with its kernels, and why (measured).
KNOWN_PYTHON_REF = {
    "quantized_avg_pool2d": "the Python reference quantized_avg_pool2d rounds ties of the window "
                            "average differently from arm_avgpool_s8 (half away from zero)",
    "quantized_mean": "mean over H, W is lowered to quantized_avg_pool2d; its Python reference "
                      "rounds ties differently from arm_avgpool_s8",
}


# Python reference ops that raise where the kernel computes (measured), by error text.
KNOWN_PYTHON_REF_ERRORS = {
    "slow_conv_dilated": "the Python reference quantized_conv2d / quantized_depthwise_conv2d run "
                         "F.conv2d on int32 tensors, which has no dilated kernel: dilation > 1 raises",
}
# Runtime failures already found and understood, by the text the runtime logs (measured on
# ExecuTorch 455652a2 + CMSIS-NN 99f736a6; README "What edgediff found"). An example that hits
# one is counted (event), not failed; the pinned tests below check each still reproduces.
KNOWN_RUNTIME = {
    "must have contiguous dim_order": "the explicit-NHWC kernels refuse (0x12) a tensor whose dim "
        "order the lowering left non-contiguous: NHWC tensors with unit dims",
    "must use contiguous dimension order": "the explicit-NHWC kernels refuse (0x12) a tensor whose "
        "dim order the lowering left non-contiguous: NHWC tensors with unit dims",
    "in operator aten::hardtanh.out": "an activation the pass manager could not fuse stays a portable "
        "aten::hardtanh, whose input (channels_last) and output dim orders differ when the tensor "
        "has unit dims: 0x12 (related: pytorch/executorch#22520)",
}
EXAMPLES = 3          # per (op, path): each is a quantization, a lowering and a run (~2 s)


def _selected(config) -> bool:
    names = config.getoption("backend", None)
    if names:
        return "cortex_m" in [n.strip() for n in names.split(",")]
    return not config.getoption("adapter", None)


@pytest.fixture(scope="module")
def cortex_m(request):
    if not _selected(request.config):
        pytest.skip("cortex_m is not selected in this run (--backend)")
    worker = isolate(CM, "cortex_m", list(CM.OPS))
    yield worker
    worker.close()


# ---- strategies: small models, seeded float values ------------------------------------------

def _values(seed, shape, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@st.composite
def conv_cases(draw, depthwise):
    c = draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    if depthwise:
        o, groups = c * draw(st.integers(1, 2)), c
    else:
        groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))
        o = groups * draw(st.integers(1, 4))
    # the output must have at least one element
    if (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) < 0 or (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) < 0:
        kh = kw = 1
        dilation = (1, 1)
    seed = draw(st.integers(0, 2 ** 16))
    arrays = {"x": _values(seed, (1, c, h, w)), "w": _values(seed + 1, (o, c // groups, kh, kw), 0.5)}
    if draw(st.booleans()):
        arrays["b"] = _values(seed + 2, (o,))
    params = {"stride": stride, "padding": padding, "dilation": dilation,
              "activation": draw(st.sampled_from([None, "relu", "relu6"]))}
    if not depthwise:
        params["groups"] = groups
    return arrays, params


@st.composite
def linear_cases(draw):
    n, k, o = draw(st.integers(1, 3)), draw(st.integers(1, 16)), draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2 ** 16))
    arrays = {"x": _values(seed, (n, k)), "w": _values(seed + 1, (o, k), 0.5)}
    if draw(st.booleans()):
        arrays["b"] = _values(seed + 2, (o,))
    return arrays, {"activation": draw(st.sampled_from([None, "relu", "relu6"]))}


@st.composite
def add_cases(draw):
    shape = (1, draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    seed = draw(st.integers(0, 2 ** 16))
    return {"x": _values(seed, shape), "y": _values(seed + 1, shape, draw(st.sampled_from([0.25, 1.0, 4.0])))}, {}


@st.composite
def pool_cases(draw):
    c, h, w = draw(st.integers(1, 6)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    kh, kw = draw(st.integers(1, min(3, h))), draw(st.integers(1, min(3, w)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    seed = draw(st.integers(0, 2 ** 16))
    return {"x": _values(seed, (1, c, h, w))}, {"kernel": (kh, kw), "stride": stride, "padding": padding}


@st.composite
def mean_cases(draw):
    shape = (1, draw(st.integers(1, 6)), draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    return {"x": _values(draw(st.integers(0, 2 ** 16)), shape)}, {"dim": (2, 3)}


CASES = {
    "quantized_conv2d": conv_cases(False),
    "quantized_depthwise_conv2d": conv_cases(True),
    "quantized_linear": linear_cases(),
    "quantized_add": add_cases(),
    "quantized_avg_pool2d": pool_cases(),
    "quantized_mean": mean_cases(),
}
TARGETS = [(op, path) for op in CASES for path in PATHS]


# ---- the comparison -------------------------------------------------------------------------

def int8_of(a, scale, zero_point):
    """Output values back in int8 (the dequantize is exact: (q - zp) * scale in float32)."""
    return np.rint(np.asarray(a, np.float32) / np.float32(scale)).astype(np.int64) + zero_point


def note(text):
    """A Hypothesis event inside a property, nothing outside one (the fixed tests)."""
    try:
        event(text)
    except Exception:
        pass


def check(op, path, arrays, params, out, facts):
    """(message or None, expected int8, scale, zero point) for one run."""
    program = facts["program"]
    nhwc = CM.nhwc_model(op, arrays, path)
    inputs = [arrays[k] for k in CM.INPUTS.get(op, ("x",))]
    if nhwc:
        inputs = [a.transpose(0, 2, 3, 1) for a in inputs]
    want = golden.evaluate(program, inputs, facts["rounding"])[0]
    if nhwc and want.ndim == 4:
        want = want.transpose(0, 3, 1, 2)
    scale, zp = golden.output_quantization(program)
    want_q, got_q = int8_of(want, scale, zp), int8_of(out, scale, zp)
    flt = np.asarray(facts["float_model"], np.float64).reshape(out.shape)
    note(f"max |int8 - float model| in output LSBs: {int(np.ceil(np.abs(got_q - (flt / scale + zp)).max(initial=0)))}")
    if got_q.shape != want_q.shape:
        return f"{op}/{path}: output shape {got_q.shape}, golden {want_q.shape}", want_q, scale, zp
    bad = np.argwhere(got_q != want_q)
    if bad.size:
        i = tuple(int(v) for v in bad[0])
        return (f"{op}/{path}: the cortex_m kernels differ from the int8 golden in {len(bad)} of "
                f"{got_q.size} outputs; first at NCHW {i}: kernel {got_q[i]}, golden {want_q[i]} "
                f"(ops {facts['program_ops']}, output scale {scale:.6g}, zero point {zp})"), want_q, scale, zp
    if facts.get("python_reference") is None:
        error = facts.get("python_reference_error", "")
        note(f"{op}: the backend's Python reference raised: {error}")
        if not any(k in error for k in KNOWN_PYTHON_REF_ERRORS):
            return (f"{op}/{path}: the backend's Python reference ops raise where the kernels "
                    f"compute: {error}"), want_q, scale, zp
        return None, want_q, scale, zp
    ref_q = int8_of(np.asarray(facts["python_reference"], np.float32).reshape(out.shape), scale, zp)
    ref_bad = np.argwhere(ref_q != want_q)
    if ref_bad.size:
        note(f"{op}: the backend's Python reference differs from the kernels")
        if op not in KNOWN_PYTHON_REF:
            i = tuple(int(v) for v in ref_bad[0])
            return (f"{op}/{path}: the backend's Python reference ops differ from the int8 golden "
                    f"(and the kernels) in {len(ref_bad)} of {ref_q.size} outputs; first at {i}: "
                    f"reference {ref_q[i]}, golden {want_q[i]}"), want_q, scale, zp
    return None, want_q, scale, zp


def write_finding(findings_dir, op, path, arrays, params, message, want_q, scale, zp, facts):
    """A finding directory with the standalone repro (overwritten while Hypothesis shrinks, so
    it ends with the minimal example)."""
    key = hashlib.sha256(f"{op}|{path}|{message.split(';')[0].split(':')[1]}".encode()).hexdigest()[:10]
    d = Path(findings_dir) / f"cortex_m-{op}-{path.replace('/', '_')}-{key}"
    d.mkdir(parents=True, exist_ok=True)
    title = f"[ExecuTorch Cortex-M, {path}] {op}: {message.split(': ', 1)[1].split(';')[0]}"
    repro = CM.standalone_repro(op, path, arrays, params, want_q, scale, zp, title)
    (d / "repro.py").write_text(repro)
    shapes = {k: list(np.shape(v)) for k, v in arrays.items()}
    (d / "finding.json").write_text(json.dumps({
        "id": d.name, "adapter": "cortex_m", "version": CM.version, "op": op, "path": path,
        "kind": "mismatch", "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()},
        "shapes": shapes, "detail": message, "program_ops": facts["program_ops"]}, indent=2))
    (d / "ISSUE.md").write_text("\n".join([
        f"# {title}", "", "## Versions", f"- {CM.version}", "", "## What differed", "```", message, "```",
        "Expected: the int8 output CMSIS-NN's arithmetic gives for the lowered program's own scales "
        "and constants (edgediff's `reference.quant`); got: the cortex_m kernels' output read back in int8.",
        "", "## Reproduce", "```python", repro.rstrip("\n"), "```",
        "", "Found by edgediff (differential testing, shrunk by Hypothesis).", ""]))
    return d


@pytest.mark.parametrize("op,path", TARGETS, ids=[f"{op}-{path}" for op, path in TARGETS])
def test_cortex_m_kernels_equal_the_int8_golden(cortex_m, request, op, path):
    n = request.config.getoption("max_examples", None) or EXAMPLES
    # The gate (ci profile, derandomized) does not shrink: every step is a lowering (~2 s), and
    # the cases are small already. Other profiles shrink the failure to a minimal model.
    phases = [Phase.explicit, Phase.reuse, Phase.generate] if settings().derandomize else list(Phase)

    @settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=n, phases=phases)
    @given(data=st.data())
    def prop(data):
        one_example(cortex_m, request, op, path, data)
    prop()


def one_example(cortex_m, request, op, path, data):
    arrays, params = data.draw(CASES[op], label="case")
    try:
        out, facts = cortex_m.call(op, path, arrays, params)
    except adapters.Unsupported as exc:
        event(f"unsupported: {str(exc)[:80]}")
        return
    except BackendError as exc:
        known = next((why for text, why in KNOWN_RUNTIME.items() if text in str(exc)), None)
        if known is None:
            raise
        event(f"known: {known[:60]}")
        return
    try:
        message, want_q, scale, zp = check(op, path, arrays, params, out, facts)
    except golden.NotModelled as exc:
        event(f"not modelled: {exc}")
        return
    if message:
        findings_dir = request.config.getoption("findings_dir", None)
        if findings_dir:
            write_finding(findings_dir, op, path, arrays, params, message, want_q, scale, zp, facts)
        raise AssertionError(message)


def test_a_program_lowered_for_mve_is_refused_not_run(cortex_m):
    """MVE kernels cannot run on x86: the adapter lowers (so the refusal names the ops) and
    refuses, instead of running a program whose linear bias is folded into an MVE kernel sum."""
    arrays = {"x": _values(0, (2, 5)), "w": _values(1, (3, 5)), "b": _values(2, (3,))}
    with pytest.raises(adapters.Unsupported, match="lowered for MVE.*cannot run"):
        cortex_m.call("quantized_linear", "mve", arrays, {})


def test_the_python_reference_avg_pool_rounds_ties_unlike_the_kernel(cortex_m):
    """Pins the known difference (KNOWN_PYTHON_REF) on a case found by hand (measured: 1 of 27
    outputs): the kernel and the golden agree and the backend's Python reference op does not."""
    x = np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)
    arrays, params = {"x": x}, {"kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}
    out, facts = cortex_m.call("quantized_avg_pool2d", "scalar", arrays, params)
    message, want_q, scale, zp = check("quantized_avg_pool2d", "scalar", arrays, params, out, facts)
    assert message is None
    ref_q = int8_of(np.asarray(facts["python_reference"], np.float32).reshape(out.shape), scale, zp)
    assert (int8_of(out, scale, zp) == want_q).all()
    assert (ref_q != want_q).any(), f"the Python reference now agrees: {ref_q.ravel()} == {want_q.ravel()}"


@pytest.mark.parametrize("text", sorted(set(KNOWN_RUNTIME) - {"must use contiguous dimension order"}))
def test_each_known_runtime_failure_still_reproduces(cortex_m, text):
    """The minimal cases of KNOWN_RUNTIME (found by this property): each still fails the way its
    entry says. When one passes, the entry (and the README row) can go."""
    cases = {
        "must have contiguous dim_order": ("quantized_conv2d", "scalar/nhwc", {
            "x": _values(0, (1, 1, 1, 3)), "w": _values(1, (4, 1, 1, 2))},
            {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 2), "groups": 1}),
        "in operator aten::hardtanh.out": ("quantized_depthwise_conv2d", "scalar", {
            "x": np.array([[[[0.12573022]]]], np.float32), "w": np.array([[[[0.17279209]]]], np.float32)},
            {"stride": (1, 1), "padding": (0, 1), "dilation": (1, 1), "activation": "relu6"}),
    }
    op, path, arrays, params = cases[text]
    with pytest.raises(BackendError, match="0x12") as info:
        cortex_m.call(op, path, arrays, params)
    assert text in str(info.value)
