#!/usr/bin/env bash
# Stops the peers tests/peers/start.sh started (only those: by their PIDs).
set -uo pipefail
DIR="${POSTERN_PEERS_DIR:-/tmp/postern-peers}"
[ -d "$DIR" ] || exit 0
if [ -f "$DIR/postfix/etc/main.cf" ]; then
  postfix -c "$DIR/postfix/etc" stop >/dev/null 2>&1 || true
fi
if [ -f "$DIR/postfix-relay/etc/main.cf" ]; then
  postfix -c "$DIR/postfix-relay/etc" stop >/dev/null 2>&1 || true
fi
if [ -f "$DIR/dovecot/dovecot.conf" ]; then
  doveadm -c "$DIR/dovecot/dovecot.conf" stop >/dev/null 2>&1 || true
fi
for f in "$DIR"/pids/*; do
  [ -f "$f" ] || continue
  pid="$(cat "$f")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
done
sleep 0.2
exit 0
