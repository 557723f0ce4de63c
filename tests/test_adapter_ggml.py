"""The ggml adapter on fixed cases, through its worker process as edgediff runs it: every path
agrees with the golden op where ggml is correct, unsupported configurations are refused
before ggml is called, the known ggml 0.15.3 bugs show up as the findings they are, and each
path's repro source runs standalone (NumPy + ggml only) and gives the adapter's numbers."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import adapters
from edgediff.case import Case, to_jsonable
from edgediff.runner import run_case
from properties.ops import OPS
from properties.strategies import make_values

try:
    GGML = adapters.load("ggml")
except adapters.AdapterUnavailable as exc:
    pytest.skip(f"ggml adapter unavailable: {exc}", allow_module_level=True)

# ggml 0.15.3 bugs, fixed upstream later (see the adapter's report): the outcome each gives.
KNOWN_BUGS = {
    # ggml_conv_2d_dw always makes an F16 im2col, whose CPU kernel asserts an F16 kernel.
    "conv_2d_dw/f32": ("crash", "GGML_ASSERT(src0->type == GGML_TYPE_F16) failed"),
    # GGML_OP_CONV_2D_DW reads the kernel as float whatever its type: F16 kernels give garbage.
    "conv_2d_dw_direct/f16": ("mismatch", ""),
}


@pytest.fixture(scope="module")
def ggml_isolated():
    from edgediff.isolation import isolate
    adapter = isolate(GGML, "ggml", OPS)
    yield adapter
    adapter.close()


def v(kind, seed, *shape):
    return make_values(kind, seed, shape)


def conv_case(op, layout="contiguous", kind="normal", groups=1, mult=1, bias=True, bn=False, **params):
    n, c, h, w = 2, 4, 9, 8
    o = 6 if groups == 1 else c * mult
    inputs = {"x": v(kind, 1, n, c, h, w), "w": v(kind, 2, o, c // groups, 3, 2)}
    if bias:
        inputs["b"] = v(kind, 3, o)
    p = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2)}
    p.update(params)
    if op != "depthwise_conv2d":
        p["groups"] = groups
    if bn:
        inputs.update(running_mean=v("normal", 4, o), running_var=np.abs(v("normal", 5, o)) + 0.5,
                      weight=v("normal", 6, o), bias=v("normal", 7, o))
        p["eps"] = 1e-3
    return Case(op, inputs, p, layout)


def fixed_cases():
    """(id, case, paths expected to pass) per op; depthwise paths only on depthwise cases."""
    conv = paths_of("conv2d")
    dense = tuple(p for p in conv if "_dw" not in p)
    dw = paths_of("depthwise_conv2d")
    bn_dense = tuple(p for p in paths_of("conv2d_batch_norm") if "_dw" not in p)
    bn_dw = tuple(p for p in paths_of("conv2d_batch_norm") if "_dw" in p)
    x4 = v("normal", 11, 2, 3, 4, 5)
    out = []
    for layout in ("contiguous", "channels_last"):
        out += [
            (f"conv2d-{layout}", conv_case("conv2d", layout), dense),
            (f"conv2d-exact-{layout}", conv_case("conv2d", layout, kind="small_int", stride=1,
                                                 padding=1, dilation=1), dense),
            (f"conv2d-depthwise-groups-{layout}", conv_case("conv2d", layout, groups=4), dw),
            (f"depthwise-{layout}", conv_case("depthwise_conv2d", layout, groups=4), dw),
            (f"depthwise-multiplier3-{layout}", conv_case("depthwise_conv2d", layout, groups=4, mult=3), dw),
            (f"conv-bn-{layout}", conv_case("conv2d_batch_norm", layout, bn=True), bn_dense),
            (f"dw-bn-{layout}", conv_case("conv2d_batch_norm", layout, groups=4, bn=True, bias=False), bn_dw),
            (f"clamp-relu6-{layout}", Case("clamp", {"x": x4 * 4}, {"min": 0.0, "max": 6.0}, layout), ("clamp",)),
            (f"batch_norm-{layout}", Case("batch_norm", {"x": x4, "running_mean": v("normal", 12, 3),
                                                         "running_var": np.abs(v("normal", 13, 3)),
                                                         "weight": v("normal", 14, 3), "bias": v("normal", 15, 3)},
                                          {"eps": 1e-5}, layout), ("mul_add",)),
            (f"mean-hw-{layout}", Case("mean", {"x": x4}, {"dim": (-2, -1), "keepdim": True}, layout),
             ("mean", "pool_2d_avg")),
            (f"permute-{layout}", Case("permute", {"x": x4}, {"dims": (0, 2, 3, 1)}, layout), ("permute_cont",)),
        ]
    out += [
        ("clamp-min-only", Case("clamp", {"x": x4}, {"min": -0.25, "max": None}), ("clamp",)),
        ("clamp-max-only", Case("clamp", {"x": x4}, {"min": None, "max": 0.5}), ("clamp",)),
        ("mean-channels", Case("mean", {"x": x4}, {"dim": 1, "keepdim": False}), ("mean",)),
        ("mean-all", Case("mean", {"x": x4}, {"dim": None, "keepdim": False}), ("mean", "pool_2d_avg")[:1]),
        ("mean-rank5", Case("mean", {"x": v("normal", 16, 2, 3, 4, 2, 3)}, {"dim": (0, 1, 4), "keepdim": True}),
         ("mean",)),
        ("mean-rank1", Case("mean", {"x": v("normal", 17, 7)}, {"dim": 0, "keepdim": True}), ("mean",)),
        ("view", Case("view", {"x": x4}, {"shape": (6, -1, 2)}), ("reshape",)),
        ("view-rank1", Case("view", {"x": v("normal", 18, 2, 3)}, {"shape": (6,)}), ("reshape",)),
        ("permute-rank3", Case("permute", {"x": v("normal", 19, 2, 3, 4)}, {"dims": (-1, 0, 1)}), ("permute_cont",)),
        ("batch_norm-rank2", Case("batch_norm", {"x": v("normal", 20, 5, 3), "running_mean": v("normal", 21, 3),
                                                 "running_var": np.abs(v("normal", 22, 3))}, {"eps": 0.1}),
         ("mul_add",)),
    ]
    return out


def paths_of(op):
    return adapters.paths(GGML, op)


CASES = fixed_cases()


def test_paths_cover_every_op_and_kernel_type():
    assert set(GGML.paths) == set(OPS)
    assert set(paths_of("conv2d")) == {f"{fn}/{k}" for fn in ("conv_2d", "conv_2d_direct", "conv_2d_dw",
                                                                "conv_2d_dw_direct") for k in ("f32", "f16")}
    assert set(paths_of("conv2d_batch_norm")) == {p + "+mul_add" for p in paths_of("conv2d")}
    assert GGML.version.startswith("0.15.3")
    assert GGML.isolated and GGML.worker_env["GGML_NO_BACKTRACE"] == "1"


@pytest.mark.parametrize("case,path", [pytest.param(c, p, id=f"{cid}-{p}") for cid, c, ps in CASES for p in ps])
def test_fixed_case(ggml_isolated, case, path):
    outcome = run_case(case, ggml_isolated, path, OPS[case.op])
    expected_kind, stderr = KNOWN_BUGS.get(path.split("+")[0], ("pass", ""))
    assert outcome.kind == expected_kind, outcome.message()
    assert stderr in outcome.detail
    if expected_kind == "pass":
        assert outcome.extra.get("ggml_graph"), "the result names the ggml graph that computed it"


@pytest.mark.parametrize("path", [p for p in paths_of("conv2d")])
def test_asymmetric_padding_is_unsupported(ggml_isolated, path):
    case = conv_case("conv2d", groups=4 if "_dw" in path else 1, padding=((1, 0), (1, 1)))
    outcome = run_case(case, ggml_isolated, path, OPS["conv2d"])
    assert outcome.kind == "unsupported"
    assert "asymmetric padding" in outcome.detail


@pytest.mark.parametrize("case,path,words", [
    (conv_case("conv2d", groups=2), "conv_2d/f32", "no groups argument"),
    (conv_case("conv2d", groups=2), "conv_2d_direct/f16", "no groups argument"),
    (conv_case("conv2d", groups=2), "conv_2d_dw_direct/f32", "depthwise only"),
    (conv_case("conv2d_batch_norm", groups=2, bn=True), "conv_2d_dw/f16+mul_add", "depthwise only"),
    (Case("permute", {"x": np.zeros((1, 2, 1, 2, 1), np.float32)}, {"dims": (4, 3, 2, 1, 0)}),
     "permute_cont", "at most 4 dimensions"),
    (Case("view", {"x": np.zeros((2, 3), np.float32)}, {"shape": (1, 1, 2, 1, 3)}), "reshape",
     "at most 4 dimensions"),
    (Case("mean", {"x": np.zeros((2, 2, 2, 2, 2), np.float32)}, {"dim": (0, 2, 4), "keepdim": False}),
     "mean", "at most 4 dimensions"),
    (Case("mean", {"x": np.zeros((2, 3, 4, 5), np.float32)}, {"dim": 1, "keepdim": False}),
     "pool_2d_avg", "dims (2, 3)"),
    (conv_case("conv2d", kind="large"), "conv_2d/f16", "largest finite value is 65504"),
    (conv_case("depthwise_conv2d", groups=4, kind="large"), "conv_2d_dw_direct/f16", "65504"),
], ids=lambda p: p if isinstance(p, str) else None)
def test_unsupported_configurations(ggml_isolated, case, path, words):
    outcome = run_case(case, ggml_isolated, path, OPS[case.op])
    assert outcome.kind == "unsupported"
    assert words in outcome.detail


def test_clamp_with_min_above_max_gives_min():
    """ggml_clamp computes MAX(MIN(x, max), min); torch.clamp gives max. A semantic
    difference the property suite reports as a mismatch."""
    x = v("normal", 30, 1, 2, 3, 4)
    result, _ = GGML.clamp(x, min=1.0, max=-1.0, path="clamp")
    assert np.all(result == 1.0)


def test_mean_reduces_after_permute_into_ne0():
    x = v("normal", 31, 2, 3, 4, 5)
    result, facts = GGML.mean(x, dim=(0, 2), keepdim=False, path="mean")
    assert facts["ggml_graph"] == "PERMUTE -> CONT -> RESHAPE -> MEAN"
    np.testing.assert_allclose(result, x.astype(np.float64).mean(axis=(0, 2)), rtol=1e-6)


def test_channels_last_depthwise_runs_the_cwhn_kernel(ggml_isolated):
    case = conv_case("depthwise_conv2d", "channels_last", groups=4, mult=2)
    outcome = run_case(case, ggml_isolated, "conv_2d_dw_direct/f32", OPS[case.op])
    assert outcome.kind == "pass", outcome.message()
    assert outcome.extra["ggml_layout"].startswith("CWHN")


# ---- repro sources ---------------------------------------------------------------------------

DRIVER = '''

if __name__ == "__main__":
    import json, sys
    def _params(v):
        if isinstance(v, dict):
            if set(v) == {"__tuple__"}:
                return tuple(_params(x) for x in v["__tuple__"])
            return {k: _params(x) for k, x in v.items()}
        if isinstance(v, list):
            return [_params(x) for x in v]
        return v
    meta = json.load(open("case.json"))
    data = np.load("inputs.npz")
    inputs = {k: data[k] for k in meta["names"]}
    if meta["layout"] == "channels_last":
        inputs["x"] = np.ascontiguousarray(inputs["x"].transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    np.save("out.npy", np.asarray(run(inputs, _params(meta["params"]))))
    print("adapters" in sys.modules, "edgediff" in sys.modules)
'''


def run_repro(source, case, directory):
    (directory / "repro.py").write_text(source + DRIVER)
    (directory / "case.json").write_text(json.dumps({"names": list(case.inputs), "layout": case.layout,
                                                     "params": to_jsonable(case.params)}))
    np.savez(directory / "inputs.npz", **case.inputs)
    # -I: no PYTHONPATH, no user site, no script dir magic: only NumPy and ggml are importable.
    return subprocess.run([sys.executable, "-I", "repro.py"], cwd=directory, capture_output=True,
                          text=True, timeout=120, env={"GGML_NO_BACKTRACE": "1"})


REPRO_CASES = {}
for _cid, _case, _paths in CASES:
    for _p in _paths:
        REPRO_CASES.setdefault((_case.op, _p, _case.layout), (_cid, _case))


@pytest.mark.parametrize("key", list(REPRO_CASES), ids=lambda k: f"{k[0]}-{k[1]}-{k[2]}")
def test_repro_source_runs_standalone_and_matches_the_adapter(ggml_isolated, tmp_path, key):
    op, path, _ = key
    cid, case = REPRO_CASES[key]
    source = ggml_isolated.repro_source(op, path)
    assert not re.search(r"^\s*(import|from)\s+(adapters|edgediff|properties|reference)\b", source, re.M)
    proc = run_repro(source, case, tmp_path)
    expected_kind, stderr = KNOWN_BUGS.get(path.split("+")[0], ("pass", ""))
    if expected_kind == "crash":                       # the repro aborts the same way
        assert proc.returncode == -6, proc.stderr
        assert stderr in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
    repro = np.load(tmp_path / "out.npy")
    if expected_kind == "mismatch":    # reads past its F16 kernel: garbage that differs per run
        return
    observed = ggml_isolated.call(op, path, case.arrays_for_backend(), case.params)
    observed = observed[0] if isinstance(observed, tuple) else observed
    np.testing.assert_array_equal(repro, observed)


def test_known_bug_channels_last_width_1_aborts_conv_2d_dw_direct(ggml_isolated):
    """ggml_is_contiguous_channels needs nb[1] > nb[0], false for a CWHN tensor of width 1
    (both strides are C*4): neither layout check of GGML_OP_CONV_2D_DW passes and it aborts.
    Still in ggml master (0.21.0)."""
    case = Case("depthwise_conv2d", {"x": v("normal", 40, 1, 2, 2, 1), "w": v("normal", 41, 2, 1, 2, 1)},
                {"stride": 1, "padding": 0, "dilation": 1}, "channels_last")
    outcome = run_case(case, ggml_isolated, "conv_2d_dw_direct/f32", OPS[case.op])
    assert outcome.kind == "crash"
    assert "non-contiguous memory layout not supported" in outcome.detail
    wider = Case("depthwise_conv2d", {"x": v("normal", 40, 1, 2, 2, 2), "w": case.inputs["w"]},
                 case.params, "channels_last")
    assert run_case(wider, ggml_isolated, "conv_2d_dw_direct/f32", OPS[case.op]).kind == "pass"


def test_clamp_turns_nan_into_max():
    """MAX(MIN(x, max), min) with C comparisons: MIN(NaN, max) is max, so NaN does not
    propagate as in torch.clamp (visible with --specials)."""
    x = np.array([np.nan, 3.0, -9.0], np.float32).reshape(1, 1, 1, 3)
    result, _ = GGML.clamp(x, min=0.0, max=6.0, path="clamp")
    assert result.ravel().tolist() == [6.0, 3.0, 0.0]
