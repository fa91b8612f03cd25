#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 and lets the tests in as `postgres`
# without a password (trust on loopback), installing and starting it where it is missing.
# Safe to run again; does nothing when all is well.
set -euo pipefail

PGHOST=127.0.0.1
PGPORT=5432

can_connect() {
  psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1
}

if command -v psql >/dev/null 2>&1 && can_connect; then
  exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "ensure-postgres: installing PostgreSQL from Debian's packages" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
hba=/etc/postgresql/$version/main/pg_hba.conf
if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
  echo "ensure-postgres: trusting loopback connections in $hba (a test machine)" >&2
  as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
fi

if ! pg_lsclusters -h 2>/dev/null | awk '{print $4}' | grep -q online; then
  echo "ensure-postgres: starting PostgreSQL $version" >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
else
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
fi

for _ in $(seq 1 60); do
  if can_connect; then exit 0; fi
  sleep 0.5
done
echo "ensure-postgres: PostgreSQL does not answer on $PGHOST:$PGPORT" >&2
exit 1
