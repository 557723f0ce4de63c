"""A Case is plain data: op name, named input arrays, keyword params, layout and dtype.

It serialises losslessly to JSON (everything but the arrays) plus an ``.npz``
(the arrays), which is exactly what a finding stores and what ``repro.py`` and
replay load. The memory layout is carried by the arrays handed to an adapter:
``arrays_for_backend`` gives channels_last inputs NHWC-contiguous strides, so
``torch.from_numpy`` sees a channels_last tensor, as a backend would.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LAYOUTS = ("contiguous", "channels_last")


@dataclass(frozen=True)
class Case:
    op: str
    inputs: dict            # name -> np.ndarray, in the op's positional order
    params: dict = field(default_factory=dict)
    layout: str = "contiguous"
    dtype: str = "float32"

    def arrays_for_backend(self) -> dict:
        """Inputs with the case's memory layout (4-D ones become NHWC-strided for channels_last)."""
        if self.layout == "contiguous":
            return dict(self.inputs)
        out = {}
        for name, a in self.inputs.items():
            if a.ndim == 4 and name == "x":
                a = np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
            out[name] = a
        return out

    @property
    def n_elements(self) -> int:
        return int(sum(a.size for a in self.inputs.values()))

    def describe(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.inputs.items())
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        extra = "" if self.layout == "contiguous" else f", layout={self.layout}"
        return f"{self.op}({shapes}{', ' if params else ''}{params}{extra})"

    __repr__ = describe

    def _repr_pretty_(self, p, cycle):  # how Hypothesis prints a falsifying example
        p.text(self.describe())

    # ---- serialisation ---------------------------------------------------------
    def to_json(self) -> dict:
        return {"op": self.op, "params": to_jsonable(self.params), "layout": self.layout,
                "dtype": self.dtype, "input_names": list(self.inputs),
                "shapes": {k: list(v.shape) for k, v in self.inputs.items()},
                "input_dtypes": {k: str(v.dtype) for k, v in self.inputs.items()}}

    @classmethod
    def from_json(cls, meta: dict, arrays) -> "Case":
        inputs = {k: np.asarray(arrays[k]) for k in meta["input_names"]}
        return cls(meta["op"], inputs, from_jsonable(meta["params"]), meta["layout"], meta["dtype"])

    def save(self, directory: Path, extra_arrays: dict | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "case.json").write_text(json.dumps(self.to_json(), indent=2))
        np.savez(directory / "inputs.npz", **self.inputs, **(extra_arrays or {}))

    @classmethod
    def load(cls, directory: Path) -> "Case":
        directory = Path(directory)
        meta = json.loads((directory / "case.json").read_text())
        with np.load(directory / "inputs.npz") as arrays:
            return cls.from_json(meta, arrays)


def to_jsonable(value):
    """Params to JSON, keeping tuples distinguishable from lists."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [to_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def plain(value):
    """Params for people to read: tuples as lists, NumPy scalars as numbers."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return to_jsonable(value)


def from_jsonable(value):
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(from_jsonable(v) for v in value["__tuple__"])
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value
