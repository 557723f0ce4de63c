"""The gate workflow end to end: findings -> replay -> baseline -> gate -> corpus -> report."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import adapters

REPO = Path(__file__).resolve().parent.parent


def edgediff(*args, env=None, cwd=REPO):
    e = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "edgediff", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def findings(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wf")
    code, out = edgediff("run", "--adapter", "tests.planted:swapped_padding", "--findings-dir",
                         str(tmp / "findings"), "--max-examples", "40", "--", "-k", "conv2d-",
                         env={"HYPOTHESIS_STORAGE_DIRECTORY": str(tmp / "hyp")})
    assert code == 1, out
    return tmp


def the_finding(tmp):
    return next(p.parent for p in (tmp / "findings").glob("*conv2d-default-mismatch*/finding.json"))


def test_replay_says_it_still_reproduces(findings):
    code, out = edgediff("replay", str(the_finding(findings)))
    assert code == 1 and out.startswith("still reproduces: mismatch"), out


def test_baseline_then_gate_passes_and_corpus_replays(findings):
    known = findings / "known.toml"
    corpus = findings / "corpus"
    env = {"EDGEDIFF_CORPUS": str(corpus), "HYPOTHESIS_STORAGE_DIRECTORY": str(findings / "hyp")}
    code, out = edgediff("baseline", str(findings / "findings"), "--file", str(known), "--promote", env=env)
    assert code == 0 and "new entr" in out, out
    assert (corpus / the_finding(findings).name / "case.json").exists()
    text = known.read_text()
    assert 'adapter = "planted_swapped_padding"' in text and 'pattern = ["asymmetric padding"]' in text
    code, out = edgediff("gate", "--adapter", "tests.planted:swapped_padding", "--known-failures", str(known),
                         "--findings-dir", str(findings / "gate"), "--max-examples", "40", "--", "-k", "conv2d-",
                         "-rx", env=env)
    assert code == 0, out
    assert "test_corpus_case" in out and "known failure" in out, out
    # without the baseline the corpus case and the property both fail: a new finding
    code, out = edgediff("gate", "--adapter", "tests.planted:swapped_padding", "--known-failures",
                         str(findings / "empty.toml"), "--findings-dir", str(findings / "gate2"),
                         "--max-examples", "10", "--", "-k", "corpus", env=env)
    assert code == 2 and "does not exist" in out          # a missing baseline is a usage error
    (findings / "empty.toml").write_text("")
    code, out = edgediff("gate", "--adapter", "tests.planted:swapped_padding", "--known-failures",
                         str(findings / "empty.toml"), "--findings-dir", str(findings / "gate2"),
                         "--max-examples", "10", "--", "-k", "corpus", env=env)
    assert code == 1 and "1 failed" in out, out


@pytest.mark.parametrize("args, code, message", [
    (["run", "--backend", "nope"], 2, "unknown backend 'nope'; known backends: torch"),
    (["run", "--max-examples", "0"], 2, "--max-examples must be >= 1"),
    (["frobnicate"], 2, "invalid choice"),
    (["replay", "/nonexistent"], 2, "not a finding directory"),
    (["gate", "--backend", "cmsis_nn"], 3, "could not be set up"),
])
def test_cli_errors(args, code, message):
    if args[:3] == ["gate", "--backend", "cmsis_nn"] and "cmsis_nn" in adapters.available()[0]:
        pytest.skip("CMSIS-NN is supplied here (variables or the setup's snapshot build), "
                    "so it can be set up")
    got, out = edgediff(*args)
    assert got == code, out
    assert message in out, out


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_report_lists_every_finding(findings):
    pytest.importorskip("matplotlib", reason="the HTML report draws its plots with matplotlib")
    out_html = findings / "report.html"
    code, out = edgediff("report", str(findings / "findings"), "--out", str(out_html),
                         "--markdown", str(findings / "summary.md"))
    assert code == 0, out
    html = out_html.read_text()
    ids = [p.parent.name for p in (findings / "findings").glob("*/finding.json")]
    assert ids and all(f"id='{i}'" in html for i in ids)
    assert "http://" not in html and "https://" not in html       # opens offline
    assert "| conv2d |" in (findings / "summary.md").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_html_report_renders_in_headless_chromium(findings, tmp_path):
    pytest.importorskip("matplotlib", reason="the HTML report draws its plots with matplotlib")
    out_html = findings / "report-browser.html"
    edgediff("report", str(findings / "findings"), "--out", str(out_html))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--dump-dom", out_html.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    ids = [p.parent.name for p in (findings / "findings").glob("*/finding.json")]
    assert all(i in dom for i in ids)
    assert dom.count("data:image/png;base64") >= 2 + len(ids) - 1
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]


def test_readme_starts_with_two_commands_and_ci_runs_the_second():
    """README opens with the main-job command and the test command; `.ci/run` runs the latter
    verbatim, so CI tests what a user is told to run (profile included)."""
    import re
    readme = (REPO / "README.md").read_text()
    head = readme[:readme.index("\n\n", readme.index("```bash"))]
    commands = re.findall(r"```bash\n(.+?)\n```", head)
    assert len(commands) == 2, head
    assert commands[0].startswith("bash scripts/setup.sh && .venv/bin/edgediff run")
    assert commands[1].startswith("bash scripts/setup.sh && .venv/bin/python -m pytest")
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == [commands[1]], ci


def corrupt_finding(tmp_path, what):
    d = tmp_path / "finding"
    src = REPO / "fixtures" / "corpus" / "ggml-clamp-clamp-mismatch-9d41447bea"
    shutil.copytree(src, d)
    if what == "truncated case.json":
        (d / "case.json").write_text((d / "case.json").read_text()[:25])
    else:
        (d / "inputs.npz").unlink()
    return d


@pytest.mark.parametrize("make, code, message", [
    (lambda t: ["gate", "--backend", "torch", "--findings-dir", str(t / "file")], 2,
     "exists and is not a directory"),
    (lambda t: ["gate", "--backend", "torch", "--html-report", str(t / "file" / "r.html")], 2,
     "--html-report"),
    (lambda t: ["gate", "--adapter", "tests.planted:nonexistent", "--findings-dir", str(t / "f")], 2,
     "has no attribute 'nonexistent'"),
    (lambda t: ["gate", "--backend", "torch", "--known-failures", str(t / "typed.toml"),
                "--findings-dir", str(t / "f")], 2, "'reason' must be a string"),
    (lambda t: ["gate", "--backend", "torch", "--known-failures", str(t / "escape.toml"),
                "--findings-dir", str(t / "f")], 2, "'when' may"),
    (lambda t: ["replay", str(corrupt_finding(t, "truncated case.json"))], 2, "corrupt finding"),
    (lambda t: ["replay", str(corrupt_finding(t, "no inputs.npz"))], 2, "corrupt finding"),
], ids=["findings-dir is a file", "report folder cannot be made", "adapter attribute missing",
        "baseline field of the wrong type", "baseline escape", "truncated case.json",
        "finding without inputs.npz"])
def test_bad_input_exits_2_with_one_line_naming_it_and_writes_nothing(tmp_path, make, code, message):
    (tmp_path / "file").write_text("")
    (tmp_path / "typed.toml").write_text('[[known]]\nadapter = "torch"\nop = "conv2d"\nreason = 5\n')
    (tmp_path / "escape.toml").write_text(
        '[[known]]\nadapter = "torch"\nop = "conv2d"\n'
        'when = "stride.__class__.__base__.__subclasses__() == 1"\n')
    args = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    got, out = edgediff(*args, cwd=tmp_path)
    assert got == code and message in out, out[-2000:]
    assert "Traceback" not in out, out[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a bad invocation wrote files"


def test_a_backend_checkout_that_is_not_one_exits_3(tmp_path):
    got, out = edgediff("gate", "--backend", "executorch_ggml", "--findings-dir", str(tmp_path / "f"),
                        env={"EXECUTORCH_GGML_ROOT": str(tmp_path)})
    assert got == 3 and "not an executorch-ggml checkout" in out, out[-2000:]


def test_outputs_go_where_the_caller_is(tmp_path):
    got, out = edgediff("gate", "--backend", "torch", "--max-examples", "1", "--findings-dir", "f",
                        "--html-report", "r.html", "--", "-k", "clamp-", cwd=tmp_path)
    assert got == 0, out[-2000:]
    assert (tmp_path / "r.html").is_file() and (tmp_path / "f").is_dir(), out[-1000:]


def test_a_pin_that_cannot_be_installed_exits_3(tmp_path):
    got, out = edgediff("gate", "--backend", "litert==9.9.9", "--findings-dir", str(tmp_path / "f"))
    assert got == 3 and "could not be set up" in out and "9.9.9" in out, out[-2000:]


def test_a_report_path_in_a_missing_folder_is_created_not_refused(tmp_path):
    """The README's main command names findings/report.html on a fresh clone, where findings/
    does not exist yet: the folder is made; a folder that cannot be made is a usage error."""
    import argparse
    from edgediff import cli
    args = argparse.Namespace(command="run", findings_dir=str(tmp_path / "f"), known_failures=None,
                              junitxml=None, html_report=str(tmp_path / "new" / "deeper" / "r.html"),
                              backend=None)
    assert cli.resolve_paths(args) is None
    assert (tmp_path / "new" / "deeper").is_dir()
    (tmp_path / "file").write_text("")
    args.html_report = str(tmp_path / "file" / "r.html")
    assert "cannot create" in cli.resolve_paths(args)
