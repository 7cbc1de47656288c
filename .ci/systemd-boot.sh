#!/usr/bin/env bash
# The boot test: salesbot.service under a real systemd. Boots a minimal Debian root (built once
# with debootstrap, cached) as a container with systemd-nspawn, installs the project there with
# deploy/install.sh from wheels built on this host (the container has no network but its own
# loopback), points the config at the package's sandbox servers started inside, starts the
# service and checks it, one `PASS name` / `FAIL name: why` line per check.
#
#   sudo bash .ci/systemd-boot.sh
#
# Env: SALESBOT_BOOT_CACHE (default /var/cache/salesbot-boot) holds the Debian root; PYTHON
# (default: the repo's .venv/bin/python, else python3, 3.11 like Debian 12's) builds the wheels.
# Exit 0 when every check passed, 1 otherwise or when the container cannot boot (one line why).
set -euo pipefail

T0=$(date +%s)
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SALESBOT_BOOT_CACHE:-/var/cache/salesbot-boot}
BASE=$CACHE/root
SUITE=bookworm
MIRROR=${SALESBOT_BOOT_MIRROR:-http://deb.debian.org/debian}
WORK=""
NSPAWN_PID=""
P1=""
FAILED=0
PASSED=0

say() { printf 'systemd-boot: %s\n' "$*" >&2; }
die() { printf 'systemd-boot: cannot run the boot test: %s\n' "$*" >&2; exit 1; }
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }

# A command in the container (all its namespaces, root there), with a clean environment: the
# host's PATH and variables must not leak in.
inside() {
  nsenter -t "$P1" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 "$@"
}
prop() { inside systemctl show -P "$1" "${2:-salesbot}"; }

# Always: power the container off (a clean shutdown in < 1 s), then remove the copy.
cleanup() {
  local code=$?
  if [ -n "$P1" ] && kill -0 "$P1" 2>/dev/null; then
    inside systemctl poweroff >/dev/null 2>&1 || true
    for _ in $(seq 50); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.2; done
  fi
  if [ -n "$NSPAWN_PID" ]; then
    kill "$NSPAWN_PID" 2>/dev/null || true
    wait "$NSPAWN_PID" 2>/dev/null || true
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- Preconditions: each refusal is one line saying why, never a silent skip. ------------------
preflight() {
  [ "$(id -u)" = 0 ] || die "run as root (sudo bash .ci/systemd-boot.sh): nspawn and debootstrap need it"
  command -v systemd-nspawn >/dev/null || die "systemd-nspawn missing (apt-get install systemd-container)"
  command -v nsenter >/dev/null || die "nsenter missing (apt-get install util-linux)"
  PYTHON=${PYTHON:-}
  if [ -z "$PYTHON" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
  fi
  # The wheels built here run inside under Debian 12's Python 3.11: the same ABI (cp311) is needed.
  local v
  v=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || die "no Python as $PYTHON"
  [ "$v" = 3.11 ] || die "$PYTHON is Python $v: the container's is 3.11 and the wheels must match (PYTHON=...)"
}

# --- The cached Debian root: made once, never modified; each run boots a copy. ----------------
ensure_root() {
  if [ -x "$BASE/lib/systemd/systemd" ] && [ -x "$BASE/usr/bin/python3" ]; then
    return
  fi
  command -v debootstrap >/dev/null || die "no Debian root in $BASE and no debootstrap to build it (apt-get install debootstrap)"
  say "building the Debian root in $BASE (once, about 5 minutes)"
  rm -rf "$BASE.new"
  mkdir -p "$CACHE"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,python3,python3-venv,sudo \
    "$SUITE" "$BASE.new" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    die "debootstrap failed (see $CACHE/debootstrap.log)"
  mv "$BASE.new" "$BASE"
}

# --- Wheels of the project and its dependencies, built on the host (the container is offline). --
build_wheels() {
  mkdir -p "$WORK/wheels"
  "$PYTHON" -m pip wheel -q --disable-pip-version-check -w "$WORK/wheels" "$REPO" >"$WORK/wheels.log" 2>&1 ||
    die "pip wheel failed (see the log): $(grep -v '^WARNING: Location' "$WORK/wheels.log" | tail -n 3 | tr '\n' ' ')"
}

# A copy of the root (cp -a: 1-2 s on ext4), with what install.sh reads from a checkout.
prepare_copy() {
  cp -a "$BASE" "$WORK/root"
  ROOT=$WORK/root
  mkdir -p "$ROOT/root/src" "$ROOT/root/boot"
  cp -a "$REPO/README.md" "$REPO/salesbot.service" "$REPO/config.example.toml" "$REPO/deploy" "$REPO/docs" "$ROOT/root/src/"
  cp -a "$WORK/wheels" "$ROOT/root/wheels"
  cp "$REPO/.ci/boot_sandbox.py" "$ROOT/root/boot/"
}

boot() {
  systemd-nspawn --boot --register=no --keep-unit --private-network --quiet \
    -D "$ROOT" --machine="salesbot-boot-$$" >"$WORK/nspawn.log" 2>&1 </dev/null &
  NSPAWN_PID=$!
  local state=""
  for _ in $(seq 300); do
    kill -0 "$NSPAWN_PID" 2>/dev/null || die "systemd-nspawn exited: $(tail -n 1 "$WORK/nspawn.log")"
    # Read again each time: nspawn's first child is a helper that forks the container's PID 1.
    P1=$(ps -o pid= --ppid "$NSPAWN_PID" | head -n 1 | tr -d ' ') || true
    if [ -n "$P1" ]; then
      state=$(inside systemctl is-system-running 2>/dev/null) || true
      case "$state" in running | degraded) return ;; esac
    fi
    sleep 0.2
  done
  die "the container did not boot in 60 s (state: ${state:-unknown}; $(tail -n 1 "$WORK/nspawn.log"))"
}

install_project() {
  local wheel
  wheel=$(basename "$(ls "$WORK"/wheels/salesbot_poller-*.whl)")
  inside bash /root/src/deploy/install.sh --package "/root/wheels/$wheel" \
    --pip-args "--no-index --find-links /root/wheels" >"$WORK/install.log" 2>&1 ||
    die "deploy/install.sh failed: $(tail -n 3 "$WORK/install.log" | tr '\n' ' ')"
}

# --- The sandboxes inside, and the config pointing at them. -----------------------------------
random() { od -An -tx1 -N12 /dev/urandom | tr -d ' \n'; }
AMO_TOKEN=amo-$(random)
OPENAI_KEY=sk-$(random)
BOT_TOKEN=100000001:$(random)
CHAT_ID=-1001000000001
SECRETS=("$AMO_TOKEN" "$OPENAI_KEY" "${BOT_TOKEN#*:}")
TZ_ZONE=Asia/Yekaterinburg  # not the unit's Europe/Moscow: the drop-in must win

start_sandboxes() {
  printf '{"amo": "%s", "openai": "%s", "bot": "%s", "chat": "%s"}\n' \
    "$AMO_TOKEN" "$OPENAI_KEY" "$BOT_TOKEN" "$CHAT_ID" >"$ROOT/root/boot/tokens.json"
  # A unit of the container's systemd, not a child of nsenter: at poweroff systemd freezes every
  # process (SIGSTOP) and nsenter, outside, would stop with its child and never reap it.
  inside systemd-run --quiet --unit=boot-sandbox /opt/salesbot/venv/bin/python /root/boot/boot_sandbox.py /root/boot
  for _ in $(seq 100); do
    [ -s "$ROOT/root/boot/urls.json" ] && return
    sleep 0.1
  done
  die "the sandbox servers did not start: $(inside journalctl -u boot-sandbox -n 2 --no-pager -o cat | tr '\n' ' ')"
}

url() { "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$ROOT/root/boot/urls.json" "$1"; }

configure() {
  local etc=$ROOT/etc/salesbot
  # No secret and no chat_id in config.toml: secrets are credentials, chat_id comes from
  # salesbot.env only (the wrapper must see it as the service does).
  cat >"$etc/config.toml" <<EOF
[amocrm]
base_url = "$(url amo)"

[openai]
base_url = "$(url openai)/v1"

[telegram]
api_url = "$(url telegram)"

[poller]
interval_seconds = 5
initial_lookback_minutes = 60

[storage]
database = "sqlite:////var/lib/salesbot/salesbot.db"
audio_dir = "/var/lib/salesbot/audio"
allow_private_recording_hosts = true
EOF
  cp "$etc/config.toml" "$WORK/config.toml"  # the instances' config, later
  printf 'SALESBOT_TELEGRAM_CHAT_ID=%s\n' "$CHAT_ID" >"$etc/salesbot.env"
  printf '%s' "$AMO_TOKEN" >"$etc/credentials/amocrm_long_lived_token"
  printf '%s' "$OPENAI_KEY" >"$etc/credentials/openai_api_key"
  printf '%s' "$BOT_TOKEN" >"$etc/credentials/telegram_bot_token"
  inside sh -c 'chown root:salesbot /etc/salesbot/credentials/* && chmod 0640 /etc/salesbot/credentials/*'
  mkdir -p "$ROOT/etc/systemd/system/salesbot.service.d"
  printf '[Service]\nEnvironment=TZ=%s\n' "$TZ_ZONE" >"$ROOT/etc/systemd/system/salesbot.service.d/tz.conf"
  inside systemctl daemon-reload
}

# Wait up to $1 seconds for the command after it to succeed.
wait_for() {
  local n=$(($1 * 5))
  shift
  for _ in $(seq "$n"); do "$@" && return 0; sleep 0.2; done
  return 1
}
is_active() { [ "$(prop ActiveState)" = active ]; }
sent_has() { grep -q "$1" "$ROOT/root/boot/sent.json" 2>/dev/null; }

# --- The checks, most valuable first. ---------------------------------------------------------

# Type=notify: `start` returns once READY=1 came (or fails at TimeoutStartSec).
check_ready() {
  if inside timeout 60 systemctl start salesbot && is_active; then
    pass ready
  else
    fail ready "ActiveState $(prop ActiveState)/$(prop SubState); $(inside journalctl -u salesbot -n 3 --no-pager -o cat | tr '\n' ' ')"
  fi
}

# The canned calls: an answered one (a card, after transcription and analysis) and a missed one.
check_delivered() {
  if wait_for 60 sent_has 'Пропущенный звонок' && wait_for 60 sent_has 'Оценка'; then
    pass delivered
  else
    fail delivered "Telegram sandbox got: $(head -c 300 "$ROOT/root/boot/sent.json" 2>/dev/null || echo nothing)"
  fi
}

# The daemon pings WATCHDOG=1 every WatchdogSec/3 (40 s under 2min): a drop-in of 6 s makes the
# pings every 2 s, so two readings 3 s apart differ. The drop-in stays for the kill -STOP check.
set_watchdog() {
  printf '[Service]\nWatchdogSec=6s\n' >"$ROOT/etc/systemd/system/salesbot.service.d/watchdog.conf"
  inside systemctl daemon-reload
  inside timeout 60 systemctl restart salesbot || true
}
check_watchdog_pings() {
  set_watchdog
  local first second
  first=$(prop WatchdogTimestampMonotonic)
  sleep 3
  second=$(prop WatchdogTimestampMonotonic)
  if [ -n "$first" ] && [ "$first" != 0 ] && [ "$second" -gt "$first" ]; then
    pass watchdog-pings
  else
    fail watchdog-pings "WatchdogTimestampMonotonic $first then $second"
  fi
}

# journald reads the `<N>` prefix of each stderr line: info 6; a warning 4 (the amoCRM outage
# makes one: "amoCRM poll failed").
check_priorities() {
  local json=$WORK/journal.json
  inside journalctl -u salesbot -o json --no-pager >"$json"
  if "$PYTHON" - "$json" 2>"$WORK/prio.out" <<'PY'
import json, sys
info = warn = False
for line in open(sys.argv[1]):
    e = json.loads(line)
    if "_PID" not in e or not isinstance(e.get("MESSAGE"), str):
        continue  # systemd's own lines about the unit
    m, p = e["MESSAGE"], e.get("PRIORITY")
    if m.startswith("<"):
        sys.exit(f"prefix not parsed: {m[:60]}")
    info = info or (" delivered" in m and p == "6")
    warn = warn or ("amoCRM poll failed" in m and p == "4")
if not (info and warn):
    sys.exit(f"info 6 seen: {info}, warning 4 seen: {warn}")
PY
  then pass journal-priorities; else fail journal-priorities "$(cat "$WORK/prio.out")"; fi
}

# No configured secret in the journal nor in the service's environment (credentials are files).
check_no_secret() {
  local pid found=""
  pid=$(prop MainPID)
  inside journalctl -u salesbot --no-pager -o cat >"$WORK/journal.txt"
  inside cat "/proc/$pid/environ" | tr '\0' '\n' >"$WORK/environ.txt"
  for s in "${SECRETS[@]}"; do
    grep -qF "$s" "$WORK/journal.txt" && found="$found journal"
    grep -qF "$s" "$WORK/environ.txt" && found="$found environ"
  done
  if [ -z "$found" ] && [ -s "$WORK/environ.txt" ]; then pass no-secret; else fail no-secret "a secret in:${found:- (environ unreadable)}"; fi
}

check_modes() {
  local mode creds
  mode=$(inside stat -c %a /var/lib/salesbot)
  # The service reads its secrets from $CREDENTIALS_DIRECTORY, readable by its user only.
  creds=$(inside sh -c "ls -ld /run/credentials/salesbot.service | cut -c1-10")
  if [ "$mode" = 700 ]; then pass state-0700; else fail state-0700 "/var/lib/salesbot is $mode"; fi
  if [ "$creds" = dr-x------ ]; then pass credentials-private; else fail credentials-private "/run/credentials/salesbot.service is $creds"; fi
}

check_security() {
  local score
  score=$(inside systemd-analyze security salesbot --no-pager 2>/dev/null | sed -n 's/.*Overall exposure level for salesbot.service: \([0-9.]*\).*/\1/p')
  if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
    pass "security ($score)"
  else
    fail security "exposure ${score:-unknown} (must be <= 2.0)"
  fi
}

# Stop is timed from the command: the daemon's grace is 9 s, TimeoutStopSec 30; it must take < 5 s.
timed_stop() {
  local t0 t1
  t0=$(date +%s%N)
  inside timeout 40 systemctl stop salesbot
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
check_stop() {
  local ms
  ms=$(timed_stop)
  if [ "$ms" -lt 5000 ] && [ "$(prop ActiveState)" = inactive ]; then pass "stop (${ms} ms)"; else fail stop "took $ms ms, state $(prop ActiveState)"; fi
  inside timeout 60 systemctl start salesbot || true
}
# The same during an amoCRM outage: retries must not hold the stop.
check_stop_outage() {
  touch "$ROOT/root/boot/amo-down"
  # amoCRM's retries back off 1, 2, 4, 8 s (each wait logged): after 10 s the daemon is waiting.
  sleep 10
  local ms seen
  seen=$(inside journalctl -u salesbot --since=-10s --no-pager -o cat | grep -c 'HTTP 503') || true
  ms=$(timed_stop)
  if [ "$seen" = 0 ]; then
    fail stop-in-outage "the daemon never saw the outage (no HTTP 503 in its journal)"
  elif [ "$ms" -lt 5000 ]; then
    pass "stop-in-outage (${ms} ms, $seen retry waits logged)"
  else
    fail stop-in-outage "took $ms ms"
  fi
  rm -f "$ROOT/root/boot/amo-down"
  inside timeout 60 systemctl start salesbot || true
}

# Restart=on-failure: a SIGKILL is a failure; RestartSec=30 is cut to 1 s by a drop-in here.
check_kill9() {
  printf '[Service]\nRestartSec=1\n' >"$ROOT/etc/systemd/system/salesbot.service.d/restart.conf"
  inside systemctl daemon-reload
  local before after
  before=$(prop MainPID)
  # The image has no kill(1) (no procps): systemd delivers the same signal to MainPID.
  inside systemctl kill --kill-who=main --signal=SIGKILL salesbot
  if wait_for 30 sh -c "[ \"\$(nsenter -t $P1 -a systemctl show -P MainPID salesbot)\" != $before ] && nsenter -t $P1 -a systemctl is-active -q salesbot"; then
    after=$(prop MainPID)
    pass "restart-after-kill-9 (pid $before -> $after, NRestarts $(prop NRestarts))"
  else
    fail restart-after-kill-9 "state $(prop ActiveState)/$(prop SubState), MainPID $(prop MainPID)"
  fi
}

# The admin's wrapper: chat_id only in salesbot.env, TZ only in the drop-in; `check` must pass
# and see both, `status` must run with the service's zone.
check_wrapper() {
  local out
  if out=$(inside timeout 60 /usr/local/sbin/salesbot-poller check 2>&1); then
    pass wrapper-check
  else
    fail wrapper-check "$(tail -n 2 <<<"$out" | tr '\n' ' ')"
  fi
  out=$(inside timeout 60 /usr/local/sbin/salesbot-poller check --show-config 2>&1) || true
  if grep -q "chat_id = \"$CHAT_ID\".*SALESBOT_TELEGRAM_CHAT_ID" <<<"$out"; then
    pass wrapper-env
  else
    fail wrapper-env "show-config: $(grep chat_id <<<"$out" | head -n 1)"
  fi
  # The environment the wrapper gives the CLI: the wrapper itself, with env in place of the
  # program, prints it. It must hold the service's TZ (the drop-in's) and salesbot.env's lines.
  local svc_tz wrap_tz
  svc_tz=$(prop Environment | tr ' ' '\n' | sed -n 's/^TZ=//p' | tail -n 1)
  inside sh -c 'sed "s|^PROGRAM=.*|PROGRAM=/usr/bin/env|" /usr/local/sbin/salesbot-poller >/root/boot/wrap-env'
  wrap_tz=$(inside sh /root/boot/wrap-env 2>/dev/null | sed -n 's/^TZ=//p') || true
  if out=$(inside timeout 60 /usr/local/sbin/salesbot-poller status 2>&1) && [ "$wrap_tz" = "$svc_tz" ] && [ "$svc_tz" = "$TZ_ZONE" ]; then
    pass "wrapper-status (TZ $wrap_tz as the service)"
  else
    fail wrapper-status "service TZ '$svc_tz', wrapper TZ '$wrap_tz'; $(tail -n 1 <<<"$out")"
  fi
}

# A hung daemon (SIGSTOP: no more pings) is killed by the watchdog and restarted.
check_watchdog_restart() {
  local before
  before=$(prop MainPID)
  inside systemctl kill --kill-who=main --signal=SIGSTOP salesbot
  if wait_for 30 sh -c "[ \"\$(nsenter -t $P1 -a systemctl show -P MainPID salesbot)\" != $before ] && nsenter -t $P1 -a systemctl is-active -q salesbot"; then
    pass "watchdog-restart (pid $before -> $(prop MainPID))"
  else
    fail watchdog-restart "state $(prop ActiveState)/$(prop SubState), MainPID $(prop MainPID)"
  fi
}

# Upgrade: install.sh again over a running service restarts it and keeps the config.
check_upgrade() {
  local before sum_before sum_after
  before=$(prop MainPID)
  sum_before=$(md5sum <"$ROOT/etc/salesbot/config.toml")
  if ! install_project_again; then
    fail upgrade "install.sh failed: $(tail -n 2 "$WORK/upgrade.log" | tr '\n' ' ')"
    return
  fi
  sum_after=$(md5sum <"$ROOT/etc/salesbot/config.toml")
  if is_active && [ "$(prop MainPID)" != "$before" ] && [ "$sum_before" = "$sum_after" ] &&
    grep -q 'restarted the running service' "$WORK/upgrade.log"; then
    pass upgrade
  else
    fail upgrade "state $(prop ActiveState), MainPID $before -> $(prop MainPID), config kept: $([ "$sum_before" = "$sum_after" ] && echo yes || echo no)"
  fi
}
install_project_again() {
  local wheel
  wheel=$(basename "$(ls "$WORK"/wheels/salesbot_poller-*.whl)")
  inside bash /root/src/deploy/install.sh --package "/root/wheels/$wheel" \
    --pip-args "--no-index --find-links /root/wheels" >"$WORK/upgrade.log" 2>&1
}

# uninstall.sh --purge leaves nothing of ours: files, user, unit.
check_purge() {
  local left=""
  if ! inside bash /root/src/deploy/uninstall.sh --purge >"$WORK/uninstall.log" 2>&1; then
    fail purge "uninstall.sh failed: $(tail -n 2 "$WORK/uninstall.log" | tr '\n' ' ')"
    return
  fi
  for path in /opt/salesbot /etc/salesbot /var/lib/salesbot /usr/local/sbin/salesbot-poller \
    /etc/systemd/system/salesbot.service /etc/systemd/system/salesbot.service.d \
    /etc/systemd/system/multi-user.target.wants/salesbot.service; do
    [ -e "$ROOT$path" ] || [ -L "$ROOT$path" ] && left="$left $path"
  done
  inside getent passwd salesbot >/dev/null && left="$left user:salesbot"
  [ "$(prop LoadState)" = not-found ] || left="$left unit:$(prop LoadState)"
  if [ -z "$left" ]; then pass purge; else fail purge "left:$left"; fi
}

# Two template instances side by side (after the purge: they cannot share a server with the
# single install): both run, and each user is shut out of the other's config and database.
check_instances() {
  local wheel n out=""
  wheel=$(basename "$(ls "$WORK"/wheels/salesbot_poller-*.whl)")
  for n in acme globex; do
    if ! inside bash /root/src/deploy/install.sh --instance "$n" --package "/root/wheels/$wheel" \
      --pip-args "--no-index --find-links /root/wheels" >"$WORK/install-$n.log" 2>&1; then
      fail instances "install.sh --instance $n failed: $(tail -n 2 "$WORK/install-$n.log" | tr '\n' ' ')"
      return
    fi
    sed -e "s|^database = .*|database = \"sqlite:////var/lib/salesbot/$n/salesbot.db\"|" \
      -e "s|^audio_dir = .*|audio_dir = \"/var/lib/salesbot/$n/audio\"|" \
      "$WORK/config.toml" >"$ROOT/etc/salesbot/$n/config.toml"
    printf 'SALESBOT_TELEGRAM_CHAT_ID=%s\n' "$CHAT_ID" >"$ROOT/etc/salesbot/$n/salesbot.env"
    printf '%s' "$AMO_TOKEN" >"$ROOT/etc/salesbot/$n/credentials/amocrm_long_lived_token"
    printf '%s' "$OPENAI_KEY" >"$ROOT/etc/salesbot/$n/credentials/openai_api_key"
    printf '%s' "$BOT_TOKEN" >"$ROOT/etc/salesbot/$n/credentials/telegram_bot_token"
    inside sh -c "chown root:salesbot-$n /etc/salesbot/$n/credentials/* && chmod 0640 /etc/salesbot/$n/credentials/*"
  done
  inside timeout 60 systemctl start salesbot@acme salesbot@globex || true
  for n in acme globex; do
    [ "$(prop ActiveState "salesbot@$n")" = active ] || out="$out salesbot@$n $(prop ActiveState "salesbot@$n");"
  done
  inside runuser -u salesbot-acme -- cat /etc/salesbot/globex/config.toml >/dev/null 2>&1 && out="$out acme reads globex's config;"
  inside runuser -u salesbot-globex -- ls /var/lib/salesbot/acme >/dev/null 2>&1 && out="$out globex reads acme's state;"
  if [ -z "$out" ]; then pass instances; else fail instances "$out"; fi
}

main() {
  preflight
  ensure_root
  WORK=$(mktemp -d /var/tmp/salesbot-boot.XXXXXX)
  build_wheels
  prepare_copy
  boot
  say "booted in $(($(date +%s) - T0)) s; installing"
  install_project
  start_sandboxes
  configure
  check_ready
  check_delivered
  check_no_secret
  check_modes
  check_security
  check_wrapper
  check_watchdog_pings
  check_stop
  check_stop_outage
  check_priorities
  check_kill9
  check_watchdog_restart
  check_upgrade
  check_purge
  check_instances
  echo "boot test: $PASSED passed, $FAILED failed in $(($(date +%s) - T0)) s"
  [ "$FAILED" = 0 ]
}

main "$@"
