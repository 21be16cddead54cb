#!/bin/sh
# The payband databases and their login users, made once by the postgres image's entrypoint on
# an empty data directory (deploy/compose.yaml mounts this folder at
# /docker-entrypoint-initdb.d). Each database belongs to its own user; passwords come from the
# container's environment (deploy/.env), never from this file.
#
#   payband          payband: warehouse and dbt, Optuna study, audit log owner, monitoring
#   mlflow           mlflow: MLflow tracking and registry
#   lakefs           lakefs: lakeFS metadata
#   dagster          dagster: Dagster runs, events and schedules
#   payband_gateway  may only SET ROLE payband_audit_writer / payband_audit_reader (NOINHERIT)
#
# The audit log's three NOLOGIN roles are made here so that payband_gateway can be granted
# them; `payband-audit migrate` (run as payband) then only grants them their rights.
set -eu

for name in APP_DB_PASSWORD GATEWAY_DB_PASSWORD MLFLOW_DB_PASSWORD LAKEFS_DB_PASSWORD \
    DAGSTER_DB_PASSWORD; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        echo "10-payband.sh: $name is not set (deploy/.env)" >&2
        exit 1
    fi
done

# psql reads the passwords from its environment (\getenv, psql 15+), so none is on a command
# line, and fills :'name' with the quoted value: no password is spliced into SQL.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv app_password APP_DB_PASSWORD
\getenv gateway_password GATEWAY_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv lakefs_password LAKEFS_DB_PASSWORD
\getenv dagster_password DAGSTER_DB_PASSWORD
CREATE ROLE payband LOGIN PASSWORD :'app_password';
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE ROLE lakefs LOGIN PASSWORD :'lakefs_password';
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';

CREATE ROLE payband_audit_writer NOLOGIN;
CREATE ROLE payband_audit_reader NOLOGIN;
CREATE ROLE payband_audit_purger NOLOGIN;
CREATE ROLE payband_gateway LOGIN NOINHERIT PASSWORD :'gateway_password'
    IN ROLE payband_audit_writer, payband_audit_reader;

CREATE DATABASE payband OWNER payband;
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE lakefs OWNER lakefs;
CREATE DATABASE dagster OWNER dagster;

-- Only each database's owner connects (and the gateway to the audit log's database).
REVOKE ALL ON DATABASE payband, mlflow, lakefs, dagster FROM PUBLIC;
GRANT CONNECT ON DATABASE payband TO payband_gateway;
SQL
