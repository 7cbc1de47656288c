#!/usr/bin/env bash
# Remove SalesBot Poller: the service, the program and the wrapper. The configuration,
# the credentials, the database, the system user and the unit's drop-ins (salesbot.service.d)
# stay unless you pass --purge.
#
#   sudo deploy/uninstall.sh [--purge] [--root DIR]
#   sudo deploy/uninstall.sh --instance NAME [--purge] [--root DIR]
#
# With --instance, only salesbot@NAME goes: it is stopped and disabled; --purge also deletes
# /etc/salesbot/NAME (config, credentials), /var/lib/salesbot/NAME (database) and the user
# salesbot-NAME. The program and the template stay for the other instances: once none is
# left, `uninstall.sh` removes them. Without --instance it stops every instance too, and
# refuses --purge while an instance's config is left (purge each with --instance first).
set -euo pipefail

ROOT=${DESTDIR:-}
SYSTEM=1
PURGE=0
INSTANCE=""
ONE=0  # --instance given (an empty name is refused, not taken for the single install)
[ -n "$ROOT" ] && SYSTEM=0
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) PURGE=1; shift ;;
    --instance) INSTANCE=$2; ONE=1; shift 2 ;;
    --root) ROOT=$2; SYSTEM=0; shift 2 ;;
    --no-system) SYSTEM=0; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=${ROOT%/}
say() { printf 'uninstall.sh: %s\n' "$*"; }
fail() { printf 'uninstall.sh: %s\n' "$*" >&2; exit 1; }
instances() { for c in "$ROOT"/etc/salesbot/*/config.toml; do [ -e "$c" ] && basename "$(dirname "$c")"; done; return 0; }

if [ "$SYSTEM" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "uninstall.sh: run as root (sudo)" >&2; exit 1; }
fi

if [ "$ONE" = 1 ]; then
  [[ $INSTANCE =~ ^[a-z0-9][a-z0-9-]{0,22}$ ]] || fail "bad instance name '$INSTANCE'"
  N=$INSTANCE
  if [ "$SYSTEM" = 1 ]; then
    systemctl disable --now "salesbot@$N" 2>/dev/null || true
    say "stopped and disabled salesbot@$N"
  fi
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ROOT/etc/salesbot/$N" "$ROOT/var/lib/salesbot/$N" "$ROOT/etc/systemd/system/salesbot@$N.service.d"
    if [ "$SYSTEM" = 1 ]; then
      systemctl daemon-reload
      if getent passwd "salesbot-$N" >/dev/null; then
        userdel "salesbot-$N"
      fi
    fi
    say "purged /etc/salesbot/$N (config, credentials), /var/lib/salesbot/$N (database) and user salesbot-$N"
  else
    say "kept /etc/salesbot/$N and /var/lib/salesbot/$N (pass --purge to delete them)"
  fi
  left=$(instances | paste -sd ' ' -)
  if [ -n "$left" ]; then
    say "instances left: $left"
  else
    say "no instance left: deploy/uninstall.sh removes the program and the template"
  fi
  exit 0
fi

left=$(instances | paste -sd ' ' -)
if [ "$PURGE" = 1 ] && [ -n "$left" ]; then
  fail "--purge would delete the instances' data ($left): purge each with --instance NAME --purge first"
fi
if [ "$SYSTEM" = 1 ]; then
  systemctl disable --now salesbot 2>/dev/null || true
  for n in $left; do
    systemctl disable --now "salesbot@$n" 2>/dev/null || true
  done
fi
rm -f "$ROOT/etc/systemd/system/salesbot.service" "$ROOT/etc/systemd/system/salesbot@.service" \
  "$ROOT/usr/local/sbin/salesbot-poller"
rm -rf "$ROOT/opt/salesbot"
[ "$SYSTEM" = 1 ] && systemctl daemon-reload
say "removed the service and /opt/salesbot"

if [ "$PURGE" = 1 ]; then
  # The admin's drop-ins (`systemctl edit salesbot`) go too: a reinstall starts from the unit alone.
  rm -rf "$ROOT/etc/salesbot" "$ROOT/var/lib/salesbot" "$ROOT/etc/systemd/system/salesbot.service.d"
  if [ "$SYSTEM" = 1 ] && getent passwd salesbot >/dev/null; then
    userdel salesbot
  fi
  say "purged /etc/salesbot (config, credentials), /var/lib/salesbot (database) and salesbot.service.d (drop-ins)"
else
  say "kept /etc/salesbot and /var/lib/salesbot (pass --purge to delete them)"
fi
