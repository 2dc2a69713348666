#!/bin/bash
# Runs once, on an empty data directory (docker-entrypoint-initdb.d), as the
# postgres superuser: one role and one database per service, each owning its
# own database (ARCHITECTURE.md "Storage": each service has its own database).
# Local compose only; production PostgreSQL is managed and provisioned out of band.
set -euo pipefail
: "${ADSMON_DB_PASSWORD:?ADSMON_DB_PASSWORD must be set}"
for db in connects ads billing; do
  # The password travels on stdin, never in argv.
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
SELECT 'CREATE ROLE $db LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$db') \gexec
ALTER ROLE $db WITH LOGIN NOSUPERUSER PASSWORD '$ADSMON_DB_PASSWORD';
SELECT 'CREATE DATABASE $db OWNER $db' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$db') \gexec
REVOKE ALL ON DATABASE $db FROM PUBLIC;
SQL
done
