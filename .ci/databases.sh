#!/usr/bin/env bash
# Make sure MariaDB, PostgreSQL and Redis answer on loopback, and that Node is
# there for the test IdP: start them when installed and stopped, install them
# from Debian's packages when missing.
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 60); do up "$1" && return 0; sleep 1; done
  echo "port $1 did not open" >&2
  return 1
}
apt_updated=""
install() {
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! up 3306; then
  [ -x /usr/sbin/mariadbd ] || install mariadb-server
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql --bind-address=127.0.0.1
  wait_port 3306
  # root over TCP with an empty password, as the tests expect.
  mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD(''); \
    CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; \
    GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; CREATE DATABASE IF NOT EXISTS test;" 2>/dev/null || true
fi

if ! up 5432; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then install postgresql; fi
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  if ! grep -q "dirac-rs trust" "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust # dirac-rs trust\nlocal all all trust # dirac-rs trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  wait_port 5432
  su postgres -c "psql -qc \"DO \\\$\\\$ BEGIN CREATE ROLE root SUPERUSER LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \\\$\\\$\"" || true
  su postgres -c "createdb test" 2>/dev/null || true
fi

if ! up 6379; then
  command -v redis-server >/dev/null || install redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379
fi
echo "databases up: mariadb 3306, postgresql 5432, redis 6379"

# Node runs the real OIDC provider of the federation tests (make test-tools).
command -v npm >/dev/null || install nodejs npm
