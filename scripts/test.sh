#!/usr/bin/env bash
# Set up a virtual environment (once) and run the test suite: the README's test command.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${GPUILLUM_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e ".[test]"
if [ -z "${GPUILLUM_DATA:-}" ] && [ -d ../shared/data ]; then
    export GPUILLUM_DATA="$(cd ../shared/data && pwd)"
fi
exec "$VENV/bin/python" -m pytest "$@"
