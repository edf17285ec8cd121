#!/usr/bin/env bash
# The test suite: installs what it needs, makes sure PostgreSQL runs, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
# The browser test drives Debian's Chromium (never a downloaded browser build). Installing it
# needs root; anyone else is told the one command to run.
if [ ! -x "${MANGASYNC_CHROMIUM:-/usr/bin/chromium}" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test.sh: the browser test needs Debian's Chromium: sudo apt-get install -y chromium" >&2
  fi
fi
# The alert rules are checked and unit-tested with promtool, from Debian's prometheus package.
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends prometheus >/dev/null
  else
    echo "test.sh: the alert-rule test needs promtool: sudo apt-get install -y prometheus" >&2
  fi
fi
# The live deployment test (test_ops_compose_live.py) needs Docker, and debootstrap where the
# base images must be built locally. Installed here, once, before the workers start (apt-get
# takes a lock); the test itself starts the engine if it is not running and stops it after.
if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null \
    || ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
  else
    echo "test.sh: the live compose test needs Docker: sudo apt-get install -y docker.io debootstrap" >&2
  fi
fi
# The suite starts hundreds of Python processes (workers, CLIs, Dagster code servers and run
# workers); with bytecode caching off (PYTHONDONTWRITEBYTECODE, set on some machines) each
# recompiles the project and pytest re-rewrites the asserts of every plugin's modules, about
# 3 s of CPU per worker before its first test. The caches go to git-ignored __pycache__/.
unset PYTHONDONTWRITEBYTECODE
# Six workers on two cores: most tests wait (sockets, subprocesses, timeouts), so more workers
# than cores finish sooner; MANGASYNC_TEST_WORKERS overrides it. One test handed out at a time:
# the long tests (run first, see conftest.py) spread over the workers instead of all going to
# the first in one batch.
exec .venv/bin/python -m pytest -n "${MANGASYNC_TEST_WORKERS:-6}" --maxschedchunk 1 "$@"
