#!/usr/bin/env bash
# Set up edgediff's virtual environment in .venv (idempotent: a second run only checks).
#
# - Python 3.11 venv with the project and every backend that installs from PyPI here:
#   torch 2.13.0 (pinned in the same pip command, so pip never picks a CUDA build),
#   ExecuTorch 1.5.1 (XNNPACK + portable kernels), ggml-python 0.0.45 (builds ggml 0.15.3
#   from source with cmake, portable: GGML_NATIVE=OFF), ai-edge-litert 2.3.0.
# - Backends built from source (executorch-ggml): scripts/snapshots.py unpacks and builds the
#   snapshots of ../shared/third_party/ when present (outside this repository, in the edgediff
#   cache), so the tests run them; a user points the adapters at their own checkouts instead.
# - A backend that fails to install is reported and skipped: its adapter then says
#   "unavailable" with the reason and its tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${EDGEDIFF_PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.edgediff-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

snapshots() {
  # Backends no registry ships (executorch-ggml, ...) are built from source: from the user's
  # checkout when its variable is set, else from ../shared/third_party/ when it is present.
  # Quick when already built (a content-keyed cache outside this repository).
  $VENV/bin/python scripts/snapshots.py || echo "setup: WARNING a source snapshot did not build; its adapter will report itself unavailable"
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: .venv is up to date"
  snapshots
  exit 0
fi
command -v "$PY" >/dev/null || { echo "setup: $PY not found (set EDGEDIFF_PYTHON)"; exit 3; }
[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip >/dev/null
echo "setup: installing edgediff with torch==2.13.0, executorch==1.5.1, ai-edge-litert==2.3.0"
$PIP install "torch==2.13.0" -e ".[torch,xnnpack,litert,report,dev,scale,cmsis_nn,cortex_m]"
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's chromium (headless browser test of the HTML report)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: WARNING chromium not installed; the browser test will skip"
fi
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's redis-server (shared example database tests)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
    || echo "setup: WARNING redis-server not installed; the Redis database tests will skip"
fi
echo "setup: TT-NN environment (Python 3.12, ttnn==0.81.1, numpy<2) in .venvs/ttnn-3.12"
bash scripts/setup_ttnn.sh || echo "setup: WARNING the TT-NN environment could not be built; ttnn tests will skip with the reason"
echo "setup: installing ggml-python==0.0.45 (compiles ggml, ~1-2 min the first time)"
if $PIP install "torch==2.13.0" "ggml-python==0.0.45" --config-settings=cmake.define.GGML_NATIVE=OFF; then
  echo "$want" > "$STAMP"       # only a complete setup is remembered; otherwise retry next time
else
  echo "setup: WARNING ggml-python did not build; the ggml adapter will report itself unavailable"
fi
snapshots
echo "setup: done"
