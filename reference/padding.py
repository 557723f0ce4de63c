"""TFLite's SAME padding rule, as explicit (before, after) pads for the golden conv.

TFLite (and TensorFlow) have no explicit conv padding, only SAME and VALID. SAME pads
so that the output has ``ceil(in / stride)`` positions, with

    total  = max((ceil(in / s) - 1) * s + (k - 1) * d + 1 - in, 0)
    before = total // 2,   after = total - before

so an odd total puts the extra pixel after (bottom / right). ``same_padding_2d`` gives
``((top, bottom), (left, right))``, which ``reference.conv2d`` accepts as ``padding``.

Pure Python (``math`` only): ``adapters.litert`` copies these functions' source into
its standalone repro scripts.
"""
from __future__ import annotations

import math


def tflite_same_padding(in_size, kernel, stride=1, dilation=1):
    """(before, after) padding TFLite's SAME gives one spatial axis."""
    in_size, kernel, stride, dilation = int(in_size), int(kernel), int(stride), int(dilation)
    if in_size < 1 or kernel < 1 or stride < 1 or dilation < 1:
        raise ValueError(f"in_size, kernel, stride and dilation must be >= 1, got "
                         f"{(in_size, kernel, stride, dilation)}")
    out = math.ceil(in_size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - in_size, 0)
    before = total // 2
    return before, total - before


def same_padding_2d(in_hw, kernel_hw, stride=1, dilation=1):
    """((top, bottom), (left, right)) for SAME on an (H, W) input; stride and dilation
    are an int or an (h, w) pair."""
    def pair(v):
        return (v, v) if isinstance(v, int) or not hasattr(v, "__len__") else tuple(v)
    (h, w), (kh, kw), (sh, sw), (dh, dw) = pair(in_hw), pair(kernel_hw), pair(stride), pair(dilation)
    return tflite_same_padding(h, kh, sh, dh), tflite_same_padding(w, kw, sw, dw)
