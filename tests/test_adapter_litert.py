"""The litert adapter: real LiteRT results against the golden ops, per op and path; the
XNNPACK delegation check; TFLite's SAME padding rule; standalone repro scripts."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import adapters
import reference
from edgediff.case import Case
from edgediff.findings import FindingStore
from edgediff.runner import run_case
from properties.ops import OPS
from reference.padding import same_padding_2d, tflite_same_padding

try:
    L = adapters.load("litert")
except adapters.AdapterUnavailable as exc:
    pytest.skip(f"litert adapter unavailable: {exc}", allow_module_level=True)

PATHS = ("xnnpack", "builtin", "builtin_ref")
RNG = np.random.default_rng(20261)


def normal(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def small_int(*shape):
    return RNG.integers(-4, 5, size=shape).astype(np.float32)


def variance(c):
    return RNG.uniform(0.25, 4.0, c).astype(np.float32)


CASES = {
    "conv2d-same-3x3": Case("conv2d", {"x": normal(1, 3, 7, 7), "w": normal(4, 3, 3, 3), "b": normal(4)},
                            {"stride": 1, "padding": 1, "dilation": 1, "groups": 1}),
    "conv2d-valid-strided-dilated-nhwc": Case(
        "conv2d", {"x": normal(2, 5, 11, 9), "w": normal(6, 5, 3, 2)},
        {"stride": (2, 3), "padding": 0, "dilation": (2, 1), "groups": 1}, "channels_last"),
    "conv2d-asymmetric-pad": Case(
        "conv2d", {"x": small_int(2, 3, 8, 7), "w": small_int(4, 3, 3, 2), "b": small_int(4)},
        {"stride": (2, 1), "padding": ((0, 2), (1, 0)), "dilation": (1, 2), "groups": 1}),
    "conv2d-symmetric-not-same": Case(
        "conv2d", {"x": normal(1, 2, 6, 6), "w": normal(3, 2, 3, 3)},
        {"stride": 1, "padding": (2, 0), "dilation": 1, "groups": 1}, "channels_last"),
    "conv2d-groups=C-is-depthwise": Case(
        "conv2d", {"x": normal(1, 4, 6, 6), "w": normal(8, 1, 3, 3), "b": normal(8)},
        {"stride": 1, "padding": 1, "dilation": 1, "groups": 4}),
    "depthwise-multiplier-strided": Case(
        "depthwise_conv2d", {"x": normal(2, 3, 9, 10), "w": normal(6, 1, 3, 3), "b": normal(6)},
        {"stride": 2, "padding": 1, "dilation": 1}, "channels_last"),
    "depthwise-asymmetric-dilated": Case(
        "depthwise_conv2d", {"x": normal(1, 5, 9, 9), "w": normal(5, 1, 2, 3)},
        {"stride": 1, "padding": ((1, 0), (0, 3)), "dilation": 2}),
    "conv2d-bn": Case(
        "conv2d_batch_norm", {"x": normal(1, 3, 7, 7), "w": normal(4, 3, 3, 3), "b": normal(4),
                              "running_mean": normal(4), "running_var": variance(4),
                              "weight": normal(4), "bias": normal(4)},
        {"stride": 1, "padding": 1, "dilation": 1, "groups": 1, "eps": 1e-5}),
    "conv2d-bn-depthwise-nhwc": Case(
        "conv2d_batch_norm", {"x": normal(2, 4, 6, 5), "w": normal(4, 1, 3, 3),
                              "running_mean": normal(4), "running_var": variance(4)},
        {"stride": 2, "padding": 0, "dilation": 1, "groups": 4, "eps": 1e-3}, "channels_last"),
    "clamp-relu6": Case("clamp", {"x": normal(2, 3, 4, 5) * 8}, {"min": 0.0, "max": 6.0}),
    "clamp-relu-n1-to-1": Case("clamp", {"x": normal(2, 3, 4, 5)}, {"min": -1.0, "max": 1.0},
                               "channels_last"),
    "clamp-relu": Case("clamp", {"x": normal(2, 3, 4, 5)}, {"min": 0.0, "max": None}),
    "clamp-max-min": Case("clamp", {"x": normal(2, 3, 4, 5)}, {"min": -0.5, "max": 0.25}),
    "clamp-max-only": Case("clamp", {"x": normal(1, 2, 3, 3)}, {"min": None, "max": -0.25}),
    "clamp-min>max": Case("clamp", {"x": normal(1, 2, 3, 3)}, {"min": 0.5, "max": -0.25}),
    "mean-hw-keepdim": Case("mean", {"x": normal(2, 3, 4, 5)}, {"dim": (2, 3), "keepdim": True}),
    "mean-negative-dims-nhwc": Case("mean", {"x": normal(2, 3, 4, 5)},
                                    {"dim": (-1, -3), "keepdim": False}, "channels_last"),
    "mean-all-rank5": Case("mean", {"x": normal(2, 3, 2, 5, 2)}, {"dim": None, "keepdim": False}),
    "view-infer": Case("view", {"x": normal(2, 3, 4, 5)}, {"shape": (6, -1)}, "channels_last"),
    "view-rank5": Case("view", {"x": normal(2, 3, 4, 5)}, {"shape": (2, 3, 2, 2, 5)}),
    "permute-nhwc": Case("permute", {"x": normal(2, 3, 4, 5)}, {"dims": (0, 2, 3, 1)}, "channels_last"),
    "permute-rank5-negative": Case("permute", {"x": normal(2, 3, 4, 5, 2)}, {"dims": (4, 2, 3, -5, 1)}),
    "batch-norm-4d": Case("batch_norm", {"x": normal(2, 3, 4, 5), "running_mean": normal(3),
                                         "running_var": variance(3), "weight": normal(3),
                                         "bias": normal(3)}, {"eps": 1e-5}, "channels_last"),
    "batch-norm-2d": Case("batch_norm", {"x": normal(4, 3), "running_mean": normal(3),
                                         "running_var": variance(3)}, {"eps": 0.1}),
    "batch-norm-3d": Case("batch_norm", {"x": normal(2, 3, 5), "running_mean": normal(3),
                                         "running_var": variance(3), "bias": normal(3)}, {"eps": 1e-3}),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("label", list(CASES))
def test_matches_golden(label, path):
    case = CASES[label]
    outcome = run_case(case, L, path, OPS[case.op])
    assert outcome.kind == "pass", outcome.message()


def test_contract():
    assert L.name == "litert" and isinstance(L.version, str) and L.version[0].isdigit()
    assert L.unavailable_reason() is None
    for op in OPS:
        assert adapters.paths(L, op) == PATHS
        assert adapters.arithmetic(L, op, "xnnpack").accumulate == "float32"


def test_facts_name_the_tflite_graph():
    _, facts = L.conv2d(CASES["conv2d-asymmetric-pad"].inputs["x"],
                        CASES["conv2d-asymmetric-pad"].inputs["w"],
                        padding=((0, 2), (1, 0)), path="builtin")
    assert facts == {"tflite_ops": "PAD+CONV_2D", "tflite_padding": "VALID"}
    x, w = normal(1, 2, 6, 6), normal(3, 2, 3, 3)
    assert L.conv2d(x, w, padding=1, path="builtin")[1]["tflite_padding"] == "SAME"
    assert L.conv2d(x, w, padding=0, path="builtin")[1]["tflite_padding"] == "VALID"
    # stride 2 on 6: SAME pads (0, 1), so symmetric 1 is not SAME and goes through PAD
    assert L.conv2d(x, w, stride=2, padding=1, path="builtin")[1]["tflite_ops"] == "PAD+CONV_2D"
    assert L.conv2d(x, w, stride=2, padding=((0, 1), (0, 1)), path="builtin")[1]["tflite_padding"] == "SAME"


def test_grouped_conv_is_unsupported_before_calling_litert(monkeypatch):
    monkeypatch.setattr(L, "MAP_GROUPED_CONV", False)
    case = Case("conv2d", {"x": normal(1, 4, 5, 5), "w": normal(6, 2, 3, 3)},
                {"stride": 1, "padding": 0, "dilation": 1, "groups": 2})
    for path in PATHS:
        outcome = run_case(case, L, path, OPS["conv2d"])
        assert outcome.kind == "unsupported" and outcome.detail.startswith("grouped conv")


def test_grouped_conv_2d_when_enabled(monkeypatch):
    """LiteRT runs a grouped CONV_2D (filter O x KH x KW x C/groups) on every path."""
    monkeypatch.setattr(L, "MAP_GROUPED_CONV", True)
    case = Case("conv2d", {"x": normal(2, 6, 7, 6), "w": normal(9, 2, 3, 2), "b": normal(9)},
                {"stride": (2, 1), "padding": ((1, 0), (0, 1)), "dilation": 1, "groups": 3},
                "channels_last")
    for path in PATHS:
        outcome = run_case(case, L, path, OPS["conv2d"])
        assert outcome.kind == "pass", outcome.message()
        assert outcome.extra["tflite_ops"] == "PAD+CONV_2D"
    assert "MAP_GROUPED_CONV = True" in L.repro_source("conv2d", "builtin")


# ---- the xnnpack path proves XNNPACK ran ------------------------------------------------------

NOT_DELEGATED = {
    # XNNPACK's delegate has no RELU_0_TO_1 (the builtin kernels run it)
    "clamp-relu-0-to-1": Case("clamp", {"x": normal(2, 3, 4, 5)}, {"min": 0.0, "max": 1.0}),
    # a new shape of exactly [-1] is the legacy scalar RESHAPE XNNPACK declines
    "view-flatten-minus-one": Case("view", {"x": normal(2, 3, 4)}, {"shape": (-1,)}),
}


@pytest.mark.parametrize("label", list(NOT_DELEGATED))
def test_xnnpack_path_refuses_ops_xnnpack_did_not_take(label):
    case = NOT_DELEGATED[label]
    outcome = run_case(case, L, "xnnpack", OPS[case.op])
    assert outcome.kind == "unsupported", outcome.message()
    assert outcome.detail.startswith("not delegated"), outcome.detail
    for path in ("builtin", "builtin_ref"):          # the same model runs on the other paths
        assert run_case(case, L, path, OPS[case.op]).kind == "pass"


def test_delegation_check_sees_a_missing_delegate():
    """The check itself: an interpreter without the default delegate has no DELEGATE node."""
    lt = L._litert()
    g, model = L._clamp_model(normal(1, 2, 3, 3), 0.0, 6.0)
    plain = lt["Interpreter"](model_content=model, num_threads=1,
                              experimental_op_resolver_type=lt["OpResolverType"].BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    plain.allocate_tensors()
    with pytest.raises(adapters.Unsupported, match="^not delegated: XNNPACK left RELU6"):
        L._check_delegated(plain, g)
    auto = lt["Interpreter"](model_content=model, num_threads=1)
    auto.allocate_tensors()
    assert "DELEGATE" in [d["op_name"] for d in auto._get_ops_details()]
    L._check_delegated(auto, g)                     # no exception


def test_partly_delegated_graph_is_refused():
    """MAXIMUM is delegated but RELU_0_TO_1 after it is not: the chain is refused."""
    lt = L._litert()
    s = lt["schema"]
    g = L._Graph()
    x = g.tensor((1, 2, 3, 3))
    lo = g.tensor((), np.float32(-1.0))
    mid = g.tensor((1, 2, 3, 3))
    y = g.tensor((1, 2, 3, 3))
    g.op("MAXIMUM", [x, lo], [mid])
    g.op("RELU_0_TO_1", [mid], [y])
    model = g.finish([x], [y])
    interp = lt["Interpreter"](model_content=model, num_threads=1)
    interp.allocate_tensors()
    assert "DELEGATE" in [d["op_name"] for d in interp._get_ops_details()]
    with pytest.raises(adapters.Unsupported, match="RELU_0_TO_1"):
        L._check_delegated(interp, g)
    assert s.BuiltinOperator.RELU_0_TO_1 > 127          # exercised deprecatedBuiltinCode=127


# ---- TFLite's SAME rule ---------------------------------------------------------------------

def test_same_padding_values():
    assert tflite_same_padding(5, 3, 1, 1) == (1, 1)
    assert tflite_same_padding(6, 3, 2, 1) == (0, 1)     # odd total: the extra pixel after
    assert tflite_same_padding(7, 3, 2, 1) == (1, 1)
    assert tflite_same_padding(4, 1, 3, 1) == (0, 0)     # negative total clamps to zero
    assert tflite_same_padding(5, 3, 1, 2) == (2, 2)
    assert tflite_same_padding(1, 7, 1, 1) == (3, 3)
    assert same_padding_2d((6, 7), (3, 3), (2, 2), 1) == ((0, 1), (1, 1))
    assert same_padding_2d(6, 2, 1, 1) == ((0, 1), (0, 1))
    with pytest.raises(ValueError):
        tflite_same_padding(0, 3, 1, 1)


def _same_conv_model(x_nhwc_shape, w_tflite, stride, dilation, depthwise):
    """A CONV_2D / DEPTHWISE_CONV_2D with padding=SAME, built directly (no adapter padding logic)."""
    s = L._litert()["schema"]
    n, h, w, c = x_nhwc_shape
    o = w_tflite.shape[3] if depthwise else w_tflite.shape[0]
    g = L._Graph()
    xi = g.tensor((n, h, w, c))
    wi = g.tensor(w_tflite.shape, w_tflite)
    bi = g.tensor((o,), np.zeros(o, np.float32))
    yi = g.tensor((n, -(-h // stride[0]), -(-w // stride[1]), o))
    opts = s.DepthwiseConv2DOptionsT() if depthwise else s.Conv2DOptionsT()
    if depthwise:
        opts.depthMultiplier = o // c
    opts.padding = s.Padding.SAME
    opts.strideH, opts.strideW = stride
    opts.dilationHFactor, opts.dilationWFactor = dilation
    kind = "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions"
    g.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [xi, wi, bi], [yi], opts, kind)
    return g, g.finish([xi], [yi])


SAME_CONFIGS = [  # (h, w, kh, kw, stride, dilation)
    (5, 5, 3, 3, (1, 1), (1, 1)), (6, 7, 3, 3, (2, 2), (1, 1)), (7, 6, 4, 2, (2, 3), (1, 1)),
    (8, 9, 3, 3, (3, 2), (2, 2)), (5, 4, 2, 2, (1, 1), (1, 1)), (9, 9, 5, 1, (4, 1), (1, 3)),
    (3, 2, 4, 4, (1, 2), (1, 1)), (10, 7, 2, 3, (3, 3), (3, 1)), (1, 1, 3, 3, (1, 1), (1, 1)),
    (6, 6, 1, 1, (4, 4), (1, 1)),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
def test_same_helper_matches_tflite_same(path, depthwise):
    """TFLite's own SAME conv equals the golden conv with the helper's explicit pads, exactly
    (small integers make every sum exact in float32)."""
    for h, w, kh, kw, stride, dilation in SAME_CONFIGS:
        n, c = 2, 3
        o = 6 if depthwise else 4
        x = small_int(n, c, h, w)
        wt = small_int(o, 1 if depthwise else c, kh, kw)
        w_tflite = wt.reshape(o, kh, kw).transpose(1, 2, 0)[None] if depthwise else wt.transpose(0, 2, 3, 1)
        g, model = _same_conv_model((n, h, w, c), w_tflite, stride, dilation, depthwise)
        got = L._execute(g, model, path, x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        pads = same_padding_2d((h, w), (kh, kw), stride, dilation)
        want = reference.conv2d(x, wt, None, stride, pads, dilation, groups=c if depthwise else 1)
        np.testing.assert_array_equal(got, want, err_msg=f"{path} {(h, w, kh, kw, stride, dilation)} pads={pads}")


# ---- standalone repro -----------------------------------------------------------------------

DRIVER = textwrap.dedent('''
    import json, runpy, sys
    import numpy as np
    for blocked in ("adapters", "edgediff", "reference", "properties"):
        sys.modules[blocked] = None          # importing any of them now fails
    jobs = json.loads(sys.argv[1])
    out = {}
    for key, repro in jobs.items():
        ns = runpy.run_path(repro, run_name="repro")       # defines run, INPUTS, PARAMS
        out[key] = np.asarray(ns["run"](ns["INPUTS"], ns["PARAMS"]))
    np.savez(sys.argv[2], **out)
''')

REPRO_CASES = ["conv2d-asymmetric-pad", "conv2d-groups=C-is-depthwise", "depthwise-multiplier-strided",
               "conv2d-bn", "clamp-max-min", "clamp-relu6", "mean-negative-dims-nhwc", "view-infer",
               "permute-rank5-negative", "batch-norm-4d"]


def test_repro_source_runs_standalone(tmp_path):
    """Rendered repro.py files (the finding template + repro_source) print PASS when run as
    scripts, and their run() gives exactly the adapter's numbers in a process where edgediff,
    adapters and reference cannot be imported."""
    store = FindingStore(tmp_path / "findings")
    jobs, expected = {}, {}
    for label in REPRO_CASES:
        case = CASES[label]
        for path in PATHS:
            outcome = run_case(case, L, path, OPS[case.op])
            assert outcome.kind == "pass", outcome.message()
            source = L.repro_source(case.op, path)
            for word in ("import adapters", "from adapters", "import edgediff", "from edgediff",
                         "from reference", "import reference"):
                assert word not in source, word
            directory, _ = store.write(outcome, (label,), source)
            key = f"{label}|{path}"
            jobs[key] = str(directory / "repro.py")
            expected[key] = np.asarray(outcome.observed)
    out = tmp_path / "out.npz"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(jobs), str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as got:
        for key, want in expected.items():
            np.testing.assert_array_equal(got[key], want, err_msg=key)
    for key in ("conv2d-asymmetric-pad|xnnpack", "mean-negative-dims-nhwc|builtin_ref"):
        script = subprocess.run([sys.executable, jobs[key]], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert script.returncode == 0 and script.stdout.strip() == "PASS", script.stdout + script.stderr
