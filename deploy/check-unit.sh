#!/usr/bin/env bash
# Check salesbot.service and the template salesbot@.service with systemd-analyze: `verify`
# must print nothing, and `security --offline=true` must rate each at exposure MAX_EXPOSURE
# (2.5) or lower. The template is checked as an instance of it, salesbot@demo.service.
#
#   deploy/check-unit.sh [ROOT]
#
# ROOT is an install made by `install.sh --root ROOT` (with or without --instance): the units
# it holds and their ExecStart program are checked. Without ROOT the repository's units are
# checked, with a stand-in program at the ExecStart path (tests/test_deploy.py checks that
# install.sh puts the real one there).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
MAX=${MAX_EXPOSURE:-2.5}
command -v systemd-analyze >/dev/null || { echo "check-unit.sh: systemd-analyze not found (apt-get install systemd)" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -n "${1:-}" ]; then
  ROOT=$(cd "$1" && pwd)
else
  ROOT=$WORK/root
  install -D -m 0644 "$SRC/salesbot.service" "$ROOT/etc/systemd/system/salesbot.service"
  install -D -m 0644 "$SRC/deploy/salesbot@.service" "$ROOT/etc/systemd/system/salesbot@.service"
fi
UNITS=$ROOT/etc/systemd/system
# unit name to check, its file
checks=()
[ -e "$UNITS/salesbot.service" ] && checks+=(salesbot.service "$UNITS/salesbot.service")
if [ -e "$UNITS/salesbot@.service" ]; then
  # `security` names an instance after its file: a copy named as one instance stands for them all.
  cp "$UNITS/salesbot@.service" "$WORK/salesbot@demo.service"
  checks+=(salesbot@demo.service "$WORK/salesbot@demo.service")
fi
if [ ${#checks[@]} = 0 ]; then
  echo "check-unit.sh: neither salesbot.service nor salesbot@.service in $UNITS" >&2
  exit 1
fi
if [ -z "${1:-}" ]; then
  EXEC=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$UNITS/salesbot.service")
  install -D -m 0755 /dev/null "$ROOT$EXEC"
fi
# `verify --root` resolves every unit under ROOT: give it the system's targets.
for units in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$units" ] && [ ! -e "$ROOT/usr/lib/systemd/system/sysinit.target" ]; then
    mkdir -p "$ROOT/usr/lib/systemd"
    cp -a "$units" "$ROOT/usr/lib/systemd/"
  fi
done

set -- "${checks[@]}"
while [ $# -gt 0 ]; do
  name=$1 file=$2
  shift 2
  if ! out=$(systemd-analyze verify --root="$ROOT" "$name" 2>&1) || [ -n "$out" ]; then
    printf 'check-unit.sh: systemd-analyze verify %s failed:\n%s\n' "$name" "$out" >&2
    exit 1
  fi
  echo "systemd-analyze verify $name: ok"

  report=$(systemd-analyze security --offline=true "$file" 2>&1) || true
  line=$(printf '%s\n' "$report" | grep 'Overall exposure level' || true)
  score=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9][0-9.]*\).*/\1/p')
  if [ -z "$score" ]; then
    printf 'check-unit.sh: no exposure level in the security report of %s:\n%s\n' "$name" "$report" >&2
    exit 1
  fi
  echo "systemd-analyze security: ${line#*→ }"
  if ! awk -v s="$score" -v m="$MAX" 'BEGIN { exit !(s <= m) }'; then
    printf '%s\n' "$report" | grep '✗' >&2
    echo "check-unit.sh: exposure of $name $score is over $MAX" >&2
    exit 1
  fi
done
