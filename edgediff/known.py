"""Known failures: a baseline so a run fails only on *new* findings.

``fixtures/known_failures.toml`` holds one ``[[known]]`` table per known finding::

    [[known]]
    adapter = "ggml"                    # required; also matches ggml@<build> and ggml==<pin>
    version = "v0.21*"                  # glob over the backend's version string, default "*"
    op = "conv2d"                       # required
    path = "conv_2d/f16"                # glob, default "*"
    kind = "mismatch"                   # optional: mismatch | shape | error | crash | hang
    when = "groups == 1 and dilation != 1"   # optional predicate over the case's params
    pattern = ["strided", "padded"]     # optional: features the finding's pattern must contain
    reason = "ggml_conv_2d F16 im2col rounds the dilated taps"
    link = "https://github.com/ggml-org/ggml/issues/NNN"

``when`` is an expression in a small subset of Python, over the case's params as names plus
``layout``, ``shapes`` ({input: shape}), ``pattern`` (the finding's features), ``facts``
(what the backend reported, e.g. the int8 scales it chose) and ``detail`` (the error text of
an error/crash): literals, ``and``/``or``/``not``, comparisons (``in`` included), arithmetic,
subscripts, tuples and lists, ``x if c else y``, generator expressions, and calls of
``min``, ``max``, ``len``, ``any``, ``all``, ``abs``, ``tuple``, ``isinstance``, ``int``, ``range``,
``sorted``, ``set``. Nothing else: no attribute access, no other calls, no names but those.
A data file never runs code: ``load_known`` refuses any other construct, an unknown name or an
expression that reads no field at all, naming the entry. An expression that fails on a case
(a missing key, a wrong type) does not match that case.
"""
from __future__ import annotations

import ast
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
    version: str = "*"

    @property
    def key(self) -> str:
        feats = "+".join(self.pattern)
        build = "" if self.version == "*" else f"[{self.version}]"
        return f"{self.adapter}{build}/{self.op}/{self.path}/{self.kind or '*'}/{self.when or ''}{feats}"

    def matches(self, adapter: str, op: str, path: str, kind: str, params: dict,
                layout: str = "contiguous", shapes: dict | None = None, pattern=(),
                facts: dict | None = None, detail: str = "", version: str | None = None) -> bool:
        if not self.applies_to(adapter, op, path, version):
            return False
        if self.kind and kind != self.kind:
            return False
        if self.pattern and not set(self.pattern) <= set(pattern):
            return False
        if self.when:
            names = dict(params, layout=layout, shapes=shapes or {}, pattern=tuple(pattern),
                         facts=facts or {}, detail=detail or "")
            return evaluate(self.when, names)
        return True

    def applies_to(self, adapter: str, op: str, path: str, version: str | None = None) -> bool:
        """Same backend (``adapter`` is a label: ``ggml``, ``ggml@v0.21.0-d99724f2``,
        ``ggml==0.0.45`` are all ggml), op and path, and the version glob (when the version is
        known)."""
        if op != self.op or backend_of(adapter) != backend_of(self.adapter):
            return False
        if self.adapter != backend_of(self.adapter) and self.adapter != adapter:
            return False                       # an entry for one build names that build
        if version is not None and not fnmatch.fnmatchcase(version, self.version):
            return False
        return fnmatch.fnmatchcase(path, self.path)


def backend_of(label: str) -> str:
    """The backend a run label names: ``ggml@v0.21.0`` and ``ggml==0.0.45`` are ``ggml``."""
    return label.partition("@")[0].partition("==")[0]


# Names a ``when`` may read: the context fields and every op parameter of the golden ops.
FIELDS = frozenset({"layout", "shapes", "pattern", "facts", "detail", "stride", "padding",
                    "dilation", "groups", "eps", "min", "max", "dim", "keepdim", "shape", "dims",
                    "rounding", "activation", "zero_point", "scale", "ops"})
_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
          ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Compare,
          ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is,
          ast.IsNot, ast.Name, ast.Load, ast.Store, ast.Constant, ast.Tuple, ast.List,
          ast.Subscript, ast.Slice, ast.Call, ast.IfExp, ast.GeneratorExp, ast.comprehension)
_COMPILED: dict = {}


def check_when(text: str, where: str):
    """The compiled ``when`` expression, or ValueError naming ``where`` and what is refused."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"{where}: 'when' is not an expression: {exc}") from None
    bound = {t.id for n in ast.walk(tree) if isinstance(n, ast.comprehension)
             for t in ast.walk(n.target) if isinstance(t, ast.Name)}
    reads = False
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise ValueError(f"{where}: 'when' may not use {type(node).__name__} "
                             f"({ast.get_source_segment(text, node) or text!r})")
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in SAFE_BUILTINS) or node.keywords:
                raise ValueError(f"{where}: 'when' may call only {sorted(SAFE_BUILTINS)} "
                                 "with positional arguments")
        if isinstance(node, ast.Name) and node.id not in bound:
            if node.id in FIELDS:
                reads = True
            elif node.id not in SAFE_BUILTINS and node.id not in ("None", "True", "False"):
                raise ValueError(f"{where}: 'when' reads an unknown name {node.id!r}; names: "
                                 f"{sorted(FIELDS)}")
    if not reads:
        raise ValueError(f"{where}: 'when' = {text!r} reads no field of the case: it would be "
                         "the same for every case")
    return compile(tree, where, "eval")


def evaluate(text: str, names: dict) -> bool:
    """A checked ``when`` on one case; False when it does not apply (a missing key, a type)."""
    code = _COMPILED.get(text)
    if code is None:
        code = _COMPILED[text] = check_when(text, "when")
    try:   # the names as globals, so generator expressions see them too
        return bool(eval(code, {"__builtins__": SAFE_BUILTINS, **names}))  # noqa: S307
    except (LookupError, TypeError, ValueError, ArithmeticError):
        return False


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
        for field in ("path", "reason", "link", "version"):
            if field in raw and not isinstance(raw[field], str):
                raise ValueError(f"{path}: known entry {i}: '{field}' must be a string")
        if "pattern" in raw and not (isinstance(raw["pattern"], list)
                                     and all(isinstance(f, str) for f in raw["pattern"])):
            raise ValueError(f"{path}: known entry {i}: 'pattern' must be a list of strings")
        if raw.get("kind") not in (None,) + KINDS:
            raise ValueError(f"{path}: known entry {i}: kind must be one of {KINDS}")
        if raw.get("when") is not None:
            if not isinstance(raw["when"], str):
                raise ValueError(f"{path}: known entry {i}: 'when' must be a string")
            _COMPILED[raw["when"]] = check_when(raw["when"], f"{path}: known entry {i}")
        if "pattern" in raw:
            raw = dict(raw, pattern=tuple(raw["pattern"]))
        entries.append(KnownFailure(**raw))
    return entries
