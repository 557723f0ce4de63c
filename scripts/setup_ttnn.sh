#!/usr/bin/env bash
# Set up the TT-NN environment in .venvs/ttnn-3.12 (idempotent: a second run only checks).
#
# ttnn 0.81.1 ships wheels for CPython 3.10 and 3.12 only (manylinux_2_34, ~103 MB) and needs
# numpy<2, so it cannot live in edgediff's Python 3.11 / numpy 2 .venv. The ttnn adapter
# (adapters/ttnn.py) runs in a worker process under this environment's interpreter; the
# worker imports only numpy, the adapter and edgediff's wire format (no torch needed).
#
# Python 3.12 comes from pyenv (`pyenv root`/versions/3.12.x), or from EDGEDIFF_TTNN_PYTHON.
# Exit status: 0 ready, 3 no usable Python 3.12, 4 pip install failed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EDGEDIFF_VENVS:-.venvs}/ttnn-3.12
STAMP=$VENV/.edgediff-ready
REQUIREMENTS=("ttnn==0.81.1" "numpy<2")
want="${REQUIREMENTS[*]}"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  echo "setup_ttnn: $VENV is up to date ($want)"
  exit 0
fi

PY=${EDGEDIFF_TTNN_PYTHON:-}
if [ -z "$PY" ]; then
  if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root)
  else
    root=${PYENV_ROOT:-$HOME/.pyenv}
  fi
  # the newest installed 3.12.x
  PY=$(ls -d "$root"/versions/3.12.*/bin/python3.12 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [ -z "$PY" ] || ! "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
  echo "setup_ttnn: no Python 3.12 found (looked for pyenv's \$(pyenv root)/versions/3.12.*/bin/python3.12)." >&2
  echo "setup_ttnn: ttnn 0.81.1 has wheels for CPython 3.10/3.12 only. Install one with" >&2
  echo "setup_ttnn:   pyenv install 3.12    or point EDGEDIFF_TTNN_PYTHON at a python3.12 binary." >&2
  exit 3
fi

echo "setup_ttnn: creating $VENV with $PY ($("$PY" -V 2>&1))"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
echo "setup_ttnn: installing $want (~103 MB wheel, ~1 min)"
if ! $PIP install "${REQUIREMENTS[@]}"; then
  echo "setup_ttnn: pip install failed; the ttnn adapter will report itself unavailable" >&2
  exit 4
fi
# a quick check: ttnn imports (no device or cluster descriptor needed for the import itself)
scratch=$(mktemp -d)
if (cd "$scratch" && "$OLDPWD/$VENV/bin/python" -c 'import ttnn, numpy; print("setup_ttnn: ttnn", ttnn.__version__ if hasattr(ttnn, "__version__") else "?", "numpy", numpy.__version__)'); then
  rm -rf "$scratch"
else
  rm -rf "$scratch"
  echo "setup_ttnn: ttnn installed but does not import" >&2
  exit 4
fi
echo "$want" > "$STAMP"
echo "setup_ttnn: done"
