#!/usr/bin/env bash
# Installs and starts what the integration tests talk to, when it is missing: Debian's
# Prometheus and monitoring plugins, zsh and fish, Chromium, and a PostgreSQL and a Redis server on
# 127.0.0.1.
# Idempotent and quiet when everything is there; tests skip (saying why) what it could not set up.
set -uo pipefail

say() { echo "setup-services: $*" >&2; }

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {
  can_install || { say "not root or no apt-get: cannot install $*"; return 1; }
  if [ -z "${_apt_updated:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    _apt_updated=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Debian may start freshly installed services on its own; the tests start their own copies.
command -v prometheus >/dev/null || apt_install prometheus
command -v prometheus-alertmanager >/dev/null || apt_install prometheus-alertmanager
[ -x /usr/lib/nagios/plugins/check_dummy ] || apt_install monitoring-plugins-basic
command -v systemd-analyze >/dev/null || apt_install systemd
# The shells whose completion scripts the tests parse (bash is there already).
command -v zsh >/dev/null || apt_install zsh
command -v fish >/dev/null || apt_install fish
# The browser the console's tests drive (tests/browser), launched by path: never a download.
[ -x /usr/bin/chromium ] || apt_install chromium

# PostgreSQL on 127.0.0.1:5432 with trust auth for local tests.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
  if command -v pg_ctlcluster >/dev/null; then
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    if [ -n "$version" ] && ! grep -q "runbookd tests" "$hba" 2>/dev/null; then
      sed -i '1i host all all 127.0.0.1/32 trust  # runbookd tests\nhost all all ::1/128 trust  # runbookd tests' "$hba"
    fi
    [ -n "$version" ] && pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null
    for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    su postgres -c "psql -qc \"DO \\\$\\\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='root') THEN CREATE ROLE root SUPERUSER LOGIN; END IF; END\\\$\\\$\"" >/dev/null 2>&1 || true
  fi
  pg_isready -q -h 127.0.0.1 -p 5432 || say "PostgreSQL is not running: its tests will be skipped"
fi

# Redis on 127.0.0.1:6379, keeping nothing on disk.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  command -v redis-server >/dev/null || apt_install redis-server
  if command -v redis-server >/dev/null; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null
    for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || say "Redis is not running: its tests will be skipped"
fi
exit 0
