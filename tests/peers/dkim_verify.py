"""Verifies the DKIM signatures of a stored message with dkimpy.

usage: dkim_verify.py MESSAGE_FILE DNS_NAME TXT_RECORD [DNS_NAME TXT_RECORD ...]

The given TXT records are the only DNS answers. Exits 0 when every
DKIM-Signature verifies, 1 otherwise, printing dkimpy's verdict per
signature.
"""
import sys

import dkim


def main():
    path, pairs = sys.argv[1], sys.argv[2:]
    records = {pairs[i].rstrip(".") + ".": pairs[i + 1] for i in range(0, len(pairs), 2)}

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        record = records.get(name.rstrip(".") + ".")
        return record.encode() if record else None

    with open(path, "rb") as f:
        message = f.read()
    # Maildir stores LF line ends; DKIM canonicalization works on CRLF.
    message = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    count = message.count(b"\r\nDKIM-Signature:") + message.startswith(b"DKIM-Signature:")
    if count == 0:
        print("no DKIM-Signature")
        return 1
    ok = True
    for index in range(count):
        verdict = dkim.DKIM(message).verify(idx=index, dnsfunc=dnsfunc)
        print(f"signature {index}: {'pass' if verdict else 'fail'}")
        ok = ok and verdict
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
