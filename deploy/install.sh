#!/usr/bin/env bash
# Install or upgrade SalesBot Poller as a systemd service. Idempotent: run it again to
# upgrade; it never overwrites /etc/salesbot/config.toml or a credential.
#
#   sudo deploy/install.sh                      # from a checkout of the repository
#
# Options (the first two are for tests and packaging):
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
[ -n "$ROOT" ] && SYSTEM=0

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; SYSTEM=0; shift 2 ;;
    --no-system) SYSTEM=0; shift ;;
    --package) PACKAGE=$2; shift 2 ;;
    --pip-args) PIP_ARGS=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
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
WRAPPER=$ROOT/usr/local/sbin/salesbot-poller

say() { printf 'install.sh: %s\n' "$*"; }

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
  useradd --system --user-group --home-dir /var/lib/salesbot --no-create-home \
    --shell /usr/sbin/nologin --comment "SalesBot Poller" "$USER_NAME"
  say "created system user $USER_NAME"
fi

# shellcheck disable=SC2046  # own() prints separate words on purpose
{
  mkdir -p "$ROOT/etc/systemd/system" "$ROOT/usr/local/sbin"  # system directories: modes left alone
  install -d -m 0755 "$OPT"
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
install -m 0644 "$SRC/salesbot.service" "$UNIT"

# shellcheck disable=SC2046
if [ -e "$ETC/config.toml" ]; then
  say "kept $ETC/config.toml"
else
  install -m 0600 $(own "$USER_NAME" "$USER_NAME") "$SRC/config.example.toml" "$ETC/config.toml"
  say "wrote $ETC/config.toml from config.example.toml (mode 0600)"
fi

# `sudo salesbot-poller check|status|backfill ...` runs the CLI the way the service runs:
# as the service user, with its config, credentials and time zone.
cat > "$WRAPPER.tmp" <<'WRAP'
#!/bin/sh
# Installed by deploy/install.sh: run salesbot-poller as the service does.
set -e
UNIT=/etc/systemd/system/salesbot.service
TZ_LINE=$(sed -n 's/^Environment=TZ=//p' "$UNIT" 2>/dev/null | tail -n 1)
exec runuser -u salesbot -- env SALESBOT_CONFIG=/etc/salesbot/config.toml \
  CREDENTIALS_DIRECTORY=/etc/salesbot/credentials TZ="${TZ_LINE:-UTC}" \
  /opt/salesbot/venv/bin/salesbot-poller "$@"
WRAP
chmod 0755 "$WRAPPER.tmp"
mv -f "$WRAPPER.tmp" "$WRAPPER"

if [ "$SYSTEM" = 1 ]; then
  systemctl daemon-reload
  if systemctl is-active --quiet salesbot; then
    systemctl restart salesbot
    say "restarted the running service with the new version"
  fi
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
