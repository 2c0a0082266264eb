#!/bin/sh
# First start of the postgres container: Dagster's run/event/schedule storage gets its own
# database next to the funnel's (DAGSTER_PG_DB, default `dagster`).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
SELECT 'CREATE DATABASE "${DAGSTER_PG_DB:-dagster}"'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${DAGSTER_PG_DB:-dagster}')\gexec
SQL
