#!/usr/bin/env bash
# Thin wrapper: frozenflow evaluate (see --help). Sets up .venv first if needed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/frozenflow" evaluate "$@"
