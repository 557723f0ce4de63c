"""Known failures: a baseline so a run fails only on *new* findings.

``fixtures/known_failures.toml`` holds one ``[[known]]`` table per known finding::

    [[known]]
    adapter = "ggml"                    # required
    op = "conv2d"                       # required
    path = "conv_2d/f16"                # glob, default "*"
    kind = "mismatch"                   # optional: mismatch | shape | error | crash | hang
    when = "groups == 1 and dilation != 1"   # optional predicate over the case's params
    pattern = ["strided", "padded"]     # optional: features the finding's pattern must contain
    reason = "ggml_conv_2d F16 im2col rounds the dilated taps"
    link = "https://github.com/ggml-org/ggml/issues/NNN"

``when`` is a Python expression evaluated with the case's params as names plus
``layout``, ``shapes`` ({input: shape}), ``pattern`` (the finding's features), ``facts``
(what the backend reported, e.g. the int8 scales it chose) and ``detail`` (the error text of
an error/crash); it may use ``min``, ``max``,
``len``, ``any``, ``all``, ``abs``, ``range``, ``sorted``, ``set``.
"""
from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from pathlib import Path

KINDS = ("mismatch", "shape", "error", "crash", "hang")
SAFE_BUILTINS = {"min": min, "max": max, "len": len, "any": any, "all": all, "abs": abs,
                 "tuple": tuple, "isinstance": isinstance, "int": int, "range": range,
                 "sorted": sorted, "set": set}


@dataclass(frozen=True)
class KnownFailure:
    adapter: str
    op: str
    path: str = "*"
    kind: str | None = None
    when: str | None = None
    pattern: tuple = ()          # features that must all be in the finding's pattern
    reason: str = ""
    link: str = ""

    @property
    def key(self) -> str:
        feats = "+".join(self.pattern)
        return f"{self.adapter}/{self.op}/{self.path}/{self.kind or '*'}/{self.when or ''}{feats}"

    def matches(self, adapter: str, op: str, path: str, kind: str, params: dict,
                layout: str = "contiguous", shapes: dict | None = None, pattern=(),
                facts: dict | None = None, detail: str = "") -> bool:
        if (adapter, op) != (self.adapter, self.op) or not fnmatch.fnmatchcase(path, self.path):
            return False
        if self.kind and kind != self.kind:
            return False
        if self.pattern and not set(self.pattern) <= set(pattern):
            return False
        if self.when:
            names = dict(params, layout=layout, shapes=shapes or {}, pattern=tuple(pattern),
                         facts=facts or {}, detail=detail or "")
            try:
                return bool(eval(self.when, {"__builtins__": SAFE_BUILTINS}, names))  # noqa: S307
            except Exception:
                return False
        return True

    def applies_to(self, adapter: str, op: str, path: str) -> bool:
        return (adapter, op) == (self.adapter, self.op) and fnmatch.fnmatchcase(path, self.path)


def load_known(path) -> list[KnownFailure]:
    """Parse the baseline file; errors name the entry and field."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--known-failures: {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"--known-failures: {path} is not valid TOML: {exc}") from None
    entries = []
    for i, raw in enumerate(data.get("known", [])):
        unknown = set(raw) - set(KnownFailure.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: known entry {i} has unknown field(s) {sorted(unknown)}")
        for field in ("adapter", "op"):
            if not isinstance(raw.get(field), str):
                raise ValueError(f"{path}: known entry {i} needs a string '{field}'")
        if raw.get("kind") not in (None,) + KINDS:
            raise ValueError(f"{path}: known entry {i}: kind must be one of {KINDS}")
        if raw.get("when"):
            try:
                compile(raw["when"], f"{path}:known[{i}].when", "eval")
            except SyntaxError as exc:
                raise ValueError(f"{path}: known entry {i}: 'when' is not an expression: {exc}") from None
        if "pattern" in raw:
            raw = dict(raw, pattern=tuple(raw["pattern"]))
        entries.append(KnownFailure(**raw))
    return entries
