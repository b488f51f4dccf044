#!/usr/bin/env bash
# Installs the real peers when missing: Dovecot (core + submission), Postfix,
# and oidc-provider from npm (pinned by package-lock.json); and the legacy
# SMTP clients the proxy is tested with (swaks, msmtp); redis-server for the
# shared token store (the tests start their own on a loopback port).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
[ -x /usr/sbin/postfix ] && [ -x /usr/sbin/smtp-sink ] || need+=(postfix)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-core)
[ -x /usr/lib/dovecot/submission ] || need+=(dovecot-submissiond)
[ -x /usr/bin/tinyproxy ] || need+=(tinyproxy)
command -v swaks >/dev/null || need+=(swaks)
command -v msmtp >/dev/null || need+=(msmtp)
command -v redis-server >/dev/null || need+=(redis-server)
# Postfix's SMTP client needs Cyrus SASL's PLAIN module to log in to the proxy.
ls /usr/lib/*/sasl2/libplain.so >/dev/null 2>&1 || need+=(libsasl2-modules)
if [ ${#need[@]} -gt 0 ]; then
  # Keep package installs from starting daemons (Debian's policy-rc.d hook).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -d "$here/oidc/node_modules/oidc-provider" ]; then
  (cd "$here/oidc" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# dkimpy, the independent DKIM verifier the signing tests check against
# (pinned; in a virtual environment beside this script).
# PyNaCl is dkimpy's Ed25519 back end.
if ! "$here/py/bin/python" -c 'import dkim, nacl' 2>/dev/null; then
  python3 -m venv "$here/py"
  "$here/py/bin/pip" install -q --disable-pip-version-check \
    dkimpy==1.1.8 dnspython==2.9.2 pynacl==1.6.2
fi
