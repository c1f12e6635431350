#!/usr/bin/env python3
"""Python's smtplib and raw sockets as SMTP clients of oxbridge's end-to-end tests.

Each subcommand performs one client scenario against a running oxbridge and prints what it
saw as JSON on stdout, so the Rust tests can assert on it.
"""

import argparse
import base64
import json
import smtplib
import socket
import ssl
import sys
import time

HOST = "127.0.0.1"


def context(args):
    return ssl.create_default_context(cafile=args.ca)


def source(args):
    return (args.source, 0) if args.source else None


def connect(args):
    """Connects as --mode says and greets with EHLO (or HELO with --helo)."""
    if args.mode == "ssl":
        smtp = smtplib.SMTP_SSL(HOST, args.port, context=context(args), timeout=60,
                                source_address=source(args))
    else:
        smtp = smtplib.SMTP(HOST, args.port, timeout=60, source_address=source(args))
    if args.helo:
        smtp.helo("device.example")
        return smtp
    smtp.ehlo("client.example")
    if args.mode == "starttls":
        smtp.starttls(context=context(args))
        smtp.ehlo("client.example")
    return smtp


def login(smtp, args):
    """Authenticates with the mechanism --auth names; no-op without --user."""
    if not args.user:
        return None
    smtp.user, smtp.password = args.user, args.password
    if args.auth == "login":
        return smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
    if args.auth == "plain-no-ir":
        return smtp.auth("PLAIN", smtp.auth_plain, initial_response_ok=False)
    return smtp.auth("PLAIN", smtp.auth_plain)


def reply(code, message):
    return {"code": code, "text": message.decode(errors="replace") if isinstance(message, bytes) else str(message)}


def cmd_send(args):
    """Sends --file from --sender to every --to; reports each step's outcome."""
    with open(args.file, "rb") as f:
        message = f.read()
    result = {}
    smtp = connect(args)
    result["features"] = sorted(smtp.esmtp_features.keys())
    try:
        auth = login(smtp, args)
        if auth:
            result["auth"] = reply(*auth)
        options = ["BODY=8BITMIME"] if args.eightbit else []
        refused = smtp.sendmail(args.sender, args.to, message, mail_options=options)
        result["sent"] = True
        result["refused"] = {k: reply(*v) for k, v in refused.items()}
    except smtplib.SMTPAuthenticationError as e:
        result["sent"] = False
        result["error"] = reply(e.smtp_code, e.smtp_error)
    except smtplib.SMTPSenderRefused as e:
        result["sent"] = False
        result["error"] = reply(e.smtp_code, e.smtp_error)
    except smtplib.SMTPResponseException as e:
        result["sent"] = False
        result["error"] = reply(e.smtp_code, e.smtp_error)
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    print(json.dumps(result))


def cmd_ehlo(args):
    """The EHLO reply before and after STARTTLS (or over implicit TLS)."""
    if args.mode == "ssl":
        smtp = smtplib.SMTP_SSL(HOST, args.port, context=context(args), timeout=30)
        code, text = smtp.ehlo("client.example")
        print(json.dumps({"tls": reply(code, text)}))
    else:
        smtp = smtplib.SMTP(HOST, args.port, timeout=30)
        code, before = smtp.ehlo("client.example")
        smtp.starttls(context=context(args))
        code, after = smtp.ehlo("client.example")
        print(json.dumps({"plain": reply(code, before), "tls": reply(code, after)}))
    smtp.quit()


def cmd_hold(args):
    """Logs in, reports READY, waits for a line on stdin, then sends --file and quits."""
    with open(args.file, "rb") as f:
        message = f.read()
    smtp = connect(args)
    login(smtp, args)
    print("READY", flush=True)
    sys.stdin.readline()
    result = {}
    try:
        smtp.sendmail(args.sender, args.to, message)
        result["sent"] = True
    except smtplib.SMTPResponseException as e:
        result["sent"] = False
        result["error"] = reply(e.smtp_code, e.smtp_error)
    smtp.quit()
    print(json.dumps(result), flush=True)


def read_reply(sock):
    """One whole SMTP reply (all lines) as text, or what arrived before the close."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 3 and lines[-2][3:4] != b"-" and data.endswith(b"\r\n"):
            return data.decode(errors="replace")


def drain(sock):
    """Everything until the server closes; with whether it did close."""
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data.decode(errors="replace"), True
            data += chunk
    except (socket.timeout, ssl.SSLError, OSError):
        return data.decode(errors="replace"), False


def cmd_starttls_injection(args):
    """Pipelines an AUTH behind STARTTLS in one packet; it must not be executed."""
    sock = socket.create_connection((HOST, args.port), timeout=20)
    greeting = read_reply(sock)
    sock.sendall(b"EHLO client.example\r\n")
    before = read_reply(sock)
    creds = base64.b64encode(("\0" + args.user + "\0" + args.password).encode())
    sock.sendall(b"STARTTLS\r\nAUTH PLAIN " + creds + b"\r\n")
    starttls = read_reply(sock)
    tls = context(args).wrap_socket(sock, server_hostname=HOST)
    # Had the injected AUTH survived the handshake, its reply would come before NOOP's.
    tls.sendall(b"NOOP\r\n")
    first = read_reply(tls)
    # The EHLO state was reset: AUTH needs a new EHLO.
    tls.sendall(b"AUTH PLAIN " + creds + b"\r\n")
    auth = read_reply(tls)
    tls.sendall(b"QUIT\r\n")
    read_reply(tls)
    print(json.dumps({"greeting": greeting, "before_tls": before, "starttls": starttls,
                      "first_after_tls": first, "auth_without_ehlo": auth}))


def cmd_long_line(args):
    """Sends a line longer than the limit; the server must refuse it and close."""
    sock = socket.create_connection((HOST, args.port), timeout=20)
    read_reply(sock)
    try:
        sock.sendall(b"EHLO " + b"x" * args.size)
    except OSError:
        pass
    text, closed = drain(sock)
    print(json.dumps({"reply": text, "closed": closed}))


def cmd_many_commands(args):
    """Sends --count NOOPs before logging in; the server must give up on the client."""
    sock = socket.create_connection((HOST, args.port), timeout=20)
    read_reply(sock)
    try:
        sock.sendall(b"NOOP\r\n" * args.count)
    except OSError:
        pass
    text, closed = drain(sock)
    print(json.dumps({"replies": text.count("\r\n"), "last": text.strip().split("\r\n")[-1],
                      "closed": closed}))


def cmd_slow(args):
    """Connects and says nothing; reports what the server said and how long it waited."""
    start = time.time()
    sock = socket.create_connection((HOST, args.port), timeout=60)
    text, closed = drain(sock)
    print(json.dumps({"text": text, "closed": closed, "seconds": time.time() - start}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", required=True)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--mode", choices=["starttls", "ssl", "plain"], default="starttls")
        p.add_argument("--user")
        p.add_argument("--password")
        p.add_argument("--auth", choices=["plain", "plain-no-ir", "login"], default="plain")
        p.add_argument("--helo", action="store_true", help="greet with HELO, not EHLO")
        p.add_argument("--source", help="local address to connect from (127.0.0.x)")

    def message(p):
        p.add_argument("--sender", required=True)
        p.add_argument("--to", action="append", required=True)
        p.add_argument("--file", required=True)
        p.add_argument("--eightbit", action="store_true", help="MAIL FROM … BODY=8BITMIME")

    p = sub.add_parser("send"); common(p); message(p)
    p = sub.add_parser("ehlo"); common(p)
    p = sub.add_parser("hold"); common(p); message(p)
    p = sub.add_parser("starttls-injection"); common(p)
    p = sub.add_parser("long-line"); common(p); p.add_argument("--size", type=int, default=1 << 20)
    p = sub.add_parser("many-commands"); common(p); p.add_argument("--count", type=int, default=1000)
    p = sub.add_parser("slow"); common(p)

    args = parser.parse_args()
    handlers = {
        "send": cmd_send, "ehlo": cmd_ehlo, "hold": cmd_hold,
        "starttls-injection": cmd_starttls_injection, "long-line": cmd_long_line,
        "many-commands": cmd_many_commands, "slow": cmd_slow,
    }
    handlers[args.command](args)


if __name__ == "__main__":
    main()
