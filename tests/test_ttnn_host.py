"""reference.formats.round_to against TT-NN's real host conversion, bit for bit.

The conversions run in the ttnn adapter's worker (Python 3.12, ttnn 0.81.1, numpy<2, with a mock
cluster descriptor so ttnn's host code runs without a card), reached through
edgediff.isolation.isolate: this 3.11 test process only sends arrays and compares. Skipped, with
the reason, when .venvs/ttnn-3.12 does not exist (``bash scripts/setup_ttnn.sh``).

Bit for bit means equal float32 bit patterns, except that any NaN matches any NaN (the payload of
a NaN is not part of the spec; ``to_dtype(float32)`` may canonicalise it).

Device ops need a Tenstorrent card; without one they raise Unsupported("no Tenstorrent device: ...")
and their tests skip with that reason.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import adapters
import adapters.ttnn as tt
import reference
from edgediff.isolation import isolate
from reference.formats import round_to

REASON = tt.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"ttnn: {REASON}")

OPS = ["to_layout_roundtrip", "conv2d", "depthwise_conv2d", "conv2d_batch_norm", "clamp", "mean",
       "view", "permute"]
CASES = [("bfloat8_b", "TILE"), ("bfloat4_b", "TILE"), ("bfloat16", "TILE"),
         ("bfloat16", "ROW_MAJOR"), ("float32", "TILE"), ("float32", "ROW_MAJOR")]
EXAMPLES = 40                       # per (dtype, layout); one worker round trip is ~1-3 ms
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def worker():
    adapter = isolate(tt, "ttnn", OPS)
    yield adapter
    adapter.close()


def roundtrip(worker, x, dtype, layout):
    out = worker.call("to_layout_roundtrip", "host", {"x": x}, {"dtype": dtype, "layout": layout})
    return out[0] if isinstance(out, tuple) else out


def expected(x, dtype):
    return x.astype(np.float32) if dtype == "float32" else round_to(x, dtype)


def assert_same_bits(got, want, x):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    if not same.all():
        i = tuple(np.argwhere(~same)[0])
        raise AssertionError(
            f"{(~same).sum()} of {same.size} values differ; first at {i}: input "
            f"{x[i]!r} (0x{x.view(np.uint32)[i]:08x}), ttnn {got[i]!r} (0x{got.view(np.uint32)[i]:08x}), "
            f"round_to {want[i]!r} (0x{want.view(np.uint32)[i]:08x})")


# ---- inputs ----------------------------------------------------------------------------------

SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.5, 3.4028235e38, -3.4028235e38,
                     1.1754944e-38, -1.1754942e-38, 1e-45, 65504.0], np.float32)
SPECIAL_BITS = np.array([0x7F800001, 0x7F810000, 0x7F810001, 0xFFC00000, 0x7FFFFFFF, 0x00400000,
                         0x3F820001], np.uint32).view(np.float32)
POOL = np.concatenate([SPECIALS, SPECIAL_BITS])


@st.composite
def shapes(draw):
    """Ranks 2-4; tile dims 1..70 (so multiples of 32 and of 16, and neither, all occur)."""
    rank = draw(st.integers(2, 4))
    lead = draw(st.lists(st.integers(1, 3), min_size=rank - 2, max_size=rank - 2))
    tile_dims = draw(st.lists(st.sampled_from([1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 64, 70])
                              | st.integers(1, 70), min_size=2, max_size=2))
    return tuple(lead + tile_dims)


@st.composite
def arrays(draw):
    """Numpy-generated data (fast for big shapes) from a drawn seed and style, plus drawn special
    values at drawn places (those shrink well)."""
    shape = draw(shapes())
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    style = draw(st.sampled_from(["normal", "wide exponents", "near ties", "raw bits"]))
    if style == "normal":
        x = rng.standard_normal(shape)
    elif style == "wide exponents":      # values 2**-20 .. 2**20 apart inside a block
        x = rng.standard_normal(shape) * np.exp2(rng.integers(-20, 21, shape))
    elif style == "near ties":           # k/64 + 1/128 at a few scales, nudged by -1/0/+1 ulp
        x = (rng.integers(-128, 128, shape) + 0.5) / 64 * np.exp2(rng.integers(-3, 4, shape))
    else:                                 # every float32 bit pattern: NaNs, Infs, subnormals
        x = rng.integers(0, 2 ** 32, shape, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.asarray(x, np.float32)
    if style == "near ties":
        x = (x.view(np.uint32) + rng.integers(-1, 2, shape).astype(np.uint32)).view(np.float32)
    flat = x.reshape(-1)
    for index, value in draw(st.lists(st.tuples(st.integers(0, flat.size - 1), st.sampled_from(POOL)),
                                      max_size=6)):
        flat[index] = value
    return x


# ---- host conversions: random inputs ---------------------------------------------------------

@pytest.mark.parametrize("dtype,layout", CASES, ids=[f"{d}-{l}" for d, l in CASES])
def test_host_conversion_matches_round_to_bit_for_bit(worker, dtype, layout):
    @SETTINGS
    @given(x=arrays())
    def check(x):
        assert_same_bits(roundtrip(worker, x, dtype, layout), expected(x, dtype), x)
    check()


@pytest.mark.parametrize("dtype", ["bfloat8_b", "bfloat4_b", "bfloat16"])
def test_any_float32_values_small_arrays(worker, dtype):
    """Element-wise drawn float32 (every class of value, shrinks to the single culprit)."""
    @SETTINGS
    @given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 40)),
                        elements=st.floats(width=32, allow_nan=True, allow_infinity=True,
                                           allow_subnormal=True)))
    def check(x):
        assert_same_bits(roundtrip(worker, x, dtype, "TILE"), expected(x, dtype), x)
    check()


# ---- host conversions: the hand-worked rows of tests/test_formats.py --------------------------

def _bits(u):
    return np.array([u], np.uint32).view(np.float32)[0]


HAND_ROWS = [
    [1.0, 0.5, 0.01, 3.0, -1.5, 100.0],
    [1000.0] + [1.001] * 31,
    [1.0, 2.0 ** -6, 2.0 ** -7, 0.75 * 2.0 ** -6, 2.0 ** -8, 1 + 2.0 ** -7, 1 + 2.0 ** -7 + 2.0 ** -20],
    [2.0, _bits(0x3F820001)],
    [1.999], [-1.9999999],
    [1.0, 0.3, -0.6, 1.4, 0.125, 0.124], [7.0, 1.0, 0.9, 0.4375],
    [-0.0, 4.0, -0.01], [_bits(0x00400000), -_bits(0x00400000), 2.0 ** -126, -(2.0 ** -126)],
    [np.inf, 1.0, -2.0, 1e38, 3e38, 1e36], [np.nan, 1.0, -2.0], [-np.inf, 1.0],
    [np.inf, 3.4028235e38, -3.4028235e38],
    [_bits(0x7F800001)], [_bits(0x7F810001)], [_bits(0x7F810000)], [_bits(0x7F900000)],
    [_bits(0x7FC00000)],
]


@pytest.mark.parametrize("dtype", ["bfloat8_b", "bfloat4_b", "bfloat16"])
def test_hand_worked_rows_match_ttnn(worker, dtype):
    x = np.zeros((len(HAND_ROWS), 32), np.float32)
    for i, values in enumerate(HAND_ROWS):
        x[i, :len(values)] = values
    assert_same_bits(roundtrip(worker, x, dtype, "TILE"), round_to(x, dtype), x)


def test_padding_shape_is_reported(worker):
    x = np.ones((2, 40, 33), np.float32)
    out = worker.call("to_layout_roundtrip", "host", {"x": x}, {"dtype": "bfloat8_b", "layout": "TILE"})
    assert isinstance(out, tuple) and out[1]["padded_shape"] == [2, 64, 64]


def test_block_formats_have_no_row_major_layout(worker):
    with pytest.raises(adapters.Unsupported, match="only in TILE layout"):
        roundtrip(worker, np.ones((2, 2), np.float32), "bfloat8_b", "ROW_MAJOR")


def test_blackhole_p150_descriptor_runs_the_same_conversion():
    env = dict(tt.worker_env, **{tt.MOCK_ENV: str(tt.CLUSTERS["blackhole_p150"])})
    adapter = isolate(tt, "ttnn", ["to_layout_roundtrip"], env=env)
    try:
        x = np.random.default_rng(5).standard_normal((3, 50, 40)).astype(np.float32)
        assert_same_bits(roundtrip(adapter, x, "bfloat8_b", "TILE"), round_to(x, "bfloat8_b"), x)
    finally:
        adapter.close()


# ---- device ops: need a card -------------------------------------------------------------------

def _device_or_skip(call):
    try:
        return call()
    except adapters.Unsupported as exc:
        if str(exc).startswith("no Tenstorrent device"):
            pytest.skip(str(exc))
        raise


def test_worker_declares_device_paths(worker):
    assert worker.paths["conv2d"] == tt._MULTIPLYING and worker.paths["clamp"] == tt._MOVING
    assert worker.arithmetic("conv2d", "device/bfloat8_b/LoFi").inputs == "bfloat8_b"


@pytest.mark.parametrize("path", ["device/bfloat16/HiFi4", "device/bfloat8_b/LoFi"])
def test_conv2d_on_device(worker, path):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 16, 10, 10)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32) * 0.1
    b = rng.standard_normal(32).astype(np.float32)
    params = {"stride": 1, "padding": 1, "dilation": 1, "groups": 1}
    y = _device_or_skip(lambda: worker.call("conv2d", path, {"x": x, "w": w, "b": b}, params))
    want = reference.conv2d(x, w, b, **params)
    assert y.shape == want.shape
    assert np.corrcoef(y.ravel(), want.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("op,arrays_,params,path", [
    ("clamp", {"x": np.linspace(-3, 3, 64 * 40, dtype=np.float32).reshape(64, 40)},
     {"min": -1.0, "max": 1.0}, "device/bfloat16"),
    ("permute", {"x": np.arange(2 * 3 * 32 * 32, dtype=np.float32).reshape(2, 3, 32, 32) / 64},
     {"dims": (0, 2, 3, 1)}, "device/bfloat16"),
    ("view", {"x": np.arange(4 * 32 * 32, dtype=np.float32).reshape(4, 32, 32) / 64},
     {"shape": (2, 64, 32)}, "device/bfloat16"),
    ("mean", {"x": np.ones((2, 3, 32, 32), np.float32)}, {"dim": (2, 3), "keepdim": True},
     "device/bfloat16/HiFi4"),
])
def test_elementwise_layout_and_reduction_ops_on_device(worker, op, arrays_, params, path):
    y = _device_or_skip(lambda: worker.call(op, path, arrays_, params))
    want = getattr(reference, op)(**arrays_, **params)
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=2 ** -7, atol=0)
