"""The ``executorch_ggml`` adapter with one planted bug (the conv bias is dropped), for the
meta-test that a bug in this backend's pipeline is caught and shrunk through its worker.

It runs the real backend (lowering, runtime, fork-server worker). Cases that meet the
backend's own baselined CONV_2D bugs (H/W parameter swap, grouped convs, F16 operand overflow)
are refused, so the meta-test sees only the planted bug."""
from __future__ import annotations

import numpy as np

import adapters
from adapters import executorch_ggml as _eg


def _hw_differ(v) -> bool:
    return isinstance(v, tuple) and v[0] != v[1]


class DroppedBias:
    name = "planted_executorch_ggml"
    version = f"planted on {_eg.version}"
    isolated = True
    fork_server = True
    timeout = _eg.timeout
    worker_env = _eg.worker_env
    paths = {"conv2d": (_eg.PATH,)}

    prewarm = staticmethod(_eg.prewarm)
    arithmetic = staticmethod(_eg.arithmetic)

    def conv2d(self, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, path=_eg.PATH):
        if (groups != 1 or any(_hw_differ(v) for v in (stride, dilation, padding))
                or max(np.max(np.abs(x), initial=0), np.max(np.abs(w), initial=0)) > 65504):
            raise adapters.Unsupported("outside this meta-test: the backend's own baselined "
                                       "CONV_2D bugs")
        return _eg.conv2d(x, w, None, stride, padding, dilation, groups, path=path)  # planted


dropped_bias = DroppedBias()
