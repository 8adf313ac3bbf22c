#!/usr/bin/env bash
# The whole test run: install, start local services, PostGIS when missing, then pytest.
set -eu
cd "$(dirname "$0")/.."
if ! dpkg -s postgresql-15-postgis-3 >/dev/null 2>&1 && command -v apt-get >/dev/null; then
  echo "installing PostGIS (postgresql-15-postgis-3)"
  (apt-get install -y -q postgresql-15-postgis-3 >/dev/null 2>&1 ||
   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql-15-postgis-3 >/dev/null 2>&1)) ||
    echo "PostGIS could not be installed; PostgreSQL tests use the bounding-box fallback" >&2
fi
bash scripts/install.sh test
bash scripts/services.sh
exec .venv/bin/python -m pytest "$@"
