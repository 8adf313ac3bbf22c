#!/usr/bin/env bash
# Create .venv and install Urbanhub into it (with test tools when given "test").
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null || true
if [ "${1:-}" = "test" ]; then
  .venv/bin/python -m pip install --quiet -e '.[test]'
  # An unchanged NGSI-LD client library for the compatibility tests (see pyproject.toml).
  .venv/bin/python -m pip install --quiet --no-deps "ngsildclient==0.5.2"
else
  .venv/bin/python -m pip install --quiet -e .
fi
