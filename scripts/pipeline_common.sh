# Sourced by the pipeline scripts (demo.sh, headline.sh): set-up if needed, then ROOT, PY, FF and a
# timed stage header.
ROOT="$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
FF="$ROOT/.venv/bin/frozenflow"
t0=$(date +%s)
stage() { echo; echo "== $1  [$(( $(date +%s) - t0 )) s]"; }
