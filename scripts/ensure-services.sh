#!/usr/bin/env bash
# Start PostgreSQL and Redis on 127.0.0.1 if they do not answer (this machine kind starts
# them before a session; a restarted machine may not have them). Never fails the build:
# the `services` tests themselves fail under CI=true when a server is missing.
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! up 5432 && command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "starting PostgreSQL"; pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! up 6379 && command -v redis-server >/dev/null 2>&1; then
  echo "starting Redis"; mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
exit 0
