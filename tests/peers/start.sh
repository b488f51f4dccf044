#!/usr/bin/env bash
# Starts postern's real peers on loopback, as private instances under one
# directory: oidc-provider (token server), Postfix (delivery to Maildir, and
# SMTP AUTH through Dovecot SASL), Dovecot submission (XOAUTH2, OAUTHBEARER,
# PLAIN, LOGIN). Idempotent: stops what a previous run started first.
# Writes $POSTERN_PEERS_DIR/env (KEY=VALUE) for the tests.
#
#   tests/peers/install.sh   # once: packages and npm modules
#   tests/peers/start.sh     # then: POSTERN_PEERS_ENV=/tmp/postern-peers/env
#   tests/peers/stop.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
DIR="${POSTERN_PEERS_DIR:-/tmp/postern-peers}"
BASE="${POSTERN_PEERS_PORT_BASE:-39400}"
TTL="${POSTERN_PEERS_TOKEN_TTL:-3600}"

"$here/stop.sh" >/dev/null 2>&1 || true
rm -rf "$DIR"
mkdir -p "$DIR"/{tls,keys,mail,dovecot/run,dovecot/state,postfix/etc,postfix/queue,postfix/data,pids}
chmod 755 "$DIR" "$DIR/mail"

TOKEN_PORT=$((BASE + 0))
DELIVERY_PORT=$((BASE + 25))
POSTFIX_SUBMISSION_PORT=$((BASE + 87))
POSTFIX_SUBMISSIONS_PORT=$((BASE + 65))
DOVECOT_SUBMISSION_PORT=$((BASE + 88))
DOVECOT_SUBMISSIONS_PORT=$((BASE + 66))

# --- TLS: a throwaway CA and a certificate for localhost, 127.0.0.1, 127.0.0.2
(
  cd "$DIR/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=postern peers CA" \
    -keyout ca.key -out ca.pem -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:127.0.0.2\nextendedKeyUsage=serverAuth\n' > ext.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext.cnf -out server.pem 2>/dev/null
  chmod 644 server.key
)

# --- oidc-provider
(
  cd "$here/oidc"
  PORT=$TOKEN_PORT TTL=$TTL KEY_DIR="$DIR/keys" PID_FILE="$DIR/pids/oidc" \
    nohup node server.js >"$DIR/oidc.log" 2>&1 &
)

# --- Postfix: delivery to Maildir, and SASL submission through Dovecot
PF="$DIR/postfix"
chown -R postfix:postfix "$PF/data"
chown -R postfix:postfix "$DIR/mail"
printf 'rcpt@example.com example.com/rcpt/\nj\303\266ran@example.com example.com/joeran/\nrcpt2@example.com example.com/rcpt2/\nload@example.com example.com/load/\nsender@example.com example.com/sender/\nuser@example.com example.com/user/\n' > "$PF/etc/vmailbox"
cat > "$PF/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.postern.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost =
disable_dns_lookups = yes
smtp_dns_support_level = disabled
default_transport = retry:no mail leaves this machine
relay_transport = retry:no mail leaves this machine
virtual_mailbox_domains = example.com
virtual_mailbox_base = $DIR/mail
virtual_mailbox_maps = texthash:$PF/etc/vmailbox
virtual_uid_maps = static:$(id -u postfix)
virtual_gid_maps = static:$(id -g postfix)
maillog_file = $DIR/postfix.log
maillog_file_prefixes = $DIR
smtpd_tls_cert_file = $DIR/tls/server.pem
smtpd_tls_key_file = $DIR/tls/server.key
smtpd_sasl_type = dovecot
smtpd_sasl_path = $DIR/dovecot/run/auth-postfix
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
message_size_limit = 0
mailbox_size_limit = 0
virtual_mailbox_limit = 0
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
anvil_rate_time_unit = 60s
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
CONF
cat > "$PF/etc/master.cf" <<CONF
127.0.0.1:$DELIVERY_PORT inet n - n - - smtpd
127.0.0.1:$POSTFIX_SUBMISSION_PORT inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
127.0.0.1:$POSTFIX_SUBMISSIONS_PORT inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CONF

# --- Dovecot submission
DC="$DIR/dovecot"
printf 'alice@example.com:{PLAIN}p\xc3\xa4ssw\xc3\xb6rd-\xe2\x82\xac::::::\n' > "$DC/users"
cat > "$DC/oauth2-opaque.conf" <<CONF
introspection_mode = post
introspection_url = http://dovecot:dovecot-secret@127.0.0.1:$TOKEN_PORT/token/introspection
username_attribute = username
active_attribute = active
active_value = true
openid_configuration_url = http://127.0.0.1:$TOKEN_PORT/.well-known/openid-configuration
CONF
cat > "$DC/oauth2-jwt.conf" <<CONF
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=$DIR/keys/
issuers = http://127.0.0.1:$TOKEN_PORT
username_attribute = username
openid_configuration_url = http://127.0.0.1:$TOKEN_PORT/.well-known/openid-configuration
CONF
cat > "$DC/dovecot.conf" <<CONF
protocols = submission
listen = 127.0.0.1, 127.0.0.2
base_dir = $DC/run
state_dir = $DC/state
log_path = $DIR/dovecot.log
instance_name = postern-peers
default_internal_user = dovecot
default_login_user = dovenull
ssl = yes
ssl_cert = <$DIR/tls/server.pem
ssl_key = <$DIR/tls/server.key
disable_plaintext_auth = yes
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
auth_verbose = yes
mail_location = maildir:$DIR/mail/dovecot/%u
first_valid_uid = 1
first_valid_gid = 1
hostname = submission.postern.test
submission_relay_host = 127.0.0.1
submission_relay_port = $DELIVERY_PORT
submission_relay_trusted = yes
submission_max_mail_size = 0
# Dovecot's default of 10 connections per user and address is below what
# the proxy benchmark opens at once (10 clients, plus pooled connections).
mail_max_userip_connections = 100
passdb {
  driver = passwd-file
  args = scheme=PLAIN $DC/users
  mechanisms = plain login
}
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DC/oauth2-jwt.conf
  result_failure = continue
  result_internalfail = continue
}
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DC/oauth2-opaque.conf
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=$DIR/mail/dovecot/%u
}
service submission-login {
  inet_listener submission {
    port = $DOVECOT_SUBMISSION_PORT
  }
  inet_listener submissions {
    port = $DOVECOT_SUBMISSIONS_PORT
    ssl = yes
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
CONF
mkdir -p "$DIR/mail/dovecot" && chown dovecot:dovecot "$DIR/mail/dovecot"

dovecot -c "$DC/dovecot.conf"
postfix -c "$PF/etc" check >/dev/null 2>&1 || true
postfix -c "$PF/etc" start >/dev/null 2>&1

# --- A second Postfix, a relay client of `postern proxy`: mail injected on
# RELAY_SUBMIT_PORT goes to relayhost 127.0.0.1:RELAY_PROXY_PORT (where
# the proxy tests start the proxy) with SASL PLAIN and the proxy's local
# password, as an appliance's MTA would.
RELAY_SUBMIT_PORT=$((BASE + 26))
RELAY_PROXY_PORT=$((BASE + 27))
PR="$DIR/postfix-relay"
mkdir -p "$PR/etc" "$PR/queue" "$PR/data"
chown -R postfix:postfix "$PR/data"
cat > "$PR/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $PR/queue
data_directory = $PR/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.postern.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$RELAY_PROXY_PORT
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = static:sender@example.com:local-password-1
smtp_sasl_security_options = noanonymous
smtp_tls_security_level = none
smtpd_recipient_restrictions = permit_mynetworks, reject
maillog_file = $DIR/postfix-relay.log
maillog_file_prefixes = $DIR
message_size_limit = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
CONF
{
  echo "127.0.0.1:$RELAY_SUBMIT_PORT inet n - n - - smtpd"
  sed -n '/^pickup/,$p' "$PF/etc/master.cf"
} > "$PR/etc/master.cf"
postfix -c "$PR/etc" check >/dev/null 2>&1 || true
postfix -c "$PR/etc" start >/dev/null 2>&1

# --- tinyproxy: the HTTPS proxy token requests go through in the proxy
# tests (CONNECT to any loopback port; the default allows every port when
# no ConnectPort line is given).
PROXY_PORT=$((BASE + 31))
mkdir -p "$DIR/tinyproxy"
chmod 777 "$DIR/tinyproxy"
cat > "$DIR/tinyproxy/tinyproxy.conf" <<CONF
Port $PROXY_PORT
Listen 127.0.0.1
Timeout 60
Allow 127.0.0.1
LogFile "$DIR/tinyproxy/tinyproxy.log"
LogLevel Connect
PidFile "$DIR/pids/tinyproxy"
MaxClients 20
CONF
touch "$DIR/tinyproxy/tinyproxy.log"
chmod 666 "$DIR/tinyproxy/tinyproxy.log"
chmod 777 "$DIR/pids"
tinyproxy -c "$DIR/tinyproxy/tinyproxy.conf"

# --- wait for every port
for port in $TOKEN_PORT $PROXY_PORT $DELIVERY_PORT $POSTFIX_SUBMISSION_PORT $POSTFIX_SUBMISSIONS_PORT \
            $DOVECOT_SUBMISSION_PORT $DOVECOT_SUBMISSIONS_PORT; do
  for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then break; fi
    sleep 0.1
  done
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null || {
    echo "peer on port $port did not start; logs in $DIR" >&2
    tail -n 20 "$DIR"/*.log >&2 || true
    exit 1
  }
done
cp "$PF/queue/pid/master.pid" "$DIR/pids/postfix" 2>/dev/null || true
cp "$DC/run/master.pid" "$DIR/pids/dovecot" 2>/dev/null || true

cat > "$DIR/env" <<ENV
POSTERN_PEERS_DIR=$DIR
TOKEN_URL=http://127.0.0.1:$TOKEN_PORT/token
ISSUER=http://127.0.0.1:$TOKEN_PORT
CA_FILE=$DIR/tls/ca.pem
MAIL_DIR=$DIR/mail
DOVECOT_SUBMISSION_PORT=$DOVECOT_SUBMISSION_PORT
DOVECOT_SUBMISSIONS_PORT=$DOVECOT_SUBMISSIONS_PORT
POSTFIX_SUBMISSION_PORT=$POSTFIX_SUBMISSION_PORT
POSTFIX_SUBMISSIONS_PORT=$POSTFIX_SUBMISSIONS_PORT
DELIVERY_PORT=$DELIVERY_PORT
RELAY_SUBMIT_PORT=$RELAY_SUBMIT_PORT
RELAY_PROXY_PORT=$RELAY_PROXY_PORT
TOKEN_TTL=$TTL
PROXY_URL=http://127.0.0.1:$PROXY_PORT
PROXY_LOG=$DIR/tinyproxy/tinyproxy.log
DKIM_PYTHON=$here/py/bin/python
DKIM_VERIFY=$here/dkim_verify.py
ENV
echo "peers up: env in $DIR/env"
