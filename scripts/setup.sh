#!/usr/bin/env bash
# Create .venv (if missing) and install FrozenFlow with its dependencies.
# torch goes in first: torch==2.13.0 is the CPU wheel; a user who already installed a (GPU) torch
# into .venv keeps it, because the project only asks for a range their build satisfies.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.frozenflow-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ "${1:-}" != "--force" ]; then
  exit 0
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch (CPU wheel)"
  "$VENV/bin/python" -m pip install --quiet "torch==${FROZENFLOW_TORCH_VERSION:-2.13.0}"
fi
echo "[setup] installing frozenflow and dependencies (first time: a minute or two)"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
"$VENV/bin/python" -c "import torch, ray, zarr, astra; print(f'[setup] torch {torch.__version__}, ray {ray.__version__}, zarr {zarr.__version__}, astra {astra.__version__}')"
echo "$want" > "$STAMP"
