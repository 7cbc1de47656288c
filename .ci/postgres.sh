#!/usr/bin/env bash
# A PostgreSQL server for the tests, on 127.0.0.1, from Debian's packages: installs them when
# missing, starts the first cluster (creating one when there is none) with pg_ctlcluster (no
# systemd needed), and makes a role and database `salesbot_test`. The role may create
# databases: each PostgreSQL test gets a fresh one of its own and drops it after.
#
# Run as root. Prints the URL for SALESBOT_TEST_POSTGRES on stdout (everything else goes to
# stderr), so:
#   export SALESBOT_TEST_POSTGRES="$(sudo .ci/postgres.sh)"
#   .venv/bin/python -m pytest -q -m postgres
# Idempotent: a second run starts nothing new and prints the same URL. The role's password is
# made once, at random, and kept in /var/lib/postgresql/salesbot_test.password (root, 0600):
# it is a throwaway test account that listens on loopback only.
set -euo pipefail

ROLE=salesbot_test
PASSWORD_FILE=/var/lib/postgresql/salesbot_test.password

if [ "$(id -u)" -ne 0 ]; then
  echo "postgres.sh: run as root (it installs and starts PostgreSQL as the postgres user)" >&2
  exit 1
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then  # the server, not just the client
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

first_cluster() { pg_lsclusters --no-header | head -n 1; }
if [ -z "$(first_cluster)" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  pg_createcluster "$version" main >&2
fi
read -r version cluster port status _ < <(first_cluster)
if [ "$status" != "online" ]; then
  # Without systemd as PID 1 (CI, containers) pg_ctlcluster runs pg_ctl itself as postgres.
  pg_ctlcluster "$version" "$cluster" start >&2
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 0.5
done
pg_isready -h 127.0.0.1 -p "$port" >&2

if [ ! -s "$PASSWORD_FILE" ]; then
  (umask 077 && head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PASSWORD_FILE")
fi
password=$(cat "$PASSWORD_FILE")

# psql reads the script on stdin: only there does :'password' quote the variable.
runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres -v role="$ROLE" -v password="$password" >&2 <<'SQL'
SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" LOGIN CREATEDB PASSWORD :'password';
-- DROP DATABASE ... WITH (FORCE) also ends an autovacuum worker busy in the test's database:
-- that takes pg_signal_backend, or the drop fails now and then.
GRANT pg_signal_backend TO :"role";
SELECT format('CREATE DATABASE %I OWNER %I', :'role', :'role')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'role') \gexec
SQL

echo "postgresql://$ROLE:$password@127.0.0.1:$port/$ROLE"
