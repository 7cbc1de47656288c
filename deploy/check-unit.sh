#!/usr/bin/env bash
# Check salesbot.service with systemd-analyze: `verify` must print nothing, and
# `security --offline=true` must rate it at exposure MAX_EXPOSURE (2.5) or lower.
#
#   deploy/check-unit.sh [ROOT]
#
# ROOT is an install made by `install.sh --root ROOT`: its unit and its ExecStart program
# are checked. Without ROOT the repository's unit is checked, with a stand-in program at the
# ExecStart path (tests/test_deploy.py checks that install.sh puts the real one there).
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
fi
UNIT=$ROOT/etc/systemd/system/salesbot.service
EXEC=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$UNIT")
if [ -z "${1:-}" ]; then
  install -D -m 0755 /dev/null "$ROOT$EXEC"
fi
# `verify --root` resolves every unit under ROOT: give it the system's targets.
for units in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$units" ] && [ ! -e "$ROOT/usr/lib/systemd/system/sysinit.target" ]; then
    mkdir -p "$ROOT/usr/lib/systemd"
    cp -a "$units" "$ROOT/usr/lib/systemd/"
  fi
done

if ! out=$(systemd-analyze verify --root="$ROOT" salesbot.service 2>&1) || [ -n "$out" ]; then
  printf 'check-unit.sh: systemd-analyze verify failed:\n%s\n' "$out" >&2
  exit 1
fi
echo "systemd-analyze verify: ok"

report=$(systemd-analyze security --offline=true "$UNIT" 2>&1) || true
line=$(printf '%s\n' "$report" | grep 'Overall exposure level' || true)
score=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9][0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
  printf 'check-unit.sh: no exposure level in the security report:\n%s\n' "$report" >&2
  exit 1
fi
echo "systemd-analyze security: ${line#*→ }"
if ! awk -v s="$score" -v m="$MAX" 'BEGIN { exit !(s <= m) }'; then
  printf '%s\n' "$report" | grep '✗' >&2
  echo "check-unit.sh: exposure $score is over $MAX" >&2
  exit 1
fi
