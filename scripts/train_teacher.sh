#!/usr/bin/env bash
# Train (or with --tune, tune) the attenuation teacher. See: scripts/train_teacher.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -x "$ROOT/.venv/bin/python" ] || "$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/python" -m phase1_teacher.train "$@"
