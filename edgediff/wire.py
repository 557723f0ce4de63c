"""The wire format between the test process and an adapter's worker process.

A message is a 4-byte big-endian header length, a JSON header, then the raw bytes of
each array the header lists (dtype, shape, byte count, memory order). No pickles: both
sides may run different Pythons and NumPy versions. A channels_last array travels as
its NHWC bytes and arrives with NHWC strides again.
"""
from __future__ import annotations

import json
import struct

import numpy as np

from edgediff.case import from_jsonable, to_jsonable


def _nhwc_strided(a: np.ndarray) -> bool:
    return a.ndim == 4 and not a.flags.c_contiguous and a.transpose(0, 2, 3, 1).flags.c_contiguous


def pack(header: dict, arrays: dict | None = None) -> bytes:
    meta, chunks = [], []
    for name, a in (arrays or {}).items():
        a = np.asarray(a)
        if _nhwc_strided(a):
            order, raw = "nhwc", a.transpose(0, 2, 3, 1)
        else:
            order, raw = "c", np.ascontiguousarray(a)
        meta.append({"name": name, "dtype": raw.dtype.str, "shape": list(a.shape),
                     "order": order, "nbytes": raw.nbytes})
        chunks.append(raw.tobytes())
    head = json.dumps(to_jsonable(dict(header, arrays=meta))).encode()
    return struct.pack(">I", len(head)) + head + b"".join(chunks)


def read_exact(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise EOFError("worker pipe closed")
        buf += chunk
    return bytes(buf)


def unpack(stream) -> tuple[dict, dict]:
    (n,) = struct.unpack(">I", read_exact(stream, 4))
    header = from_jsonable(json.loads(read_exact(stream, n)))
    arrays = {}
    for m in header.pop("arrays"):
        raw = np.frombuffer(read_exact(stream, m["nbytes"]), dtype=np.dtype(m["dtype"]))
        shape = tuple(m["shape"])
        if m["order"] == "nhwc":
            n_, c, h, w = shape
            a = raw.reshape(n_, h, w, c).transpose(0, 3, 1, 2)
        else:
            a = raw.reshape(shape)
        arrays[m["name"]] = a.copy(order="K")   # writable, same memory order
    return header, arrays
