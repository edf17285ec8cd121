#!/usr/bin/env bash
# Writes requirements.lock: the exact version of every dependency (all extras, test included)
# that scripts/bootstrap.sh and the Dockerfile install from, for Python 3.11 on Linux x86_64.
#   bash scripts/lock.sh                        after a change of pyproject.toml (keeps the rest)
#   bash scripts/lock.sh --upgrade              every package to its newest allowed version
#   bash scripts/lock.sh --upgrade-package X    one package
# Then `bash scripts/test.sh` (it reinstalls from the new lock) and commit the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --custom-compile-command "bash scripts/lock.sh" \
  --quiet -o requirements.lock "$@"
