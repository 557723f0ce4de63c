"""Scaling out: a shared Redis example database (real redis-server on 127.0.0.1), sharding
with pytest-split, merged reports, and a fuzz campaign that survives SIGTERM."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    if REDIS is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; scripts/setup.sh installs it)")
    redis = pytest.importorskip("redis", reason="the redis Python package is needed (pip install redis)")
    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)
    assert proc.poll() is not None            # the server is stopped afterwards


def run(tmp_path, storage, *args, env=None, background=False):
    e = dict(os.environ, HYPOTHESIS_STORAGE_DIRECTORY=str(tmp_path / storage), **(env or {}))
    e.pop("EDGEDIFF_DB", None) if not (env and "EDGEDIFF_DB" in env) else None
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
           "--findings-dir", str(tmp_path / f"findings-{storage}"), "properties/test_differential.py", *args]
    if background:
        return subprocess.Popen(cmd, cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    p = subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout + p.stderr


PADDING = ["-k", "conv2d-", "--adapter", "tests.planted:swapped_padding"]
CLAMP = ["-k", "clamp-", "--adapter", "tests.planted:clamp_order"]


def test_a_failure_found_by_one_process_is_replayed_by_another(tmp_path, redis_url):
    db = {"EDGEDIFF_DB": redis_url}
    code, out = run(tmp_path, "first", *PADDING, "--max-examples", "60", env=db)
    assert code == 1, out
    # a fresh machine (empty local database) with one example finds it at once, from Redis
    code, out = run(tmp_path, "second", *PADDING, "--max-examples", "1", env=db)
    assert code == 1 and "1 failed" in out, out
    # without the shared database one example does not find it: the replay came from Redis
    code, out = run(tmp_path, "control", *PADDING, "--max-examples", "1")
    assert code == 0, out


def test_concurrent_writers_lose_nothing_and_readonly_writes_nothing(tmp_path, redis_url):
    import redis
    db = {"EDGEDIFF_DB": redis_url}
    procs = [run(tmp_path, "w1", *PADDING, "--max-examples", "60", env=db, background=True),
             run(tmp_path, "w2", *CLAMP, "--max-examples", "60", env=db, background=True)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [1, 1], outs
    both = PADDING[:2] + ["--adapter", "tests.planted:swapped_padding", "--adapter", "tests.planted:clamp_order"]
    both[1] = "conv2d- or clamp-"
    code, out = run(tmp_path, "reader", *both, "--max-examples", "1", env=db)
    assert "2 failed" in out, out              # both writers' failures are there
    client = redis.Redis.from_url(redis_url)
    keys = client.dbsize()
    code, out = run(tmp_path, "ro", "-k", "mean-", "--adapter", "tests.planted:mean_wrong_axis",
                    "--max-examples", "60", env=dict(db, EDGEDIFF_DB_READONLY="1"))
    assert code == 1, out                     # it finds a new failure ...
    assert client.dbsize() == keys            # ... but writes nothing to the shared database


def test_bad_database_url_is_a_usage_error(tmp_path):
    code, out = run(tmp_path, "bad", *PADDING, env={"EDGEDIFF_DB": "mysql://x"})
    assert code == 4 and "EDGEDIFF_DB must be a redis:// URL" in out, out


def test_shards_split_the_tests_and_reports_merge(tmp_path):
    pytest.importorskip("pytest_split", reason="pytest-split is needed for sharding")
    ids = []
    for group in (1, 2):
        code, out = run(tmp_path, f"shard{group}", "--adapter", "tests.planted:correct", "--max-examples", "3",
                        "--splits", "2", "--group", str(group), "--collect-only")
        ids.append({line for line in out.splitlines() if "::" in line})
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    for group in (1, 2):
        run(tmp_path, f"shard{group}", "--adapter", "tests.planted:correct", "--max-examples", "3",
            "--splits", "2", "--group", str(group))
    proc = subprocess.run([sys.executable, "-m", "edgediff", "report", str(tmp_path / "findings-shard1"),
                           str(tmp_path / "findings-shard2"), "--out", str(tmp_path / "merged.html")],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "| conv2d |" in proc.stdout and "| clamp |" in proc.stdout   # ops from both shards


def test_fuzz_campaign_survives_sigterm_and_keeps_findings(tmp_path):
    env = dict(os.environ, HYPOTHESIS_STORAGE_DIRECTORY=str(tmp_path / "hyp"))
    findings = tmp_path / "findings"
    proc = subprocess.Popen([sys.executable, "-m", "edgediff", "fuzz", "--duration", "10m", "-n", "0",
                             "--adapter", "tests.planted:swapped_padding", "--findings-dir", str(findings),
                             "--", "-k", "conv2d- or clamp-", "--progress", "2"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(findings.glob("*/finding.json")):
        time.sleep(1)
    assert list(findings.glob("*/finding.json")), "no finding within 5 minutes"
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "edgediff summary" in out and "examples" in out
    assert "elapsed" in out and "left" in out                       # the progress line
    assert list(findings.glob("*conv2d*/finding.json"))             # nothing lost
