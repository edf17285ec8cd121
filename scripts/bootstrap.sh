#!/usr/bin/env bash
# Creates .venv and installs mangasync into it at the exact versions of requirements.lock (once;
# again when pyproject.toml or the lock changes). `bash scripts/lock.sh` rewrites the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.mangasync-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet --constraint requirements.lock -e '.[test]'
  touch "$stamp"
fi
