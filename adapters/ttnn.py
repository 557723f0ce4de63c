"""TT-NN (ttnn 0.81.1, Tenstorrent): the built-in adapter named ``ttnn``.

TT-NN ships wheels for CPython 3.10/3.12 only and needs numpy<2, so it lives in its own
environment, ``.venvs/ttnn-3.12`` (``bash scripts/setup_ttnn.sh``), and this adapter always runs
``isolated``: in a worker process under that environment's interpreter (``python`` below). The
module is imported twice:

- in edgediff's own (Python 3.11, numpy 2, no ttnn) process, only to read its settings: ``name``,
  ``version`` (read from the environment's package metadata), ``python``, ``worker_env``,
  ``worker_cwd``, ``timeout`` and ``unavailable_reason()``, which then says whether the TT-NN
  environment exists. Nothing here imports ttnn at module level;
- in the worker, where ``unavailable_reason()`` checks that ``import ttnn`` works and the ops run.
  The worker imports only NumPy, this module and edgediff's wire format (no torch, no
  ``reference``): keep it that way.

No Tenstorrent hardware is needed for the host path. ``worker_env`` points
``TT_METAL_MOCK_CLUSTER_DESC_PATH`` at a cluster descriptor (``fixtures/tt_cluster/``, Wormhole
N150 by default; ``EDGEDIFF_TT_CLUSTER=blackhole_p150`` for Blackhole P150, ``=none`` to set
nothing, e.g. on a machine with a card), which lets ttnn's host code run: tensor construction,
tilize/untilize, zero padding to 32x32 tiles and block-float packing. When a card is present
(``/dev/tenstorrent`` exists) no mock descriptor is set. ttnn writes a ``generated/`` folder into
its working directory, hence ``worker_cwd`` (a scratch directory under the system temp dir).

Ops and paths:

- ``to_layout_roundtrip(x, dtype, layout)``, path ``host``: a host-only op (it is not one of the
  float ops of ``properties/ops.py``; its golden is ``reference.formats.round_to(x, dtype)``).
  ``layout="TILE"``: ``ttnn.Tensor(x, data_type=dtype, layout=TILE_LAYOUT)`` (tilize + zero
  padding + packing), then for bfloat16/float32 ``ttnn.to_layout(.., ROW_MAJOR_LAYOUT)`` (untilize
  + unpad); ``layout="ROW_MAJOR"``: a row-major tensor, ``to_layout`` TILE then ROW_MAJOR. Values
  come back through ``ttnn.to_dtype(.., float32).to_numpy()``. bfloat8_b/bfloat4_b exist only in
  TILE layout, so ``ROW_MAJOR`` with them is Unsupported (ttnn raises TT_FATAL "Layout must be
  Layout::TILE"; ``to_layout`` of a host bfloat8_b TILE tensor to ROW_MAJOR raises TT_FATAL
  "Tensor layout must be ROW_MAJOR for unpadding").
- device ops, path ``device/<dtype>[/<fidelity>]``, dtype in bfloat16, bfloat8_b: ``conv2d``,
  ``depthwise_conv2d``, ``conv2d_batch_norm``, ``mean`` (these multiply on the FPU, so they also
  take a MathFidelity: LoFi, HiFi2, HiFi4), ``clamp``, ``view``, ``permute`` (no multiplier:
  fidelity does not apply). They need ``ttnn.open_device``. It is tried once per worker process;
  when it fails, or opens only a *mocked* device (with the mock descriptor set, a second
  ``open_device`` call succeeds and returns a device that computes nothing), every device op
  raises ``Unsupported("no Tenstorrent device: ...")``. Device results are never faked.

  UNTESTED: the device code paths were written from the ttnn 0.81.1 docstrings (``ttnn.conv2d``,
  ``Conv2dConfig``, ``init_device_compute_kernel_config``, ``clamp``, ``mean``, ``reshape``,
  ``permute``) and have never run: the machine they were written on has no Tenstorrent card.
  Accumulation is ttnn's default (``fp32_dest_acc_en=False``: bfloat16 Dst), ``math_approx_mode``
  is off, weights and bias are handed to ``ttnn.conv2d`` as float32 host tensors and prepared by it
  in the path's dtype (``Conv2dConfig.weights_dtype``); activations go in as a flattened
  ``[1, 1, N*H*W, C]`` NHWC tensor (what TT-NN's CNN models do), bfloat8_b ones in TILE layout.
  conv2d_batch_norm runs the conv on the device, then the batch norm as device elementwise ops
  ``(y - mean) * (weight / sqrt(var + eps)) + bias`` with per-channel rows broadcast over the
  NHWC rows (the scale is computed on the host in float64).
"""
from __future__ import annotations

import atexit
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import adapters

Unsupported = adapters.Unsupported

REPO = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("EDGEDIFF_VENVS", REPO / ".venvs")) / "ttnn-3.12"
SETUP = "bash scripts/setup_ttnn.sh"
TTNN_VERSION = "0.81.1"                       # what scripts/setup_ttnn.sh installs
CLUSTERS = {"wormhole_n150": REPO / "fixtures" / "tt_cluster" / "wormhole_n150.yaml",
            "blackhole_p150": REPO / "fixtures" / "tt_cluster" / "blackhole_p150.yaml"}
MOCK_ENV = "TT_METAL_MOCK_CLUSTER_DESC_PATH"
L1_SMALL_SIZE = 32768                         # ttnn.conv2d allocates from L1_SMALL (open_device docs)

name = "ttnn"
isolated = True
python = str(VENV / "bin" / "python")
timeout = 120.0


def _cluster_choice() -> str | None:
    """The mock cluster descriptor to use, or None (a real card, or EDGEDIFF_TT_CLUSTER=none)."""
    choice = os.environ.get("EDGEDIFF_TT_CLUSTER")
    if choice is None:
        return None if Path("/dev/tenstorrent").exists() else "wormhole_n150"
    return None if choice.lower() in ("", "none", "hardware") else choice


def _worker_env() -> dict:
    env = {"TT_LOGGER_LEVEL": "error", "LOGURU_LEVEL": "WARNING"}   # keep stderr tails readable
    choice = _cluster_choice()
    if choice is not None:
        env[MOCK_ENV] = str(CLUSTERS.get(choice, Path(choice)))   # a name, or a path to a YAML
    return env


def _worker_cwd() -> str:
    scratch = Path(tempfile.gettempdir()) / "edgediff-ttnn"
    scratch.mkdir(parents=True, exist_ok=True)
    return str(scratch)


worker_env = _worker_env()
worker_cwd = _worker_cwd()


def _in_ttnn_environment() -> bool:
    """True in the worker: this interpreter belongs to the TT-NN venv (or can import ttnn)."""
    try:
        if Path(sys.prefix).resolve() == VENV.resolve():
            return True
    except OSError:
        pass
    import importlib.util
    return importlib.util.find_spec("ttnn") is not None


def _version() -> str:
    """ttnn's version from package metadata (never by importing ttnn)."""
    try:
        if _in_ttnn_environment():
            from importlib.metadata import version as dist_version
            return dist_version("ttnn")
        for info in sorted((VENV / "lib").glob("python3.*/site-packages/ttnn-*.dist-info")):
            return info.name[len("ttnn-"):-len(".dist-info")]
    except Exception:
        pass
    return "not installed"


version = _version()

_IMPORT_ERROR: str | None = None


def unavailable_reason():
    if not _in_ttnn_environment():
        # edgediff's own process: can the worker run at all?
        if not Path(python).exists():
            return (f"the TT-NN environment {VENV} does not exist (ttnn {TTNN_VERSION} needs CPython "
                    f"3.10/3.12 and numpy<2); create it with: {SETUP}")
        if version == "not installed":
            return f"ttnn is not installed in {VENV}; run: {SETUP}"
        mock = worker_env.get(MOCK_ENV)
        if mock and not Path(mock).exists():
            return f"cluster descriptor {mock} does not exist (EDGEDIFF_TT_CLUSTER)"
        return None
    if _ttnn() is None:
        return f"import ttnn failed in {sys.executable}: {_IMPORT_ERROR}"
    return None


_TTNN = None


def _ttnn():
    """ttnn, imported on first use (only ever in the worker)."""
    global _TTNN, _IMPORT_ERROR
    if _TTNN is None and _IMPORT_ERROR is None:
        try:
            import ttnn as module
            _TTNN = module
        except Exception as exc:  # ImportError, a shared library failing to load, ...
            _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    return _TTNN


# ---- paths and arithmetic -------------------------------------------------------------------

DTYPES = ("bfloat16", "bfloat8_b")
FIDELITIES = ("LoFi", "HiFi2", "HiFi4")
HOST_DTYPES = ("float32", "bfloat16", "bfloat8_b", "bfloat4_b")
LAYOUTS = ("TILE", "ROW_MAJOR")
_MULTIPLYING = tuple(f"device/{d}/{f}" for d in DTYPES for f in FIDELITIES)
_MOVING = tuple(f"device/{d}" for d in DTYPES)
paths = {
    "to_layout_roundtrip": ("host",),
    "conv2d": _MULTIPLYING,
    "depthwise_conv2d": _MULTIPLYING,
    "conv2d_batch_norm": _MULTIPLYING,
    "mean": _MULTIPLYING,
    "clamp": _MOVING,
    "view": _MOVING,
    "permute": _MOVING,
}

# Bits of each multiplier operand a fidelity uses, hidden bit included (ttnn.MathFidelity's
# docstring; bfloat16 operands have 8): SrcA takes the weights (matmul in1), SrcB the activations.
FIDELITY_OPERAND_BITS = {"LoFi": (5, 7), "HiFi2": (9, 7), "HiFi3": (5, 13), "HiFi4": (9, 13)}


@dataclass(frozen=True)
class TTArithmetic:
    """Field for field an ``edgediff.tolerance.Arithmetic`` (the worker sends ``vars()`` of it and
    the test process rebuilds an Arithmetic), defined here so the worker needs no edgediff.tolerance.

    ``inputs``/``output`` may be the block format ``bfloat8_b``: its rounding error is relative to
    the largest magnitude of the value's 16-wide block, not to the value. ``fidelity`` is the
    path's MathFidelity (multiplier operands truncated); ``accumulation_bound="probabilistic"``
    because the worst-case bound of a bfloat16 Dst is useless (edgediff/tolerance.py, "Tensix")."""
    inputs: str = "float32"
    accumulate: str = "float32"
    output: str = "float32"
    fidelity: str | None = None
    accumulation_bound: str = "worst_case"


def arithmetic(op: str, path: str) -> TTArithmetic:
    if path == "host":
        return TTArithmetic()            # the golden (round_to) already models the format: exact
    parts = path.split("/")
    dtype = parts[1]
    if op in ("clamp", "view", "permute"):
        return TTArithmetic(inputs=dtype, accumulate=dtype, output=dtype)
    return TTArithmetic(inputs=dtype, accumulate="bfloat16", output=dtype,   # fp32_dest_acc_en=False
                        fidelity=parts[2] if len(parts) > 2 else None,
                        accumulation_bound="probabilistic")


# ---- host op ---------------------------------------------------------------------------------

def to_layout_roundtrip(x, dtype="bfloat8_b", layout="TILE", path="host"):
    """x (float32, any shape) through a ttnn host tensor of ``dtype`` in ``layout`` and back."""
    if path != "host":
        raise Unsupported(f"to_layout_roundtrip has only the 'host' path, not {path!r}")
    if dtype not in HOST_DTYPES:
        raise Unsupported(f"dtype {dtype!r} is not one of {HOST_DTYPES}")
    if layout not in LAYOUTS:
        raise Unsupported(f"layout {layout!r} is not one of {LAYOUTS}")
    if layout == "ROW_MAJOR" and dtype.endswith("_b"):
        raise Unsupported(f"{dtype} exists only in TILE layout in TT-NN")
    ttnn = _require_ttnn()
    a = np.ascontiguousarray(x, dtype=np.float32)
    if layout == "TILE":
        t = ttnn.Tensor(a, data_type=_dtype(dtype), layout=ttnn.TILE_LAYOUT)   # tilize, pad, pack
        tiled = t
        if not dtype.endswith("_b"):
            t = ttnn.to_layout(t, ttnn.ROW_MAJOR_LAYOUT)                       # untilize, unpad
    else:
        t = ttnn.Tensor(a, data_type=_dtype(dtype), layout=ttnn.ROW_MAJOR_LAYOUT)
        tiled = ttnn.to_layout(t, ttnn.TILE_LAYOUT)                            # pad, tilize
        t = ttnn.to_layout(tiled, ttnn.ROW_MAJOR_LAYOUT)                       # untilize, unpad
    out = _host_to_numpy(t).reshape(a.shape)
    return out, {"padded_shape": [int(s) for s in tiled.padded_shape]}


def _require_ttnn():
    ttnn = _ttnn()
    if ttnn is None:
        raise Unsupported(f"ttnn is not importable here ({_IMPORT_ERROR})")
    return ttnn


def _dtype(dtype: str):
    return getattr(_ttnn(), dtype)         # ttnn.float32, ttnn.bfloat16, ttnn.bfloat8_b, ...


def _host_to_numpy(t) -> np.ndarray:
    """A host tensor's values as float32 in its logical shape (padding cropped). ``to_numpy`` of a
    bfloat16 tensor returns an object array in 0.81.1, hence the ``to_dtype`` to float32."""
    ttnn = _ttnn()
    if t.dtype != ttnn.float32:
        t = ttnn.to_dtype(t, ttnn.float32)
    return np.asarray(t.to_numpy(), dtype=np.float32)


# ---- device ------------------------------------------------------------------------------------

_DEVICE = None
_DEVICE_ERROR: str | None = None


def _device():
    """The opened device, or Unsupported. ``open_device`` is tried once per process."""
    global _DEVICE, _DEVICE_ERROR
    if _DEVICE is None and _DEVICE_ERROR is None:
        ttnn = _require_ttnn()
        mock = os.environ.get(MOCK_ENV)
        note = f" ({MOCK_ENV}={mock} mocks the cluster for host conversions only)" if mock else ""
        try:
            device = ttnn.open_device(device_id=0, l1_small_size=L1_SMALL_SIZE)
        except Exception as exc:
            _DEVICE_ERROR = f"no Tenstorrent device: ttnn.open_device failed: {_tt_error(exc)}{note}"
        else:
            if mock:
                ttnn.close_device(device)
                _DEVICE_ERROR = ("no Tenstorrent device: ttnn.open_device returned a mocked device"
                                 f"{note}; device ops need a card")
            else:
                _DEVICE = device
                atexit.register(ttnn.close_device, device)
    if _DEVICE is None:
        raise Unsupported(_DEVICE_ERROR)
    return _DEVICE


def _tt_error(exc: Exception) -> str:
    """A TT_FATAL/TT_THROW in one line: 'TT_FATAL @ file:line: condition: message' (no backtrace)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines()]
    if not lines:
        return type(exc).__name__
    if "info:" in lines:
        i = lines.index("info:")
        info = next((ln for ln in lines[i + 1:] if ln and ln != "backtrace:"), "")
        return f"{lines[0]}: {info}" if info else lines[0]
    return lines[0]


def _device_path(path: str, multiplies: bool):
    parts = path.split("/")
    if parts[0] != "device" or len(parts) != (3 if multiplies else 2) or parts[1] not in DTYPES:
        raise Unsupported(f"unknown path {path!r}")
    if multiplies and parts[2] not in FIDELITIES:
        raise Unsupported(f"unknown math fidelity in path {path!r}")
    return parts[1], (parts[2] if multiplies else None)


def _compute_config(device, fidelity: str):
    ttnn = _ttnn()
    return ttnn.init_device_compute_kernel_config(
        device.arch(), math_fidelity=getattr(ttnn.MathFidelity, fidelity),
        math_approx_mode=False, fp32_dest_acc_en=False, packer_l1_acc=False)


def _on_device(a: np.ndarray, dtype: str, device):
    """A float32 array as a TILE-layout device tensor of ``dtype``."""
    ttnn = _ttnn()
    a = np.ascontiguousarray(a, dtype=np.float32)
    return ttnn.Tensor(a, data_type=_dtype(dtype), layout=ttnn.TILE_LAYOUT, device=device)


def _from_device(t) -> np.ndarray:
    ttnn = _ttnn()
    t = ttnn.from_device(t)
    if t.dtype == ttnn.bfloat16 and t.layout == ttnn.TILE_LAYOUT:
        t = ttnn.to_layout(t, ttnn.ROW_MAJOR_LAYOUT)
    return _host_to_numpy(t)


def _pair(v, what):
    h, w = (v, v) if np.ndim(v) == 0 else tuple(v)
    return int(h), int(w)


def _padding4(padding):
    if np.ndim(padding) == 2:
        (top, bottom), (left, right) = padding
        return int(top), int(bottom), int(left), int(right)
    ph, pw = _pair(padding, "padding")
    return ph, ph, pw, pw


def _conv_on_device(x, w, b, stride, padding, dilation, groups, dtype, fidelity):
    """ttnn.conv2d on NCHW x / OIHW w; returns the NHWC output as [N*OH*OW, O] plus dims."""
    device = _device()
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if cg * int(groups) != c:
        raise Unsupported(f"groups={groups} with weight {w.shape} and {c} input channels")
    ttnn = _ttnn()
    x_rows = np.ascontiguousarray(x.transpose(0, 2, 3, 1), np.float32).reshape(1, 1, n * h * wd, c)
    if dtype == "bfloat16":
        tx = ttnn.Tensor(x_rows, data_type=ttnn.bfloat16, layout=ttnn.ROW_MAJOR_LAYOUT, device=device)
    else:
        tx = _on_device(x_rows, dtype, device)
    tw = ttnn.Tensor(np.ascontiguousarray(w, np.float32), data_type=ttnn.float32,
                     layout=ttnn.ROW_MAJOR_LAYOUT)
    tb = None
    if b is not None:
        tb = ttnn.Tensor(np.asarray(b, np.float32).reshape(1, 1, 1, o), data_type=ttnn.float32,
                         layout=ttnn.ROW_MAJOR_LAYOUT)
    out, (oh, ow) = ttnn.conv2d(
        input_tensor=tx, weight_tensor=tw, bias_tensor=tb, device=device,
        in_channels=c, out_channels=o, batch_size=n, input_height=h, input_width=wd,
        kernel_size=(kh, kw), stride=_pair(stride, "stride"), padding=_padding4(padding),
        dilation=_pair(dilation, "dilation"), groups=int(groups), dtype=_dtype(dtype),
        conv_config=ttnn.Conv2dConfig(weights_dtype=_dtype(dtype)),
        compute_config=_compute_config(device, fidelity), return_output_dim=True)
    return out, (n, int(oh), int(ow), o)


def _nchw(rows: np.ndarray, dims) -> np.ndarray:
    n, oh, ow, o = dims
    return np.ascontiguousarray(rows.reshape(-1, rows.shape[-1])[: n * oh * ow, :o]
                                .reshape(n, oh, ow, o).transpose(0, 3, 1, 2))


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, path=_MULTIPLYING[0]):
    dtype, fidelity = _device_path(path, multiplies=True)
    out, dims = _conv_on_device(x, w, b, stride, padding, dilation, groups, dtype, fidelity)
    return _nchw(_from_device(out), dims)


def depthwise_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, path=_MULTIPLYING[0]):
    return conv2d(x, w, b, stride, padding, dilation, groups=x.shape[1], path=path)


def conv2d_batch_norm(x, w, running_mean, running_var, b=None, weight=None, bias=None,
                      stride=1, padding=0, dilation=1, groups=1, eps=1e-5, path=_MULTIPLYING[0]):
    dtype, fidelity = _device_path(path, multiplies=True)
    out, dims = _conv_on_device(x, w, b, stride, padding, dilation, groups, dtype, fidelity)
    ttnn = _ttnn()
    device = _device()
    o = dims[3]
    gamma = np.ones(o) if weight is None else np.asarray(weight, np.float64)
    beta = np.zeros(o) if bias is None else np.asarray(bias, np.float64)
    scale = gamma / np.sqrt(np.asarray(running_var, np.float64) + float(eps))

    def row(v):   # one per-channel row, broadcast over the [1, 1, N*OH*OW, O] conv output
        return _on_device(np.asarray(v, np.float32).reshape(1, 1, 1, o), dtype, device)

    if out.layout != ttnn.TILE_LAYOUT:
        out = ttnn.to_layout(out, ttnn.TILE_LAYOUT)
    y = ttnn.subtract(out, row(running_mean))
    y = ttnn.multiply(y, row(scale))
    y = ttnn.add(y, row(beta))
    return _nchw(_from_device(y), dims)


def _as_tile_operand(x):
    """Rank-0/1 inputs become (1, 1)/(1, N) (TILE layout needs two dims); returns (array, shape)."""
    a = np.asarray(x, np.float32)
    return (a.reshape((1,) * (2 - a.ndim) + a.shape) if a.ndim < 2 else a), a.shape


def clamp(x, min=None, max=None, path=_MOVING[0]):  # noqa: A002 - the reference's names
    dtype, _ = _device_path(path, multiplies=False)
    device = _device()
    if min is None and max is None:
        raise Unsupported("clamp needs min or max")
    a, shape = _as_tile_operand(x)
    ttnn = _ttnn()
    y = ttnn.clamp(_on_device(a, dtype, device), min=None if min is None else float(min),
                   max=None if max is None else float(max))
    return _from_device(y).reshape(shape)


def mean(x, dim=None, keepdim=False, path=_MULTIPLYING[0]):
    dtype, fidelity = _device_path(path, multiplies=True)
    device = _device()
    a = np.asarray(x, np.float32)
    if a.ndim < 2:
        raise Unsupported("ttnn.mean of a rank < 2 input is not mapped by this adapter (TILE needs 2 dims)")
    ttnn = _ttnn()
    d = None if dim is None else (int(dim) if np.ndim(dim) == 0 else [int(v) for v in dim])
    y = ttnn.mean(_on_device(a, dtype, device), dim=d, keepdim=bool(keepdim),
                  compute_kernel_config=_compute_config(device, fidelity))
    return _from_device(y)                   # its shape is ttnn's: a different one is a finding


def view(x, shape, path=_MOVING[0]):
    dtype, _ = _device_path(path, multiplies=False)
    device = _device()
    a, _ = _as_tile_operand(x)               # a rank 0/1 input enters as (1, 1)/(1, N)
    ttnn = _ttnn()
    y = ttnn.reshape(_on_device(a, dtype, device), [int(s) for s in shape])
    return _from_device(y)


def permute(x, dims, path=_MOVING[0]):
    dtype, _ = _device_path(path, multiplies=False)
    device = _device()
    a = np.asarray(x, np.float32)
    if a.ndim < 2:
        raise Unsupported("permute of a rank < 2 input is not mapped by this adapter (TILE needs 2 dims)")
    ttnn = _ttnn()
    y = ttnn.permute(_on_device(a, dtype, device), [int(d) for d in dims])
    return _from_device(y)
