#!/usr/bin/env bash
# Runs once, when the PostgreSQL volume is first created: the MangaHub database lives beside
# Dagster's (both keep an `alembic_version` table, so they cannot share one database).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE DATABASE "${MANGAHUB_DB:-mangahub}" OWNER "$POSTGRES_USER";
SQL
