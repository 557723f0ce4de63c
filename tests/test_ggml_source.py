"""ggml built from a source checkout (``ggml@``): locating a checkout and saying what is missing,
the binding's prototypes checked against ggml.h, the version a finding names, both builds side
by side in one process, and the C repro a finding carries (compiled and run against the build:
exit 1 while the bug is there, 0 once it is not)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import adapters
import reference
from adapters import _ggml_repro, _ggml_source
from adapters import _source_build as sb


def _checkout():
    try:
        return _ggml_source.locate()
    except sb.BuildUnavailable as exc:
        pytest.skip(f"no ggml checkout to build: {exc}")


# ---- locating ---------------------------------------------------------------------------------

def test_locate_names_what_is_missing(tmp_path, monkeypatch):
    with pytest.raises(sb.BuildUnavailable, match="is not a folder"):
        _ggml_source.locate(tmp_path / "nowhere")
    (tmp_path / "include").mkdir()
    (tmp_path / "CMakeLists.txt").write_text("project(ggml)\n")
    with pytest.raises(sb.BuildUnavailable, match=r"not a ggml checkout \(no include/ggml\.h, "
                                                  r"include/ggml-cpu\.h, src/ggml\.c\)"):
        _ggml_source.locate(tmp_path)
    monkeypatch.delenv("GGML_ROOT", raising=False)
    monkeypatch.setattr(sb, "checkouts_file", lambda: tmp_path / "none.json")
    with pytest.raises(sb.BuildUnavailable, match="set GGML_ROOT"):
        _ggml_source.locate()
    with pytest.raises(adapters.AdapterUnavailable, match="set GGML_ROOT"):
        adapters.load("ggml@")


def test_a_llama_cpp_checkout_means_its_ggml_folder(tmp_path):
    ggml = tmp_path / "llama.cpp" / "ggml"
    for f in ("CMakeLists.txt", "include/ggml.h", "include/ggml-cpu.h", "src/ggml.c"):
        (ggml / f).parent.mkdir(parents=True, exist_ok=True)
        (ggml / f).write_text("")
    assert _ggml_source.locate(tmp_path / "llama.cpp") == ggml.resolve()


def test_only_backends_that_build_from_source_take_a_path():
    with pytest.raises(adapters.UsageError, match="'torch' cannot be built from a checkout"):
        adapters.load("torch@/somewhere")


def test_version_of_a_git_checkout_and_of_a_snapshot(tmp_path):
    (tmp_path / "CMakeLists.txt").write_text("set(GGML_VERSION_MAJOR 0)\nset(GGML_VERSION_MINOR 21)\n"
                                             "set(GGML_VERSION_PATCH 0)\n")
    assert _ggml_source.describe(tmp_path) == "v0.21.0"
    (tmp_path / ".edgediff-snapshot").write_text("d99724f2\n")
    assert _ggml_source.describe(tmp_path) == "v0.21.0-d99724f2"
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-C", str(tmp_path), "-c", "user.email=e@x", "-c", "user.name=e"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "CMakeLists.txt"], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    subprocess.run(git + ["tag", "v9.9.9"], check=True)
    assert _ggml_source.describe(tmp_path) == "v9.9.9"


# ---- the binding ------------------------------------------------------------------------------

def test_a_prototype_that_differs_from_ggml_h_fails_the_build_naming_the_function(tmp_path, monkeypatch):
    root = _checkout()
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    good = tmp_path / "good.c"
    good.write_text(_ggml_source.check_source())
    ok = subprocess.run(["cc", "-std=c11", "-fsyntax-only", str(good), "-I", str(root / "include")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # ggml_clamp takes (ctx, a, float min, float max): a binding passing doubles must not build
    monkeypatch.setitem(_ggml_source.FUNCTIONS, "ggml_clamp", ("tensor", ["ctx", "tensor", "int", "int"]))
    bad = tmp_path / "bad.c"
    bad.write_text(_ggml_source.check_source())
    out = subprocess.run(["cc", "-std=c11", "-fsyntax-only", str(bad), "-I", str(root / "include")],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "ggml.h declares ggml_clamp differently" in out.stderr


def test_both_builds_side_by_side_in_one_process():
    _checkout()
    built = adapters.load("ggml@")
    assert built.name.startswith("ggml@v") and built.name != "ggml"
    assert "built from source" in built.version
    x = np.linspace(-1, 1, 2 * 3 * 5 * 4, dtype=np.float32).reshape(2, 3, 5, 4)
    w = np.linspace(-0.5, 0.5, 4 * 3 * 3 * 2, dtype=np.float32).reshape(4, 3, 3, 2)
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), None, 1, 1, 1, 1)
    got, facts = built.conv2d(x, w, padding=1, path="conv_2d_direct/f32")
    assert facts["ggml_graph"] == "CONV_2D"
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    try:
        python_build = adapters.load("ggml")
    except adapters.AdapterUnavailable as exc:
        pytest.skip(f"ggml-python: {exc}")
    other, _ = python_build.conv2d(x, w, padding=1, path="conv_2d_direct/f32")
    np.testing.assert_allclose(other, expected, rtol=0, atol=1e-5)
    # the two builds differ where v0.21.0 changed ggml_conv_2d: an F16 im2col for F32 kernels
    new, _ = built.conv2d(x, w, padding=1, path="conv_2d/f32")
    old, _ = python_build.conv2d(x, w, padding=1, path="conv_2d/f32")
    assert np.abs(old - expected).max() < 1e-5 < np.abs(new - expected).max()


def test_default_runs_include_the_checkout_build(monkeypatch, tmp_path):
    monkeypatch.setenv("GGML_ROOT", str(tmp_path))
    names = adapters.default_backends()
    assert names[names.index("ggml") + 1] == "ggml@"
    monkeypatch.delenv("GGML_ROOT")
    monkeypatch.setattr(sb, "checkouts_file", lambda: tmp_path / "none.json")
    assert "ggml@" not in adapters.default_backends()


# ---- the C repro ------------------------------------------------------------------------------

def _compile_and_run(source: str, tmp_path, root):
    lib_dir = _ggml_source.build(root).parent / "build" / "src"
    c = tmp_path / "repro.c"
    c.write_text(source)
    exe = tmp_path / "repro"
    build = subprocess.run(["cc", "-O1", str(c), "-I", str(root / "include"),
                            *(str(lib_dir / f"lib{n}.a") for n in ("ggml", "ggml-cpu", "ggml-base")),
                            "-lstdc++", "-lm", "-lpthread", "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    return subprocess.run([str(exe)], capture_output=True, text=True, timeout=60,
                          env={"GGML_NO_BACKTRACE": "1"})


def test_c_repro_fails_while_the_bug_is_there_and_passes_where_ggml_is_right(tmp_path):
    root = _checkout()
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    x = np.array([[[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]]], np.float32)          # (1, 1, 2, 3)
    w = np.array([[[[0.7, -0.3]]]], np.float32)                               # (1, 1, 1, 2)
    inputs, params = {"x": x, "w": w}, {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64))
    bound = np.full(expected.shape, 1e-6)
    # conv_2d_direct/f32 is right on v0.21.0: the program prints PASS and exits 0
    events, ended = _ggml_repro.trace("", "conv2d", "conv_2d_direct/f32", inputs, params)
    ok = _compile_and_run(_ggml_repro.c_program(events, ended, expected, bound, "t", "v", "conv2d",
                                                "conv_2d_direct/f32"), tmp_path, root)
    assert ok.returncode == 0 and "PASS" in ok.stdout, ok.stdout + ok.stderr
    # conv_2d/f32 rounds both operands to F16 on v0.21.0: FAIL, exit 1, expected vs got printed
    events, ended = _ggml_repro.trace("", "conv2d", "conv_2d/f32", inputs, params)
    assert [e["call"] for e in events if "call" in e][:2] == ["ggml_init", "ggml_new_tensor"]
    bad = _compile_and_run(_ggml_repro.c_program(events, ended, expected, bound, "t", "v", "conv2d",
                                                 "conv_2d/f32"), tmp_path, root)
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "expected" in bad.stdout, bad.stdout
    # a depthwise conv with an F32 kernel aborts in v0.21.0: the program dies the same way
    xd, wd = np.array([[[[1.5]]]], np.float32), np.array([[[[2.0]]]], np.float32)
    events, ended = _ggml_repro.trace("", "depthwise_conv2d", "conv_2d_dw/f32", {"x": xd, "w": wd},
                                      {"stride": 1, "padding": 0, "dilation": 1})
    dead = _compile_and_run(_ggml_repro.c_program(events, ended, np.array([[[[3.0]]]]),
                                                  np.full((1, 1, 1, 1), 1e-6), "t", "v",
                                                  "depthwise_conv2d", "conv_2d_dw/f32"), tmp_path, root)
    assert dead.returncode < 0 and "GGML_ASSERT(src1->type == GGML_TYPE_F32)" in dead.stderr


def test_c_repro_refuses_what_ggml_cannot_express():
    _checkout()
    x = np.zeros((1, 2, 3, 3), np.float32)
    w = np.zeros((4, 1, 3, 3), np.float32)
    events, ended = _ggml_repro.trace("", "conv2d", "conv_2d/f32", {"x": x, "w": w},
                                      {"stride": 1, "padding": 0, "dilation": 1, "groups": 2})
    with pytest.raises(ValueError, match="no groups argument"):
        _ggml_repro.c_program(events, ended, np.zeros((1, 4, 1, 1)), np.zeros((1, 4, 1, 1)),
                              "t", "v", "conv2d", "conv_2d/f32")


def _corpus_c_repros():
    from edgediff.replay import CORPUS
    return sorted(p for p in CORPUS.glob("*/repro.c")) if CORPUS.is_dir() else []


@pytest.mark.parametrize("repro", _corpus_c_repros(), ids=lambda p: p.parent.name)
def test_every_corpus_c_repro_reproduces_against_the_build(repro, tmp_path):
    """The repro.c of a corpus finding, compiled against the checkout build alone (no edgediff,
    no Python): it must still fail, by its check (exit 1) or where ggml aborts (a signal)."""
    root = _checkout()
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    text = repro.read_text()
    assert "/root" not in text and "/home" not in text and "/tmp" not in text    # no machine path
    out = _compile_and_run(text, tmp_path, root)
    assert out.returncode == 1 and "FAIL" in out.stdout or out.returncode < 0, out.stdout + out.stderr
