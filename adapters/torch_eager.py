"""PyTorch eager on the CPU, in float32: the first built-in backend, named ``torch``.

Each op is the PyTorch call a user would write. Channels_last inputs (NHWC strides)
become channels_last tensors, so PyTorch's own channels_last kernels run.
"""
from __future__ import annotations

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # reported by unavailable_reason
    torch = None

name = "torch"
# PyTorch's own kernels segfaulted twice in property runs here (a depthwise conv2d, not yet
# minimized), so the baseline backend runs in a worker too: a crash is a finding.
isolated = True
version = torch.__version__ if torch is not None else "not installed"


def unavailable_reason():
    return None if torch is not None else "torch is not installed (pip install torch==2.13.0)"


def _t(a):
    if a is None:
        return None
    t = torch.from_numpy(np.asarray(a, dtype=np.float32))
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t  # keeps NHWC strides: a channels_last tensor
    return t.contiguous()


def _np(t):
    return t.detach().contiguous().numpy()


def _conv(x, w, b, stride, padding, dilation, groups):
    if np.ndim(padding) == 2:                      # asymmetric: explicit pad, then a valid conv
        (top, bottom), (left, right) = padding
        x = F.pad(x, (left, right, top, bottom))
        padding = 0
    return F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    return _np(_conv(_t(x), _t(w), _t(b), stride, padding, dilation, groups))


def depthwise_conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    return _np(_conv(_t(x), _t(w), _t(b), stride, padding, dilation, x.shape[1]))


def clamp(x, min=None, max=None):  # noqa: A002
    return _np(torch.clamp(_t(x), min=min, max=max))


def mean(x, dim=None, keepdim=False):
    t = _t(x)
    return _np(torch.mean(t) if dim is None and not keepdim else torch.mean(t, dim=dim, keepdim=keepdim))


def view(x, shape):
    return _np(_t(x).contiguous().view(shape))


def permute(x, dims):
    return _np(_t(x).permute(*dims))


def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    return _np(F.batch_norm(_t(x), _t(running_mean), _t(running_var), _t(weight), _t(bias),
                            training=False, eps=eps))


def conv2d_batch_norm(x, w, running_mean, running_var, b=None, weight=None, bias=None,
                      stride=1, padding=0, dilation=1, groups=1, eps=1e-5):
    y = _conv(_t(x), _t(w), _t(b), stride, padding, dilation, groups)
    return _np(F.batch_norm(y, _t(running_mean), _t(running_var), _t(weight), _t(bias),
                            training=False, eps=eps))


REPRO = '''
import torch
import torch.nn.functional as F

def run(inputs, params):
    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    op = OP
    if op in ("conv2d", "depthwise_conv2d", "conv2d_batch_norm"):
        x, pad = t["x"], params["padding"]
        if isinstance(pad, tuple) and isinstance(pad[0], tuple):
            (top, bottom), (left, right) = pad
            x, pad = F.pad(x, (left, right, top, bottom)), 0
        groups = params.get("groups", x.shape[1])
        y = F.conv2d(x, t["w"], t.get("b"), params["stride"], pad, params["dilation"], groups)
        if op == "conv2d_batch_norm":
            y = F.batch_norm(y, t["running_mean"], t["running_var"], t.get("weight"),
                             t.get("bias"), training=False, eps=params["eps"])
    elif op == "clamp":
        y = torch.clamp(t["x"], params["min"], params["max"])
    elif op == "mean":
        y = torch.mean(t["x"], dim=params["dim"], keepdim=params["keepdim"])
    elif op == "view":
        y = t["x"].contiguous().view(params["shape"])
    elif op == "permute":
        y = t["x"].permute(*params["dims"])
    elif op == "batch_norm":
        y = F.batch_norm(t["x"], t["running_mean"], t["running_var"], t.get("weight"),
                         t.get("bias"), training=False, eps=params["eps"])
    return y.contiguous().numpy()
'''


def repro_source(op, path):
    return REPRO.replace("OP", repr(op), 1)


# ---- graphs (edgediff.graph): one eager program, every node's tensor returned -----------------

def _graph_node(op, t, params):
    """One graph node in eager PyTorch; ``t`` maps the node's argument names to tensors."""
    p = params
    if op in ("conv2d", "depthwise_conv2d"):
        groups = t["x"].shape[1] if op == "depthwise_conv2d" else p.get("groups", 1)
        return _conv(t["x"], t["w"], t.get("b"), p.get("stride", 1), p.get("padding", 0),
                     p.get("dilation", 1), groups)
    if op == "batch_norm":
        return F.batch_norm(t["x"], t["running_mean"], t["running_var"], t.get("weight"), t.get("bias"),
                            training=False, eps=p.get("eps", 1e-5))
    if op == "clamp":
        return torch.clamp(t["x"], min=p.get("min"), max=p.get("max"))
    if op == "mean":
        dim, keepdim = p.get("dim"), bool(p.get("keepdim", False))
        return torch.mean(t["x"]) if dim is None and not keepdim else torch.mean(t["x"], dim=dim, keepdim=keepdim)
    if op == "view":
        return t["x"].contiguous().view(tuple(p["shape"]))
    if op == "permute":
        return t["x"].permute(*p["dims"])
    if op == "add":
        return t["x"] + t["y"]
    import adapters
    raise adapters.Unsupported(f"torch graph runner has no op {op!r}")


def run_graph(graph, arrays, path="eager/f32"):
    """Run an ``edgediff.graph`` Graph (its ``to_json()`` form) as one eager sequence; returns
    ({node name: array}, facts). Runtime inputs keep their memory format (channels_last stays
    channels_last, and PyTorch propagates it from op to op)."""
    values = {k: _t(v) for k, v in arrays.items()}
    out = {}
    with torch.no_grad():
        for node in graph["nodes"]:
            t = {role: values[src] for role, src in node["inputs"].items()}
            values[node["name"]] = y = _graph_node(node["op"], t, node["params"])
            out[node["name"]] = _np(y).copy()
    return out, {"torch_threads": torch.get_num_threads()}


graph_paths = ("eager/f32",)
