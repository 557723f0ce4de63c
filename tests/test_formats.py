"""reference.formats.round_to on hand-worked values (no ttnn needed).

Every bfloat8_b / bfloat4_b expectation here was also measured on ttnn 0.81.1's host conversion
(``ttnn.Tensor(a, data_type=ttnn.bfloat8_b, layout=ttnn.TILE_LAYOUT).to_numpy()``);
tests/test_ttnn_host.py checks round_to against the real conversion on random inputs.
"""
from __future__ import annotations

import numpy as np
import pytest

from reference.formats import FORMATS, round_to

F32_MAX = np.float32(3.4028235e38)


def bits(u: int) -> np.float32:
    return np.array([u], np.uint32).view(np.float32)[0]


def row(values, fmt, width=32):
    """``values`` at the start of a zero row of ``width``; the rounded values back."""
    a = np.zeros((1, width), np.float32)
    a[0, :len(values)] = values
    return round_to(a, fmt)[0, :len(values)]


def same_bits(a, b) -> bool:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))))


# ---- bfloat16 ---------------------------------------------------------------------------------

def test_bfloat16_rounds_to_nearest_with_ties_to_even():
    step = 2.0 ** -7                                   # bfloat16 spacing in [1, 2)
    x = np.float32([1 + step / 2,                      # tie, 1.0 is even        -> 1
                    1 + 3 * step / 2,                  # tie, 1 + 2 step is even -> 1 + 2 step
                    1 + step / 2 + 2.0 ** -20,         # just above the tie      -> up
                    1 + step / 2 - 2.0 ** -20])        # just below              -> down
    assert round_to(x, "bfloat16").tolist() == [1.0, 1 + 2 * step, 1 + step, 1.0]


def test_bfloat16_specials_overflow_zero_and_subnormals():
    x = np.float32([F32_MAX, -F32_MAX, np.inf, -0.0, bits(0x00400000), bits(0x00000001)])
    y = round_to(x, "bfloat16")
    assert y[0] == np.inf and y[1] == -np.inf and y[2] == np.inf
    assert y.view(np.uint32)[3] == 0x80000000           # -0 stays -0
    assert y.view(np.uint32)[4] == 0x00400000           # subnormals are kept (exactly representable)
    assert y[5] == 0.0                                   # 2**-149 rounds to zero
    nans = round_to(np.array([np.nan, bits(0x7F800001), bits(0xFFFFFFFF)], np.float32), "bfloat16")
    assert np.isnan(nans).all()                          # NaN never rounds into Inf


def test_float16_is_ieee_half():
    x = np.float32([1 + 2.0 ** -11, 65519.0, 65520.0, 2.0 ** -24, 2.0 ** -26])
    assert round_to(x, "float16").tolist() == [1.0, 65504.0, np.inf, 2.0 ** -24, 0.0]


# ---- block floating point -------------------------------------------------------------------

def test_bfloat8_b_shares_the_largest_exponent_of_the_block():
    # max 100 -> exponent 6, so the block's grid step is 2**(6 - 6) = 1:
    # 0.5 is a tie (-> 0, even), -1.5 is a tie (-> -2, even), 0.01 is lost
    assert row([1.0, 0.5, 0.01, 3.0, -1.5, 100.0], "bfloat8_b").tolist() == [1, 0, 0, 3, -2, 100]


def test_bfloat8_b_blocks_are_16_values_of_one_row():
    a = np.zeros((2, 32), np.float32)
    a[0, 0], a[0, 1:] = 1000.0, 1.001                  # columns 0-15: step 8, 1.001 -> 0
    a[1, :] = 3.0                                       # another row, another block
    y = round_to(a, "bfloat8_b")
    assert y[0, 0] == 1000.0 and (y[0, 1:16] == 0).all()
    assert (y[0, 16:] == 1.0).all()                     # columns 16-31 are their own block
    assert (y[1] == 3.0).all()


def test_bfloat8_b_grid_ties_to_even_and_drops_small_values():
    step = 2.0 ** -6                                    # block exponent 0, 7 bits with the hidden one
    y = row([1.0, step, step / 2, 0.75 * step, step / 4], "bfloat8_b")
    assert y.tolist() == [1.0, step, 0.0, step, 0.0]
    assert row([1 + step / 2], "bfloat8_b")[0] == 1.0              # tie -> even
    assert row([1 + 3 * step / 2], "bfloat8_b")[0] == 1 + 2 * step
    assert row([1 + 5 * step / 2], "bfloat8_b")[0] == 1 + 2 * step
    assert row([1 + step / 2 + 2.0 ** -20], "bfloat8_b")[0] == 1 + step  # from float32 bits


def test_bfloat8_b_truncates_the_aligned_significand_before_rounding():
    # 1.0156251 = 0x3f820001 next to 2.0: aligned one bit right, the low 1 bit is dropped, what is
    # left is an exact tie on the 2**-5 grid, and the tie goes to even: 1.0 (true RNE: 1.03125)
    x = bits(0x3F820001)
    assert x * 32 > 32.5
    assert row([2.0, x], "bfloat8_b").tolist() == [2.0, 1.0]


def test_block_formats_saturate_instead_of_bumping_the_exponent():
    assert row([1.999], "bfloat8_b")[0] == 127 / 64
    assert row([1.999], "bfloat4_b")[0] == 7 / 4
    assert row([-1.9999999], "bfloat8_b")[0] == -127 / 64


def test_bfloat4_b_values():
    # block exponent 0: grid step 2**-2; 0.125 is a tie -> 0
    assert row([1.0, 0.3, -0.6, 1.4, 0.125, 0.124], "bfloat4_b").tolist() == [1, 0.25, -0.5, 1.5, 0, 0]
    assert row([7.0, 1.0, 0.9, 0.4375], "bfloat4_b").tolist() == [7, 1, 1, 0]   # step 1


def test_negative_zero_and_subnormals_become_positive_zero():
    y = row([-0.0, 4.0, -0.01], "bfloat8_b")
    assert y.view(np.uint32).tolist() == [0, 0x40800000, 0]
    y = row([bits(0x00400000), -bits(0x00400000), 2.0 ** -126, -(2.0 ** -126)], "bfloat8_b")
    assert y.view(np.uint32).tolist() == [0, 0, 0x00800000, 0x80800000]


def test_inf_and_nan_zero_their_block_except_huge_values():
    y = row([np.inf, 1.0, -2.0, 1e38, 3e38, 1e36], "bfloat8_b")
    assert y[0] == np.inf and y[1] == 0 and y[2] == 0 and y[5] == 0
    assert y[3] == np.float32(19 * 2.0 ** 122) and y[4] == np.float32(56 * 2.0 ** 122)   # survive
    y = row([np.nan, 1.0, -2.0], "bfloat8_b")
    assert np.isnan(y[0]) and (y[1:] == 0).all()
    assert row([-np.inf, 1.0], "bfloat8_b").tolist() == [-np.inf, 0.0]
    # FLT_MAX rounds up onto the Inf pattern when the block exponent is 255
    assert row([np.inf, F32_MAX, -F32_MAX], "bfloat8_b").tolist() == [np.inf, np.inf, -np.inf]


def test_nan_with_only_low_payload_bits_becomes_inf():
    y = row([bits(0x7F800001)], "bfloat8_b")               # payload below the 7-bit grid
    assert y[0] == np.inf
    assert np.isnan(row([bits(0x7F810001)], "bfloat8_b")[0])  # rounds up to a NaN pattern
    assert row([bits(0x7F810000)], "bfloat8_b")[0] == np.inf   # tie -> even -> Inf
    assert row([bits(0x7F900000)], "bfloat4_b")[0] == np.inf
    assert np.isnan(row([bits(0x7FC00000)], "bfloat4_b")[0])


@pytest.mark.parametrize("fmt", ["bfloat8_b", "bfloat4_b"])
def test_shapes_pad_and_crop_and_rows_are_independent(fmt):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 3, 40, 33)) * np.exp2(rng.integers(-6, 6, (2, 3, 40, 33)))).astype(np.float32)
    y = round_to(x, fmt)
    assert y.shape == x.shape and y.dtype == np.float32
    assert same_bits(y[1, 2], round_to(x[1, 2], fmt))          # leading dims are batches
    assert same_bits(y[1, 2, 7], round_to(x[1, 2, 7], fmt))     # a 1-D array is one row
    padded = np.zeros((2, 3, 40, 64), np.float32)
    padded[..., :33] = x
    assert same_bits(round_to(padded, fmt)[..., :33], y)        # zero padding changes nothing
    assert round_to(np.float32(3.3), fmt).shape == ()


def test_round_to_is_idempotent_and_rejects_unknown_formats():
    x = np.random.default_rng(4).standard_normal((5, 48)).astype(np.float32)
    for fmt in FORMATS:
        once = round_to(x, fmt)
        assert same_bits(round_to(once, fmt), once), fmt
    with pytest.raises(ValueError, match="unknown format"):
        round_to(x, "bfloat2_b")


# ---- the emulation's operand formats (reference/tt_emulation.py) ------------------------------

def test_emulated_fidelity_phases_split_operands_as_documented():
    from reference.tt_emulation import emulated_fidelity_part
    a = np.float32([1 + 2.0 ** -4 + 2.0 ** -7])           # bfloat16: 7 mantissa bits
    assert emulated_fidelity_part(a, "A", 0)[0] == 1 + 2.0 ** -4         # SrcA: hidden + 4 bits
    assert emulated_fidelity_part(a, "A", 1)[0] == 2.0 ** -7             # the remaining 3
    assert emulated_fidelity_part(a, "B", 0)[0] == 1 + 2.0 ** -4         # SrcB: hidden + 6 bits
    assert emulated_fidelity_part(a, "B", 2)[0] == 2.0 ** -7             # the remaining bit


@pytest.mark.parametrize("fidelity,weight_exact,act_exact", [
    ("LoFi", False, False), ("HiFi2", True, False), ("HiFi3", True, True), ("HiFi4", True, True)])
def test_emulated_conv2d_fidelity_drops_low_operand_bits(fidelity, weight_exact, act_exact):
    from reference.tt_emulation import emulated_conv2d
    one, fine = np.ones((1, 1, 1, 1), np.float32), np.full((1, 1, 1, 1), 1 + 2.0 ** -7, np.float32)
    kw = dict(fidelity=fidelity, fp32_acc=True)
    assert (emulated_conv2d(one, fine, **kw)[0, 0, 0, 0] == 1 + 2.0 ** -7) == weight_exact  # SrcA
    assert (emulated_conv2d(fine, one, **kw)[0, 0, 0, 0] == 1 + 2.0 ** -7) == act_exact     # SrcB


def test_emulated_conv2d_is_exact_for_small_integers_at_hifi4_fp32_acc():
    import reference
    from reference.tt_emulation import emulated_conv2d
    rng = np.random.default_rng(7)
    x = rng.integers(-4, 5, (1, 24, 6, 6)).astype(np.float32)
    w = rng.integers(-4, 5, (8, 6, 3, 3)).astype(np.float32)
    y = emulated_conv2d(x, w, None, 1, 1, 1, 4, fidelity="HiFi4", fp32_acc=True, output_dtype="float32")
    np.testing.assert_array_equal(y, reference.conv2d(x, w, None, 1, 1, 1, 4))
