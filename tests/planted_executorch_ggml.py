"""The ``executorch_ggml`` adapter with one planted bug (a conv that skips its last input
channel, as a reduction loop with a bad tail would), for the meta-test that a bug in this
backend's pipeline is caught and shrunk through its worker.

It runs the real backend (lowering, runtime, fork-server worker) on pointwise convs (1x1
kernel, stride 1, no padding, groups 1: the runtime's float32 ``ggml_mul_mat`` path, judged
in float32); every other conv is refused, since those meet the backend's own baselined bugs
(H/W parameter swap, grouped convs) or its F16 operands, under which a small bias is within
the tolerance. (The strategies draw few pointwise convs with a bias, so the planted bug is not
a dropped bias.) The meta-test then sees only the planted bug."""
from __future__ import annotations

import numpy as np

import adapters
from adapters import executorch_ggml as _eg


class SkipsLastChannel:
    name = "planted_executorch_ggml"
    version = f"planted on {_eg.version}"
    isolated = True
    fork_server = True
    timeout = _eg.timeout
    worker_env = _eg.worker_env
    paths = {"conv2d": (_eg.PATH,)}

    prewarm = staticmethod(_eg.prewarm)

    @staticmethod
    def arithmetic(op, path):
        from edgediff.tolerance import FLOAT32
        return FLOAT32                         # pointwise convs run ggml_mul_mat in float32

    def conv2d(self, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, path=_eg.PATH):
        pointwise = (w.shape[2:] == (1, 1) and groups == 1 and np.all(np.asarray(stride) == 1)
                     and np.all(np.asarray(padding) == 0) and np.all(np.asarray(dilation) == 1))
        if not pointwise or x.ndim != 4 or not x.flags.c_contiguous:
            raise adapters.Unsupported("outside this meta-test: pointwise contiguous convs only")
        if w.shape[1] > 1:
            w = w.copy()
            w[:, -1] = 0.0                                    # planted: last channel skipped
        return _eg.conv2d(x, w, b, stride, padding, dilation, groups, path=path)


skips_last_channel = SkipsLastChannel()
