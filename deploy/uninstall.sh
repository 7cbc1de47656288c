#!/usr/bin/env bash
# Remove SalesBot Poller: the service, the program and the wrapper. The configuration,
# the credentials, the database and the system user stay unless you pass --purge.
#
#   sudo deploy/uninstall.sh [--purge] [--root DIR]
set -euo pipefail

ROOT=${DESTDIR:-}
SYSTEM=1
PURGE=0
[ -n "$ROOT" ] && SYSTEM=0
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) PURGE=1; shift ;;
    --root) ROOT=$2; SYSTEM=0; shift 2 ;;
    --no-system) SYSTEM=0; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=${ROOT%/}
say() { printf 'uninstall.sh: %s\n' "$*"; }

if [ "$SYSTEM" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "uninstall.sh: run as root (sudo)" >&2; exit 1; }
  systemctl disable --now salesbot 2>/dev/null || true
fi
rm -f "$ROOT/etc/systemd/system/salesbot.service" "$ROOT/usr/local/sbin/salesbot-poller"
rm -rf "$ROOT/opt/salesbot"
[ "$SYSTEM" = 1 ] && systemctl daemon-reload
say "removed the service and /opt/salesbot"

if [ "$PURGE" = 1 ]; then
  rm -rf "$ROOT/etc/salesbot" "$ROOT/var/lib/salesbot"
  if [ "$SYSTEM" = 1 ] && getent passwd salesbot >/dev/null; then
    userdel salesbot
  fi
  say "purged /etc/salesbot (config, credentials) and /var/lib/salesbot (database)"
else
  say "kept /etc/salesbot and /var/lib/salesbot (pass --purge to delete them)"
fi
