#!/usr/bin/env python3
"""Real mail clients (Python's imaplib and raw sockets) driven by oxbridge's end-to-end tests.

Each subcommand performs one client scenario against a running oxbridge and prints its
findings as JSON on stdout, so the Rust tests can assert on them.
"""

import argparse
import base64
import concurrent.futures
import imaplib
import json
import socket
import ssl
import sys
import time

HOST = "127.0.0.1"


def context(args):
    ctx = ssl.create_default_context(cafile=args.ca)
    return ctx


def connect(args):
    if args.starttls:
        imap = imaplib.IMAP4(HOST, args.port, timeout=30)
        imap.starttls(ssl_context=context(args))
    else:
        imap = imaplib.IMAP4_SSL(HOST, args.port, ssl_context=context(args), timeout=30)
    return imap


def login(imap, args):
    if args.auth == "plain":
        creds = b"\0" + args.user.encode() + b"\0" + args.password.encode()
        return imap.authenticate("PLAIN", lambda _: creds)
    if args.auth == "login-mech":
        answers = iter([args.user.encode(), args.password.encode()])
        return imap.authenticate("LOGIN", lambda _: next(answers))
    return imap.login(args.user, args.password)


def fetch_uid(imap, uid):
    typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
    if typ != "OK" or not data or not isinstance(data[0], tuple):
        raise RuntimeError(f"fetch failed: {typ} {data!r}")
    return data[0][1]


def cmd_fetch(args):
    imap = connect(args)
    typ, data = login(imap, args)
    result = {"login": [typ, data[0].decode(errors="replace")]}
    result["capabilities"] = list(imap.capabilities)
    typ, folders = imap.list()
    result["list"] = [f.decode(errors="replace") for f in folders]
    typ, data = imap.select("INBOX")
    result["exists"] = int(data[0])
    body = fetch_uid(imap, args.uid)
    with open(args.out, "wb") as out:
        out.write(body)
    typ, data = imap.uid("SEARCH", None, "ALL")
    result["uids"] = data[0].decode().split()
    typ, data = imap.logout()
    result["logout"] = typ
    print(json.dumps(result))


def cmd_login_fail(args):
    imap = connect(args)
    try:
        login(imap, args)
    except imaplib.IMAP4.error as e:
        print(json.dumps({"failed": True, "error": str(e)}))
        try:
            imap.logout()
        except Exception:
            pass
        return
    print(json.dumps({"failed": False}))
    imap.logout()
    sys.exit(3)


def cmd_concurrent(args):
    def one(_):
        imap = connect(args)
        try:
            login(imap, args)
            imap.select("INBOX")
            imap.logout()
            return True
        except Exception as e:  # noqa: BLE001 - report every failure kind
            sys.stderr.write(f"login failed: {e}\n")
            return False

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.n) as pool:
        results = list(pool.map(one, range(args.n)))
    print(json.dumps({"ok": sum(results), "total": len(results)}))


def cmd_idle(args):
    imap = connect(args)
    login(imap, args)
    typ, data = imap.select("INBOX")
    before = int(data[0])
    tag = imap._new_tag().decode()
    imap.send(f"{tag} IDLE\r\n".encode())
    cont = imap.readline()
    if not cont.startswith(b"+"):
        raise RuntimeError(f"IDLE refused: {cont!r}")
    print("IDLING", flush=True)
    exists = None
    deadline = time.time() + 20
    while time.time() < deadline:
        line = imap.readline()
        if line.endswith(b"EXISTS\r\n"):
            exists = int(line.split()[1])
            break
    imap.send(b"DONE\r\n")
    done = imap.readline()
    while not done.startswith(tag.encode()):
        done = imap.readline()
    imap.logout()
    print(json.dumps({"before": before, "exists": exists, "done": done.decode().strip()}))


def cmd_hold(args):
    """Logs in, reports READY, waits for a line on stdin, then fetches and logs out."""
    imap = connect(args)
    login(imap, args)
    imap.select("INBOX")
    print("READY", flush=True)
    sys.stdin.readline()
    imap.noop()
    body = fetch_uid(imap, args.uid)
    with open(args.out, "wb") as out:
        out.write(body)
    imap.logout()
    print(json.dumps({"done": True}))


def read_until(sock, marker, limit=1 << 20):
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def raw_tls(args):
    raw = socket.create_connection((HOST, args.port), timeout=20)
    return context(args).wrap_socket(raw, server_hostname=HOST)


def cmd_starttls_injection(args):
    """Pipelines a LOGIN behind STARTTLS in the same packet; it must not be executed."""
    sock = socket.create_connection((HOST, args.port), timeout=20)
    greeting = read_until(sock, b"\r\n")
    sock.sendall(b"a STARTTLS\r\nb LOGIN " + args.user.encode() + b" " + args.password.encode() + b"\r\n")
    reply = read_until(sock, b"a OK")
    tls = context(args).wrap_socket(sock, server_hostname=HOST)
    tls.sendall(b"c CAPABILITY\r\n")
    after = read_until(tls, b"c OK")
    tls.sendall(b"d LOGOUT\r\n")
    read_until(tls, b"d OK")
    print(json.dumps({
        "greeting": greeting.decode(errors="replace"),
        "starttls_reply": reply.decode(errors="replace"),
        "after_tls": after.decode(errors="replace"),
    }))


def cmd_big_literal(args):
    """Announces a huge literal in LOGIN; the server must refuse without asking for it."""
    tls = raw_tls(args)
    read_until(tls, b"\r\n")
    tls.sendall(b"a LOGIN {104857600}\r\n")
    refused = read_until(tls, b"\r\n")
    tls.sendall(b"b NOOP\r\n")
    noop = read_until(tls, b"b ")
    tls.sendall(b"c LOGIN {4294967296+}\r\n")
    bye = read_until(tls, b"\r\n")
    try:
        rest = tls.recv(100)
    except (ssl.SSLError, OSError):
        rest = b""
    print(json.dumps({
        "sync": refused.decode(errors="replace"),
        "noop": noop.decode(errors="replace"),
        "nonsync": bye.decode(errors="replace"),
        "closed": rest == b"",
    }))


def cmd_long_line(args):
    """Sends a line longer than the limit; the server must answer BYE and close."""
    tls = raw_tls(args)
    read_until(tls, b"\r\n")
    try:
        tls.sendall(b"a " + b"x" * args.size)
    except (ssl.SSLError, OSError):
        pass
    reply = read_until(tls, b"\r\n")
    try:
        rest = tls.recv(100)
    except (ssl.SSLError, OSError):
        rest = b""
    print(json.dumps({"reply": reply.decode(errors="replace"), "closed": rest == b""}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", required=True)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, creds=True):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--starttls", action="store_true")
        if creds:
            p.add_argument("--user", required=True)
            p.add_argument("--password", required=True)
            p.add_argument("--auth", choices=["login", "plain", "login-mech"], default="login")

    p = sub.add_parser("fetch"); common(p)
    p.add_argument("--uid", type=int, default=1); p.add_argument("--out", required=True)
    p = sub.add_parser("login-fail"); common(p)
    p = sub.add_parser("concurrent"); common(p); p.add_argument("--n", type=int, default=50)
    p = sub.add_parser("idle"); common(p)
    p = sub.add_parser("hold"); common(p)
    p.add_argument("--uid", type=int, default=1); p.add_argument("--out", required=True)
    p = sub.add_parser("starttls-injection"); common(p)
    p = sub.add_parser("big-literal"); common(p, creds=False)
    p = sub.add_parser("long-line"); common(p, creds=False); p.add_argument("--size", type=int, default=1 << 20)

    args = parser.parse_args()
    handlers = {
        "fetch": cmd_fetch, "login-fail": cmd_login_fail, "concurrent": cmd_concurrent,
        "idle": cmd_idle, "hold": cmd_hold, "starttls-injection": cmd_starttls_injection,
        "big-literal": cmd_big_literal, "long-line": cmd_long_line,
    }
    handlers[args.command](args)


if __name__ == "__main__":
    main()
