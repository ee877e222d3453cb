#!/usr/bin/env bash
# Set up if needed, then run the test suite. Extra arguments go to pytest (e.g. -m slow, -k projector).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
