"""Legacy SMTP clients for the proxy benchmark: N threads of Python's
smtplib send M messages of 1 KiB in all, either over one persistent session
per thread or with a new session (connect, [STARTTLS], AUTH, send, QUIT)
per message, as appliances do. Prints the seconds the sends took.

    clients.py HOST PORT USER PASSWORD MODE CLIENTS MESSAGES [CA_FILE]

MODE is `persistent` or `per-message`; with CA_FILE the client does
STARTTLS and verifies the server with that CA. A PASSWORD of
`xoauth2:TOKEN` logs in with XOAUTH2 and that bearer token instead (the
direct rows: a client that does OAuth2 itself).
"""
import smtplib
import ssl
import sys
import threading
import time

host, port, user, password, mode, clients, messages = sys.argv[1:8]
port, clients, messages = int(port), int(clients), int(messages)
ca = sys.argv[8] if len(sys.argv) > 8 else None
context = ssl.create_default_context(cafile=ca) if ca else None
body = (
    "From: %s\r\nTo: rcpt@example.com\r\nSubject: proxy benchmark\r\n\r\n" % user
    + ("x" * 78 + "\r\n") * 12
).encode()
errors = []


def session():
    s = smtplib.SMTP(host, port, timeout=60)
    if context:
        s.starttls(context=context)
    if password.startswith("xoauth2:"):
        token = password[len("xoauth2:"):]
        s.ehlo_or_helo_if_needed()
        s.auth(
            "XOAUTH2",
            lambda challenge=None: "user=%s\x01auth=Bearer %s\x01\x01" % (user, token),
            initial_response_ok=True,
        )
    else:
        s.login(user, password)
    return s


def worker(count):
    try:
        if mode == "persistent":
            s = session()
            for _ in range(count):
                s.sendmail(user, ["rcpt@example.com"], body)
            s.quit()
        else:
            for _ in range(count):
                s = session()
                s.sendmail(user, ["rcpt@example.com"], body)
                s.quit()
    except Exception as e:  # reported, and the run fails
        errors.append(repr(e))


shares = [messages // clients + (1 if i < messages % clients else 0) for i in range(clients)]
threads = [threading.Thread(target=worker, args=(n,)) for n in shares if n > 0]
start = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.perf_counter() - start
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print("%.6f" % elapsed)
