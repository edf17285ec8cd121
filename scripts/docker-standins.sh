#!/usr/bin/env bash
# Local stand-ins for the two public images docker-compose.yml names, for a machine that reaches
# Debian's mirror but no container registry. Each is built only when the real image is absent:
#   python:3.11-slim  Debian bookworm's Python 3.11 with pip; carries this machine's CA bundle
#                     and pip settings, so `pip install` in `docker build` goes where the host's does.
#   postgres:16       Debian bookworm's PostgreSQL 15 behind an entrypoint that keeps the official
#                     image's contract (POSTGRES_USER/PASSWORD/DB, UTF8 initdb on an empty
#                     volume, /docker-entrypoint-initdb.d, pg_isready).
# Both carry the label org.mangasync.stand-in=true. Needs root (debootstrap) and a running engine.
# The mirror is the first Debian URI of this machine's apt sources (DEBIAN_MIRROR overrides it).
set -euo pipefail
trap 'echo "docker-standins: failed (line $LINENO): $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."

mirror=${DEBIAN_MIRROR:-$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
  /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | awk "NR == 1 {print \$2}" || true)}
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

have() { docker image inspect "$1" >/dev/null 2>&1; }

# A bookworm root file system with the given packages, imported as image $1.
standin() {
  local image=$1 packages=$2 setup=$3; shift 3
  local root="$work/${image%%:*}"
  echo "docker-standins: building $image from Debian bookworm ($mirror)" >&2
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$work/log" 2>&1 \
    || { tail -20 "$work/log" >&2; return 1; }
  "$setup" "$root"
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc \
    "$root"/usr/share/man "$root"/usr/share/locale
  tar -C "$root" -c . | docker import \
    --change 'LABEL org.mangasync.stand-in=true' \
    --change "LABEL org.mangasync.stand-in.source=\"Debian bookworm packages from $mirror\"" \
    "$@" - "$image" >/dev/null
}

python_setup() {
  local root=$1
  ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
  # The official image's pip installs system-wide; Debian's refuses without this marker gone.
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  # The host's pip settings that reach an index from inside a container (local paths do not).
  {
    echo "[global]"
    echo "cert = /etc/ssl/certs/ca-certificates.crt"
    local key value
    for key in index-url trusted-host timeout; do
      value=$(python3 -m pip config get "global.$key" 2>/dev/null || true)
      if [ -n "$value" ] && [[ "$value" != file:* ]]; then echo "$key = $value"; fi
    done
  } >"$root/etc/pip.conf"
}

postgres_setup() {
  local root=$1
  install -m 0755 docker/standin/postgres-entrypoint.sh "$root/usr/local/bin/docker-entrypoint.sh"
  # Debian's package made a cluster of its own at install; the entrypoint makes the one used.
  rm -rf "$root"/var/lib/postgresql/15 "$root"/etc/postgresql/15
  mkdir -p "$root/docker-entrypoint-initdb.d" "$root/var/lib/postgresql/data" \
    "$root/var/run/postgresql"
  chroot "$root" chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
}

if ! have python:3.11-slim; then
  standin python:3.11-slim python3,python3-pip,python3-venv,ca-certificates python_setup \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]'
fi
if ! have postgres:16; then
  standin postgres:16 postgresql-15 postgres_setup \
    --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PGDATA=/var/lib/postgresql/data' --change 'ENV LANG=C.UTF-8' \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' --change 'CMD ["postgres"]' \
    --change 'EXPOSE 5432'
fi
