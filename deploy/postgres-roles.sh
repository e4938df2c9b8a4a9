#!/bin/bash
# PostgreSQL roles of the compose stack, run by the postgres image on its first start
# (/docker-entrypoint-initdb.d) and safe to run again (every statement is idempotent):
#   docker compose exec postgres bash /docker-entrypoint-initdb.d/10-chouette-roles.sh
#
# - chouette: owns the database and runs the migrations (`chouette migrate`, the compose
#   service `migrate`); not a superuser, may create roles (the migrations' group roles).
# - fetcher, trainer, evaluator, api, cli: login roles, each a member of its NOLOGIN group
#   role (shared/privileges.py), with no other power.
# - postgres, the image's superuser, loses its password: only a local shell in this
#   container can use it.
# Passwords come from the environment and reach psql as variables on standard input.
set -euo pipefail

psql=(psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres -tAq)

# A psql meta-command argument holding exactly $1: quoted, ' doubled, \ escaped.
quote() {
    local value=${1//\\/\\\\}
    printf "'%s'" "${value//\'/\'\'}"
}

"${psql[@]}" <<SQL
\set owner_password $(quote "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}")
SELECT format('CREATE ROLE chouette LOGIN NOSUPERUSER CREATEROLE PASSWORD %L', :'owner_password')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chouette') \gexec
ALTER ROLE chouette LOGIN NOSUPERUSER CREATEROLE PASSWORD :'owner_password';
SELECT 'CREATE DATABASE chouette OWNER chouette'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'chouette') \gexec
ALTER DATABASE chouette OWNER TO chouette;
SQL

for pair in fetcher:chouette_fetcher trainer:chouette_trainer evaluator:chouette_evaluator \
            api:chouette_reader cli:chouette_cli; do
    login=${pair%%:*}
    group=${pair#*:}
    var="POSTGRES_${login^^}_PASSWORD"
    password=${!var:?set $var}
    "${psql[@]}" <<SQL
\set login '$login'
\set group '$group'
\set password $(quote "$password")
SELECT format('CREATE ROLE %I NOLOGIN', :'group')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'group') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'login')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'login') \gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'login', :'password') \gexec
SELECT format('GRANT %I TO %I', :'group', :'login') \gexec
SQL
done

# The CLI reads what the reader reads (shared/privileges.py).
"${psql[@]}" -c "GRANT chouette_reader TO chouette_cli"
"${psql[@]}" -c "ALTER ROLE postgres PASSWORD NULL"
