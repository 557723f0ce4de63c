"""Backend version pinning: NAME==VERSION runs in its own environment through the worker,
beside the current version in-process, and findings name the right version."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import adapters
from edgediff.pinning import load_pinned, split_pin
from properties.ops import OPS

OLD = "2.2.0"


def test_split_pin():
    assert split_pin("litert==2.2.0") == ("litert", "2.2.0")
    assert split_pin("litert") == ("litert", None)
    with pytest.raises(adapters.UsageError, match="missing version"):
        split_pin("litert==")


def test_backend_without_a_package_cannot_be_pinned():
    with pytest.raises(adapters.UsageError, match="cannot be pinned"):
        load_pinned("torch==2.13.0", OPS)


@pytest.mark.skipif(os.environ.get("EDGEDIFF_SKIP_NETWORK_INSTALLS") == "1",
                    reason="EDGEDIFF_SKIP_NETWORK_INSTALLS=1: no new environments")
def test_pinned_litert_runs_in_its_own_environment_beside_the_current_one(tmp_path, monkeypatch):
    try:
        current = adapters.load("litert")
    except adapters.AdapterUnavailable as exc:
        pytest.skip(str(exc))
    pinned = load_pinned(f"litert=={OLD}", OPS)
    try:
        assert pinned.name == f"litert=={OLD}" and OLD in pinned.version
        assert current.version != pinned.version and not getattr(current, "isolated", False)
        assert Path(pinned.worker_python).parts[-3].startswith(f"litert-{OLD}")
        import numpy as np
        from edgediff.case import Case
        from edgediff.findings import FindingStore
        from edgediff.runner import run_case
        from properties.ops import conv_pattern
        x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        case = Case("conv2d", {"x": x, "w": np.ones((1, 1, 2, 2), np.float32)},
                    {"stride": 1, "padding": 0, "dilation": 1, "groups": 1})
        out = run_case(case, pinned, "builtin_ref", OPS["conv2d"])
        assert out.kind == "pass" and out.adapter == f"litert=={OLD}" and OLD in out.version
        out.kind = "mismatch"                                   # store it as a finding
        d, _ = FindingStore(tmp_path).write(out, conv_pattern(case), None)
        import json
        rec = json.loads((d / "finding.json").read_text())
        assert rec["adapter"] == f"litert=={OLD}" and OLD in rec["version"]
    finally:
        pinned.close()
