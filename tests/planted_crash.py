"""Adapters that abort, segfault or hang on some configurations, for the isolation tests.

They compute with the golden op itself (NumPy only), so restarting a worker after each
crash costs ~0.1 s instead of a torch import.
"""
from __future__ import annotations

import os
import signal
import sys
import time
import types

import numpy as np

import reference


def _golden_conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    return reference.conv2d(x, w, b, stride, padding, dilation, groups).astype(np.float32)


def _crash_on_big_kernel(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    if w.shape[2] >= 5:
        sys.stderr.write("planted.c:42: GGML_ASSERT(kernel fits) failed\n")
        sys.stderr.flush()
        os.abort()
    return _golden_conv(x, w, b, stride, padding, dilation, groups)


def _segfault_on_stride3(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    if np.max(stride) >= 3:
        os.kill(os.getpid(), signal.SIGSEGV)
    return _golden_conv(x, w, b, stride, padding, dilation, groups)


def _hang_on_dilation3(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    if np.max(dilation) >= 3:
        time.sleep(3600)
    return _golden_conv(x, w, b, stride, padding, dilation, groups)


def _crashing(name, **conv):
    return types.SimpleNamespace(name=name, version="planted", isolated=True, **conv)



aborts = _crashing("planted_aborts", conv2d=_crash_on_big_kernel)
segfaults = _crashing("planted_segfaults", conv2d=_segfault_on_stride3)
hangs = _crashing("planted_hangs", conv2d=_hang_on_dilation3, timeout=2.0)
