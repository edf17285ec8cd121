#!/usr/bin/env bash
# The test suite: installs what it needs, makes sure PostgreSQL runs, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
# The browser test drives Debian's Chromium (never a downloaded browser build).
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
VIRTUAL_ENV="$PWD/.venv" .venv/bin/dg check defs >/dev/null  # the code location loads, as dg sees it
exec .venv/bin/python -m pytest -n "${MANGASYNC_TEST_WORKERS:-2}" "$@"
