#!/usr/bin/env bash
# Thin wrapper: python -m phase2_student.ablate (see --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -x "$ROOT/.venv/bin/python" ] || "$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/python" -m phase2_student.ablate "$@"
