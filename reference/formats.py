"""Golden number formats: the float32 values a tensor holds after conversion to a narrower format.

    round_to(x, fmt) -> float32 array of x's shape, fmt in FORMATS

``float32``   the identity (a float32 copy), so callers can treat "no rounding" as a format.
``bfloat16``  1 sign, 8 exponent, 7 stored mantissa bits: float32 rounded to nearest, ties to
              even, on its top 16 bits. Overflow rounds to +-Inf (FLT_MAX -> Inf), subnormals
              are kept (rounded like any value), -0 stays -0, NaN stays NaN (returned as a
              quiet NaN; the payload is not part of the spec).
``float16``   IEEE binary16, round to nearest even (NumPy's conversion). Not a TT-NN tensor
              type; used by the emulation and by other backends' F16 kernels.
``bfloat8_b`` Tenstorrent block floating point, as TT-NN's host conversion packs a float32
``bfloat4_b`` array into TILE layout (``ttnn.Tensor(a, data_type=ttnn.bfloat8_b,
              layout=ttnn.TILE_LAYOUT)``, measured bit for bit on ttnn 0.81.1):

  1. Blocks. A 32x32 tile is 4 faces of 16x16; each row of a face, i.e. 16 consecutive values
     of one row (columns 16k .. 16k+15), is one block. The last two dims are the tile dims
     (zero-padded up to multiples of 32, cropped back afterwards); rows never interact, so
     only the width padding can matter, and zero padding never raises a block's exponent.
  2. Shared exponent. E = the largest float32 exponent field (biased, 0..255) in the block.
     Inf and NaN have exponent field 255, so they take part like any other value.
  3. Significands. Each element's 24-bit significand M (hidden bit included) is shifted right
     by d = E - e (its own exponent field e); the bits shifted out are DROPPED. Zeros and
     subnormals (e = 0) count as M = 0.
  4. Rounding. The aligned significand M >> d is rounded to a P-bit integer q (P = 7 for
     bfloat8_b, 3 for bfloat4_b; the hidden bit is one of the P bits) by dropping its low
     24 - P bits, round to nearest, ties to even, judged on the aligned bits only: because
     step 3 truncated first, a value just above a tie whose excess was shifted out in step 3
     is treated as a tie. (For d = 0 this is exact round-to-nearest-even from float32.)
  5. Saturation. q is capped at 2**P - 1 (an element that rounds up past the grid keeps the
     block exponent and saturates: 1.999 -> 127/64 in bfloat8_b, 7/4 in bfloat4_b).
  6. Sign. The sign is kept only when q != 0: -0.0 and negatives that round to 0 become +0.
  7. Value. q * 2**(E - 127 - (P - 1)). When E = 255 (the block holds an Inf or a NaN), an
     element with q >= 2**(P-1) decodes with exponent 255: q == 2**(P-1) is +-Inf, larger q
     is NaN; elements with smaller q decode as finite values.

Consequences of 1-7 worth knowing (all measured): a NaN or Inf zeroes the other elements of its
block unless |x| > 2**(128-P) (half the grid step of a block with exponent 255; 2.7e36 for
bfloat8_b): such huge finite values survive, and FLT_MAX rounds up to Inf in that block. A NaN
whose payload sits only in the low mantissa bits (e.g. 0x7f800001) rounds to the Inf pattern and
comes back as +-Inf. Blocks without specials: the largest element keeps ~P significant bits, an
element 2**k times smaller keeps P - k bits, and elements more than 2**P times smaller are 0.

Differences from the description this module started from: rounding is not "straight from
float32" when d > 0 (step 3 truncates before rounding); NaN does not always "keep its value"
(low-payload NaNs become Inf); "zeroes the finite values of its block" holds only for
|x| <= 2**(128-P).
"""
from __future__ import annotations

import numpy as np

FORMATS = ("float32", "bfloat16", "float16", "bfloat8_b", "bfloat4_b")
TILE = 32            # tile height and width
BLOCK = 16           # values sharing one exponent: one row of a 16x16 face
BLOCK_BITS = {"bfloat8_b": 7, "bfloat4_b": 3}   # P: magnitude bits per value, hidden bit included
UNIT_ROUNDOFF = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
# block formats, blocks without Inf/NaN: |round_to(x) - x| <= 2**-P * max|x| over x's block
# (rounding and saturation; the truncation of step 3 adds at most 2**-23 * max|x| more)
BLOCK_UNIT_ROUNDOFF = {fmt: 2.0 ** -p for fmt, p in BLOCK_BITS.items()}


def round_to(x, fmt: str) -> np.ndarray:
    """The float32 values ``x`` (any shape; float32 or convertible) holds in format ``fmt``."""
    x = np.asarray(x, dtype=np.float32)
    if fmt == "float32":
        return x.copy()
    if fmt == "bfloat16":
        return _bfloat16(x)
    if fmt == "float16":
        with np.errstate(over="ignore"):                 # overflow to Inf is the format's answer
            return x.astype(np.float16).astype(np.float32)
    if fmt in BLOCK_BITS:
        return _block_float(x, BLOCK_BITS[fmt])
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def _bfloat16(x: np.ndarray) -> np.ndarray:
    u = x.view(np.uint32).astype(np.uint64)
    lsb = (u >> 16) & 1
    rounded = ((u + 0x7FFF + lsb) >> 16 << 16).astype(np.uint32)     # RNE on the top 16 bits
    quiet_nan = (u.astype(np.uint32) | np.uint32(0x00400000)) & np.uint32(0xFFFF0000)
    return np.where(np.isnan(x), quiet_nan, rounded).view(np.float32)


def _block_float(x: np.ndarray, p: int) -> np.ndarray:
    shape = x.shape
    rows = x.reshape((1, 1) if x.ndim == 0 else (1,) + shape if x.ndim == 1 else shape)
    width = rows.shape[-1]
    padded = -(-width // TILE) * TILE
    rows = np.pad(rows, [(0, 0)] * (rows.ndim - 1) + [(0, padded - width)])

    u = rows.view(np.uint32)
    sign = u >> 31
    exp = ((u >> 23) & 0xFF).astype(np.int64)
    significand = np.where(exp > 0, (u & 0x7FFFFF) | 0x800000, 0).astype(np.int64)  # 24 bits

    blocks = rows.shape[:-1] + (padded // BLOCK, BLOCK)
    exp, significand, sign = (a.reshape(blocks) for a in (exp, significand, sign))
    shared = exp.max(axis=-1, keepdims=True)                          # step 2

    aligned = significand >> np.minimum(shared - exp, 31)             # step 3: shifted-out bits dropped
    drop = 24 - p                                                     # step 4
    q = aligned >> drop
    rest = aligned & ((1 << drop) - 1)
    tie = 1 << (drop - 1)
    q = q + ((rest > tie) | ((rest == tie) & (q & 1 == 1)))
    q = np.minimum(q, (1 << p) - 1)                                   # step 5

    magnitude = np.ldexp(q.astype(np.float64), (shared - 127 - (p - 1)).astype(np.int32))  # step 7
    special = (shared == 255) & (q >= 1 << (p - 1))
    magnitude = np.where(special, np.where(q == 1 << (p - 1), np.inf, np.nan), magnitude)
    value = np.where((sign == 1) & (q != 0), -magnitude, magnitude)   # step 6

    value = value.reshape(rows.shape)[..., :width].astype(np.float32)
    return value.reshape(shape)
