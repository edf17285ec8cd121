#!/usr/bin/env bash
# The run command: sets up a fresh clone (virtual environment, install, MangaHub schema) and
# starts the whole system on embedded defaults until Ctrl-C. Options go to
# `python -m mangasync_pipeline.ops.run` (--dagster-host, --dagster-port).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/mangasync migrate
exec .venv/bin/python -m mangasync_pipeline.ops.run "$@"
