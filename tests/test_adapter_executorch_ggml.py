"""The executorch_ggml adapter: built from a checkout into a cache outside it (with a clear
reason when a piece is missing), every op through the backend's real pipeline on fixed cases
in its worker, delegation checked, the backend's bugs showing up as the findings they are, the
standalone repro running without edgediff, and a planted bug caught and shrunk end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import adapters
from adapters import _source_build as sb
from adapters import executorch_ggml as eg
from edgediff.case import Case
from edgediff.runner import run_case
from properties.ops import OPS

REPO = Path(__file__).resolve().parent.parent


# ---- the build: no backend needed ------------------------------------------------------------

@pytest.fixture
def no_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv(eg.VARIABLE, raising=False)
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setattr(sb, "checkouts_file", lambda: tmp_path / "none.json")
    return monkeypatch


def test_without_a_checkout_the_reason_names_the_variable(no_checkout):
    with pytest.raises(sb.BuildUnavailable, match=eg.VARIABLE):
        eg.locate()


def test_a_folder_that_is_no_checkout_is_named_with_the_missing_file(no_checkout, tmp_path):
    no_checkout.setenv(eg.VARIABLE, str(tmp_path))
    with pytest.raises(sb.BuildUnavailable, match="not an executorch-ggml checkout: no CMakeLists.txt"):
        eg.locate()


def test_a_checkout_without_ggml_says_where_ggml_goes(no_checkout, tmp_path):
    for rel in ("CMakeLists.txt", "runtime/ggml_backend.cpp", "python/executorch_ggml/__init__.py",
                "schema/ggml_ir.fbs"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    no_checkout.setenv(eg.VARIABLE, str(tmp_path))
    with pytest.raises(sb.BuildUnavailable, match="third-party/llama.cpp/ggml"):
        eg.locate()
    no_checkout.setenv("LLAMA_CPP_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(sb.BuildUnavailable, match=r"\$LLAMA_CPP_DIR/ggml"):
        eg.locate()


def test_the_cache_key_follows_source_content_only(tmp_path):
    (tmp_path / "runtime").mkdir()
    src = tmp_path / "runtime" / "op.cpp"
    src.write_text("int f() { return 1; }\n")
    (tmp_path / "runtime" / "NOTES.md").write_text("notes")
    key = sb.tree_digest(tmp_path, ["runtime"])
    (tmp_path / "runtime" / "NOTES.md").write_text("other notes")      # not a source
    os.utime(src, (1, 1))                                               # mtime is not content
    assert sb.tree_digest(tmp_path, ["runtime"]) == key
    src.write_text("int f() { return 2; }\n")
    assert sb.tree_digest(tmp_path, ["runtime"]) != key


def test_source_literals_refuse_anything_but_numbers():
    assert eg.literal((1, 2)) == "(1, 2)" and eg.literal(float("inf")) == "float('inf')"
    assert eg.literal([((0, 1), (2, 3))]) == "(((0, 1), (2, 3)),)"
    for bad in ("__import__('os')", {"a": 1}, object()):
        with pytest.raises(ValueError, match="not a plain number"):
            eg.literal(bad)


def test_array_literals_are_exact():
    a = np.array([0.1, -3.4028235e38, 1e-45, np.inf, -np.inf, 7.0, np.nan], np.float32)
    back = eval(eg.array_source(a), {"np": np})
    assert back.dtype == np.float32
    assert back.tobytes() == a.tobytes()


# ---- the backend itself ------------------------------------------------------------------------

try:
    ADAPTER = adapters.load("executorch_ggml")
    UNAVAILABLE = None
except adapters.AdapterUnavailable as exc:
    ADAPTER, UNAVAILABLE = None, str(exc)
needs_backend = pytest.mark.skipif(ADAPTER is None, reason=f"executorch_ggml unavailable: {UNAVAILABLE}")


@pytest.fixture(scope="module")
def worker():
    from edgediff.isolation import isolate
    w = isolate(ADAPTER, "executorch_ggml", OPS)
    yield w
    w.close()


def rng_arrays(seed, **shapes):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-2, 2, s).astype(np.float32) for k, s in shapes.items()}


def conv(op="conv2d", layout="contiguous", multiplier=2, **params):
    p = dict(stride=2, padding=1, dilation=1)
    if op != "depthwise_conv2d":
        p["groups"] = 1
    p.update(params)
    o = 4 * multiplier if op == "depthwise_conv2d" else 6
    cg = 1 if op == "depthwise_conv2d" else 4 // p.get("groups", 1)
    inputs = rng_arrays(1, x=(2, 4, 7, 6), w=(o, cg, 3, 3), b=(o,))
    if op == "conv2d_batch_norm":
        inputs.update(rng_arrays(2, running_mean=(o,), weight=(o,), bias=(o,)))
        inputs["running_var"] = np.abs(rng_arrays(3, v=(o,))["v"]) + 0.5
        p["eps"] = 1e-3
    return Case(op, inputs, p, layout)


CORRECT = [
    ("conv2d 3x3 stride 2 pad 1", conv(), eg.PATH),
    ("pointwise conv2d", Case("conv2d", rng_arrays(4, x=(1, 5, 3, 4), w=(7, 5, 1, 1), b=(7,)),
                               dict(stride=1, padding=0, dilation=1, groups=1)), eg.PATH),
    ("depthwise", conv("depthwise_conv2d", multiplier=1), eg.PATH),
    ("depthwise, asymmetric F.pad", conv("depthwise_conv2d", multiplier=1, stride=1,
                                          padding=((0, 2), (1, 0))),
     eg.PATH),
    ("conv + BN folded", conv("conv2d_batch_norm"), eg.BN_FOLDED),
    ("relu6", Case("clamp", rng_arrays(5, x=(1, 3, 4, 4)), dict(min=0.0, max=6.0)), eg.PATH),
    ("hardtanh", Case("clamp", rng_arrays(6, x=(2, 3, 4)), dict(min=-0.5, max=1.0)), eg.PATH),
    ("mean over H, W", Case("mean", rng_arrays(7, x=(2, 3, 4, 5)), dict(dim=(2, 3), keepdim=True)),
     eg.PATH),
    ("view", Case("view", rng_arrays(8, x=(2, 3, 4)), dict(shape=(6, 4))), eg.PATH),
    ("permute, an involution", Case("permute", rng_arrays(9, x=(2, 3, 4, 5)), dict(dims=(0, 1, 3, 2))),
     eg.PATH),
]


@needs_backend
@pytest.mark.parametrize("label,case,path", CORRECT, ids=[c[0] for c in CORRECT])
def test_each_op_agrees_with_the_golden_op_where_the_backend_is_right(worker, label, case, path):
    out = run_case(case, worker, path, OPS[case.op])
    assert out.kind == "pass", out.message()
    assert out.extra["delegates"] == 1 and out.extra["not_delegated"] == [], out.extra
    assert out.extra["ggml_ir_ops"], "the facts name the ggml IR ops the program holds"


@needs_backend
def test_new_values_are_patched_into_the_cached_program(worker):
    first = run_case(conv(), worker, eg.PATH, OPS["conv2d"])
    second_case = conv()
    second_case.inputs["w"] *= -0.5
    second = run_case(second_case, worker, eg.PATH, OPS["conv2d"])
    assert first.kind == second.kind == "pass", second.message()
    assert second.extra["weights"] == "patched into a cached program"
    assert not np.allclose(first.observed, second.observed)


@needs_backend
def test_a_node_left_outside_the_delegate_is_unsupported(worker):
    # torch.mean(x) with no dim is aten.mean.default, which GgmlPartitioner does not tag
    out = run_case(Case("mean", rng_arrays(10, x=(2, 3)), dict(dim=None, keepdim=False)),
                   worker, eg.PATH, OPS["mean"])
    assert out.kind == "unsupported" and out.detail.startswith("not delegated: "), out.detail


@needs_backend
def test_the_backend_bugs_show_up_as_findings(worker):
    grouped = run_case(conv(groups=2, stride=1), worker, eg.PATH, OPS["conv2d"])
    assert grouped.kind == "crash", grouped.message()
    assert "GGML_ASSERT(a->ne[2] == 1)" in grouped.detail
    assert "/" not in grouped.detail.split("GGML_ASSERT")[0].replace("third-party/llama.cpp/ggml/src/", ""), \
        "no path of this machine in the message: " + grouped.detail
    swapped = run_case(conv(stride=(1, 2), padding=0), worker, eg.PATH, OPS["conv2d"])
    assert swapped.kind in ("mismatch", "crash"), swapped.message()
    channels_last = run_case(Case("view", rng_arrays(11, x=(2, 3, 2, 2)), dict(shape=(2, 12)),
                                  "channels_last"), worker, eg.PATH, OPS["view"])
    assert channels_last.kind == "mismatch", channels_last.message()
    nhwc = run_case(Case("permute", rng_arrays(12, x=(1, 2, 3, 4)), dict(dims=(0, 2, 3, 1))),
                    worker, eg.PATH, OPS["permute"])
    assert nhwc.kind == "mismatch", nhwc.message()
    multiplier = run_case(conv("depthwise_conv2d", multiplier=2), worker, eg.PATH,
                          OPS["depthwise_conv2d"])
    assert multiplier.kind == "crash" and "GGML_ASSERT(a->ne[3] == b->ne[2])" in multiplier.detail


def run_standalone(script: str, tmp_path) -> subprocess.CompletedProcess:
    """Run a repro with the built backend importable and edgediff's packages blocked."""
    (tmp_path / "repro.py").write_text(script)
    package_dir = eg.build().parent.parent                 # <cache>/src/python
    block = ("import sys, runpy\n"
             "for m in ('adapters', 'edgediff', 'properties', 'reference'): sys.modules[m] = None\n"
             "runpy.run_path('repro.py', run_name='__main__')\n")
    env = dict(os.environ, PYTHONPATH=str(package_dir), GGML_NO_BACKTRACE="1")
    return subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@needs_backend
@pytest.mark.parametrize("bug", [False, True], ids=["correct case passes", "bug reproduces"])
def test_the_standalone_repro_runs_without_edgediff(tmp_path, bug):
    case = conv(stride=(1, 2), padding=0) if bug else conv()
    spec = OPS[case.op]
    expected = spec.expected(case)
    bound = spec.bound(case, expected, eg.arithmetic(case.op, eg.PATH))
    script = eg.standalone_repro(case.op, eg.PATH, case.inputs, case.params, case.layout,
                                 expected, bound, "test")
    assert "edgediff" not in script.split('"""', 2)[2].replace("Found by edgediff", "")
    proc = run_standalone(script, tmp_path)
    log = proc.stdout + proc.stderr[-2000:]
    if bug:       # exit 1 with the numbers, or the backend dies (here: a double free)
        assert proc.returncode != 0, log
        assert proc.returncode != 1 or "BUG" in proc.stdout, log
    else:
        assert proc.returncode == 0 and "OK" in proc.stdout, log


@needs_backend
def test_a_planted_bug_is_caught_and_shrunk_through_the_worker(tmp_path):
    env = dict(os.environ, HYPOTHESIS_STORAGE_DIRECTORY=str(tmp_path / "hypothesis"))
    env.pop("PYTEST_XDIST_WORKER", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
           "properties/test_differential.py", "-k", "conv2d-planted",
           "--adapter", "tests.planted_executorch_ggml:skips_last_channel",
           # most drawn convs meet the backend's own bugs and are refused: 300 draws give
           # the planted bug a dozen chances (derandomized, so the same ones every run)
           "--hypothesis-profile", "ci", "--max-examples", "300",
           "--findings-dir", str(tmp_path / "findings")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    found = [json.loads(p.read_text()) for p in (tmp_path / "findings").glob("*/finding.json")]
    assert [f["kind"] for f in found] == ["mismatch"], out[-3000:]
    f = found[0]
    assert f["adapter"] == "planted_executorch_ggml", f
    # shrunk: two input channels and one output element are enough to see the skipped one
    assert f["shapes"]["x"][1] == 2 and f["stats"]["total"] <= 2 and f["input_elements"] <= 8, f


CORPUS = REPO / "fixtures" / "corpus"
REPRESENTATIVES = ["executorch_ggml-conv2d-ggml_f32-mismatch-74ab537bfc",    # H/W swap: values
                   "executorch_ggml-conv2d-ggml_f32-crash-9041e473e6",       # multiplier: abort
                   "executorch_ggml-clamp-ggml_f32-error-9f29b68e39"]        # preprocess error


@needs_backend
@pytest.mark.parametrize("entry", REPRESENTATIVES)
def test_corpus_repros_reproduce_standalone(tmp_path, entry):
    """A committed repro.py (one per kind of failure) runs without edgediff, from another
    folder, and exits non-zero while the bug is there."""
    script = (CORPUS / entry / "repro.py").read_text()
    assert "/work/" not in script and "/root/" not in script, "no machine path in a repro"
    proc = run_standalone(script, tmp_path)
    log = proc.stdout + proc.stderr[-2000:]
    assert proc.returncode != 0, log
    if proc.returncode == 1 and "Traceback" not in proc.stderr:
        assert "BUG" in proc.stdout and "expected:" in proc.stdout, log
