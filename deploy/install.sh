#!/usr/bin/env bash
# Install or upgrade SalesBot Poller as a systemd service. Idempotent: run it again to
# upgrade; it never overwrites /etc/salesbot/config.toml or a credential.
#
#   sudo deploy/install.sh                      # from a checkout of the repository
#   sudo deploy/install.sh --instance NAME      # one of many amoCRM accounts: salesbot@NAME
#
# Options (--root and --no-system are for tests and packaging):
#   --instance NAME   install instance NAME of the template unit salesbot@.service (its own
#                     user salesbot-NAME, /etc/salesbot/NAME, /var/lib/salesbot/NAME); NAME is
#                     1-23 of a-z 0-9 -, starting with a letter or digit
#   --root DIR        install under DIR instead of /; implies --no-system
#   --no-system       do not create the user, chown, or talk to systemd
#   --package SPEC    what pip installs (default: this checkout; e.g. a wheel file)
#   --pip-args ARGS   extra pip arguments, e.g. "--no-deps --no-index"
#   --python PATH     the Python 3.11+ that makes the venv (default: python3)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${DESTDIR:-}
SYSTEM=1
PACKAGE=$SRC
PIP_ARGS=""
PYTHON=python3
INSTANCE=""
ONE=0  # --instance given (an empty name is refused, not taken for the single install)
[ -n "$ROOT" ] && SYSTEM=0

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; SYSTEM=0; shift 2 ;;
    --no-system) SYSTEM=0; shift ;;
    --package) PACKAGE=$2; shift 2 ;;
    --pip-args) PIP_ARGS=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --instance) INSTANCE=$2; ONE=1; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=${ROOT%/}

USER_NAME=salesbot
OPT=$ROOT/opt/salesbot
VENV=$OPT/venv
ETC=$ROOT/etc/salesbot
CREDS=$ETC/credentials
STATE=$ROOT/var/lib/salesbot
UNIT=$ROOT/etc/systemd/system/salesbot.service
TEMPLATE=$ROOT/etc/systemd/system/salesbot@.service
WRAPPER=$ROOT/usr/local/sbin/salesbot-poller

say() { printf 'install.sh: %s\n' "$*"; }
fail() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

# The single install owns /etc/salesbot and /var/lib/salesbot (its unit makes them 0750 and
# 0700, and hands /var/lib/salesbot to user salesbot on every start), so instances, which live
# below them, cannot share a server with it.
instances() { for c in "$ETC"/*/config.toml; do [ -e "$c" ] && basename "$(dirname "$c")"; done; return 0; }
if [ "$ONE" = 1 ]; then
  # salesbot-NAME must fit a user name (32 characters); no dots or slashes in a path.
  [[ $INSTANCE =~ ^[a-z0-9][a-z0-9-]{0,22}$ ]] ||
    fail "bad instance name '$INSTANCE': 1-23 of a-z 0-9 -, starting with a letter or digit"
  if [ -e "$ETC/config.toml" ] || [ -e "$UNIT" ]; then
    fail "a single-account install is here ($ETC/config.toml, salesbot.service): instances cannot share a server with it (see deploy/README.md, Many accounts)"
  fi
  USER_NAME=salesbot-$INSTANCE
  ETC_TOP=$ETC
  STATE_TOP=$STATE
  ETC=$ETC/$INSTANCE
  CREDS=$ETC/credentials
  STATE=$STATE/$INSTANCE
elif [ -e "$TEMPLATE" ] || [ -n "$(instances)" ]; then
  fail "instances of salesbot@.service are installed here ($(instances | paste -sd ' ' -)): use --instance NAME (or remove them first, then uninstall.sh)"
fi

if [ "$SYSTEM" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or use --root DIR for a throwaway root" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "install.sh: need Python 3.11+ as $PYTHON (Debian 12: apt-get install python3 python3-venv)" >&2
  exit 1
fi

# Owner arguments for `install`: real owners only when this is the real system.
own() { [ "$SYSTEM" = 1 ] && printf -- '-o %s -g %s' "$1" "$2"; return 0; }

if [ "$SYSTEM" = 1 ] && ! getent passwd "$USER_NAME" >/dev/null; then
  useradd --system --user-group --home-dir "${STATE#"$ROOT"}" --no-create-home \
    --shell /usr/sbin/nologin --comment "SalesBot Poller${INSTANCE:+ ($INSTANCE)}" "$USER_NAME"
  say "created system user $USER_NAME"
fi

# shellcheck disable=SC2046  # own() prints separate words on purpose
{
  mkdir -p "$ROOT/etc/systemd/system" "$ROOT/usr/local/sbin"  # system directories: modes left alone
  install -d -m 0755 "$OPT"
  # Instances: every instance's user passes through these; each one's own directory is closed.
  [ -n "$INSTANCE" ] && install -d -m 0755 $(own root root) "$ETC_TOP" "$STATE_TOP"
  install -d -m 0750 $(own root "$USER_NAME") "$ETC" "$CREDS"
  install -d -m 0700 $(own "$USER_NAME" "$USER_NAME") "$STATE"
}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  say "created $VENV"
fi
# shellcheck disable=SC2086  # PIP_ARGS is a list of words
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade $PIP_ARGS "$PACKAGE"
say "installed salesbot-poller $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("salesbot-poller"))') into $VENV"

install -m 0644 "$SRC/README.md" "$OPT/README.md"
# The guides the README links (the unit's Documentation=), replaced whole so a removed one goes.
rm -rf "$OPT/docs" && install -d -m 0755 "$OPT/docs" && install -m 0644 "$SRC"/docs/*.md "$SRC"/docs/*.png "$OPT/docs/"

# shellcheck disable=SC2046
if [ -n "$INSTANCE" ]; then
  install -m 0644 "$SRC/deploy/salesbot@.service" "$TEMPLATE"
  if [ -e "$ETC/config.toml" ]; then
    say "kept $ETC/config.toml"
  else
    # The example's storage paths, moved into this instance's state directory.
    data=/var/lib/salesbot/$INSTANCE
    config=$(sed -e "s|^database = \"[^\"]*\"|database = \"sqlite:///$data/salesbot.db\"|" \
      -e "s|^audio_dir = \"[^\"]*\"|audio_dir = \"$data/audio\"|" "$SRC/config.example.toml")
    if ! grep -q "^database = \"sqlite:///$data/salesbot.db\"" <<<"$config" ||
      ! grep -q "^audio_dir = \"$data/audio\"" <<<"$config"; then
      fail "config.example.toml has no database/audio_dir line to point at $data"
    fi
    install -m 0600 $(own "$USER_NAME" "$USER_NAME") /dev/stdin "$ETC/config.toml" <<<"$config"
    say "wrote $ETC/config.toml from config.example.toml (mode 0600), storage in $data"
  fi
else
  install -m 0644 "$SRC/salesbot.service" "$UNIT"
  if [ -e "$ETC/config.toml" ]; then
    say "kept $ETC/config.toml"
  else
    install -m 0600 $(own "$USER_NAME" "$USER_NAME") "$SRC/config.example.toml" "$ETC/config.toml"
    say "wrote $ETC/config.toml from config.example.toml (mode 0600)"
  fi
fi

# `sudo salesbot-poller check|status|backfill ...` runs the CLI the way the service runs:
# as the service user, with its config, credentials and time zone; with `--instance NAME`
# first, the way salesbot@NAME runs. One wrapper serves both kinds of install.
cat > "$WRAPPER.tmp" <<'WRAP'
#!/bin/sh
# Installed by deploy/install.sh: run salesbot-poller as the service does.
#   salesbot-poller ARGS...                   as salesbot.service (user salesbot)
#   salesbot-poller --instance NAME ARGS...   as salesbot@NAME.service (user salesbot-NAME)
set -e
PROGRAM=/opt/salesbot/venv/bin/salesbot-poller
UNITS=/etc/systemd/system
NL='
'
# The last TZ= a unit and its drop-ins set (`systemctl edit salesbot`, `salesbot@`, `salesbot@NAME`).
unit_tz() {
  cat "$@" 2>/dev/null | sed -n 's/^Environment="\{0,1\}TZ=\([^" ]*\).*/\1/p' | tail -n 1
}
instance_tz() {
  unit_tz "$UNITS/salesbot@.service" "$UNITS/salesbot@.service.d/"*.conf "$UNITS/salesbot@$1.service.d/"*.conf
}
# The SALESBOT_* lines of the unit's EnvironmentFile= (salesbot.env) as systemd reads them:
# comments skipped, quotes around a value removed; one per line, later ones win. They are
# handed to env as words (never evaluated), after the unit's own settings, as systemd does.
env_file() {
  [ -f "$1" ] || return 0
  sed -n 's/^[[:space:]]*\(SALESBOT_[A-Za-z0-9_]*\)[[:space:]]*=[[:space:]]*\(.*\)$/\1=\2/p' "$1" |
    sed -e 's/[[:space:]]*$//' -e 's/^\([^=]*\)="\(.*\)"$/\1=\2/' -e "s/^\([^=]*\)='\(.*\)'\$/\1=\2/"
}
case "${1:-}" in
  --instance|--instance=*)
    if [ "$1" = --instance ]; then NAME=${2:-}; [ $# -ge 2 ] && shift; else NAME=${1#--instance=}; fi
    shift
    case "$NAME" in
      ''|[!a-z0-9]*|*[!a-z0-9-]*) echo "salesbot-poller: bad instance name '$NAME' (--instance NAME ...)" >&2; exit 2 ;;
    esac
    if [ ! -e "/etc/salesbot/$NAME/config.toml" ]; then
      echo "salesbot-poller: no instance $NAME (/etc/salesbot/$NAME/config.toml is missing)" >&2
      exit 1
    fi
    TZ_LINE=$(instance_tz "$NAME")
    ENVS=$(env_file "/etc/salesbot/$NAME/salesbot.env")
    set -f; IFS=$NL  # each line of ENVS one word, no globbing of its values
    # shellcheck disable=SC2086  # ENVS: one word per line, on purpose
    exec runuser -u "salesbot-$NAME" -- env SALESBOT_CONFIG="/etc/salesbot/$NAME/config.toml" \
      CREDENTIALS_DIRECTORY="/etc/salesbot/$NAME/credentials" TZ="${TZ_LINE:-UTC}" $ENVS "$PROGRAM" "$@" ;;
esac
if [ ! -e /etc/salesbot/config.toml ] && [ -e "$UNITS/salesbot@.service" ]; then
  # Only instances here. `fleet` reads every instance's config and database: as root.
  case "${1:-}" in
    fleet|-h|--help|--version) TZ_LINE=$(instance_tz "")
      exec env TZ="${TZ_LINE:-UTC}" "$PROGRAM" "$@" ;;
  esac
  echo "salesbot-poller: this server runs one instance per account: salesbot-poller --instance NAME $*" >&2
  echo "instances:" >&2
  for c in /etc/salesbot/*/config.toml; do [ -e "$c" ] && c=${c%/config.toml} && echo "  ${c##*/}"; done >&2
  exit 2
fi
TZ_LINE=$(unit_tz "$UNITS/salesbot.service" "$UNITS/salesbot.service.d/"*.conf)
ENVS=$(env_file /etc/salesbot/salesbot.env)
set -f; IFS=$NL
# shellcheck disable=SC2086  # ENVS: one word per line, on purpose
exec runuser -u salesbot -- env SALESBOT_CONFIG=/etc/salesbot/config.toml \
  CREDENTIALS_DIRECTORY=/etc/salesbot/credentials TZ="${TZ_LINE:-UTC}" $ENVS "$PROGRAM" "$@"
WRAP
chmod 0755 "$WRAPPER.tmp"
mv -f "$WRAPPER.tmp" "$WRAPPER"

if [ "$SYSTEM" = 1 ] && [ -n "$INSTANCE" ]; then
  systemctl daemon-reload
  # All the instances run the one venv and template: the running ones take the new version.
  running=$(systemctl list-units --state=active --plain --no-legend 'salesbot@*.service' | awk '{print $1}')
  if [ -n "$running" ]; then
    # shellcheck disable=SC2086  # one word per unit
    systemctl restart $running
    say "restarted the running instances with the new version:" "$(paste -sd ' ' - <<<"$running")"
  fi
elif [ "$SYSTEM" = 1 ]; then
  systemctl daemon-reload
  if systemctl is-active --quiet salesbot; then
    systemctl restart salesbot
    say "restarted the running service with the new version"
  fi
fi

if [ -n "$INSTANCE" ]; then
  N=$INSTANCE
  cat <<NEXT

Next steps for instance $N (amoCRM account $N):
  1. Edit /etc/salesbot/$N/config.toml: amocrm.base_url, telegram.chat_id (keep secrets out
     of it; storage already points at /var/lib/salesbot/$N).
  2. Put each secret in its own file under /etc/salesbot/$N/credentials/ (the service reads
     them as systemd credentials), for example:
       sudo install -m 0640 -g salesbot-$N /dev/stdin /etc/salesbot/$N/credentials/openai_api_key
     (paste the key, then Ctrl-D). Names: amocrm_long_lived_token (or amocrm_client_secret and
     amocrm_refresh_token for OAuth), openai_api_key, telegram_bot_token.
  3. sudo salesbot-poller --instance $N check
  4. sudo systemctl enable --now salesbot@$N
  5. journalctl -u salesbot@$N -f        (errors only: journalctl -u salesbot@$N -p err)
NEXT
  exit 0
fi

cat <<NEXT

Next steps:
  1. Edit /etc/salesbot/config.toml: amocrm.base_url, telegram.chat_id (keep secrets out of it).
  2. Put each secret in its own file under /etc/salesbot/credentials/ (the service reads them
     as systemd credentials), for example:
       sudo install -m 0640 -g salesbot /dev/stdin /etc/salesbot/credentials/openai_api_key
     (paste the key, then Ctrl-D). Names: amocrm_long_lived_token (or amocrm_client_secret and
     amocrm_refresh_token for OAuth), openai_api_key, telegram_bot_token.
  3. sudo salesbot-poller check
  4. sudo systemctl enable --now salesbot
  5. journalctl -u salesbot -f        (errors only: journalctl -u salesbot -p err)
NEXT
