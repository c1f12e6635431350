#!/usr/bin/env python3
"""A legacy POP3 client (Python's poplib, plus raw sockets for hostile input) driven by
oxbridge's end-to-end tests.

Each subcommand performs one client scenario against a running oxbridge and prints its
findings as JSON on stdout, so the Rust tests can assert on them. poplib has no AUTH
method, so AUTH PLAIN/LOGIN go through its command helpers on the same connection.
"""

import argparse
import base64
import json
import poplib
import socket
import ssl
import sys

HOST = "127.0.0.1"


def context(args):
    return ssl.create_default_context(cafile=args.ca)


def b64(data):
    return base64.b64encode(data).decode()


def text(value):
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def connect(args):
    """POP3_SSL on the implicit-TLS port, or POP3 then stls() on the plain port."""
    if args.stls:
        pop = poplib.POP3(HOST, args.port, timeout=30)
        pop.stls(context=context(args))
    elif args.plain:
        pop = poplib.POP3(HOST, args.port, timeout=30)
    else:
        pop = poplib.POP3_SSL(HOST, args.port, context=context(args), timeout=30)
    return pop


def login(pop, args):
    """Logs in the way the chosen legacy client would; returns the final reply."""
    user, password = args.user.encode(), args.password.encode()
    if args.auth == "user":
        pop.user(args.user)
        return pop.pass_(args.password)
    if args.auth == "plain-ir":
        return pop._shortcmd("AUTH PLAIN " + b64(b"\0" + user + b"\0" + password))
    if args.auth == "plain":
        challenge = pop._shortcmd("AUTH PLAIN")
        if challenge != b"+ ":
            raise RuntimeError(f"unexpected challenge {challenge!r}")
        return pop._shortcmd(b64(b"\0" + user + b"\0" + password))
    if args.auth == "login":
        prompts = [pop._shortcmd("AUTH LOGIN"), pop._shortcmd(b64(user))]
        if prompts != [b"+ VXNlcm5hbWU6", b"+ UGFzc3dvcmQ6"]:
            raise RuntimeError(f"unexpected prompts {prompts!r}")
        return pop._shortcmd(b64(password))
    if args.auth == "login-ir":
        prompt = pop._shortcmd("AUTH LOGIN " + b64(user))
        if prompt != b"+ UGFzc3dvcmQ6":
            raise RuntimeError(f"unexpected prompt {prompt!r}")
        return pop._shortcmd(b64(password))
    raise ValueError(args.auth)


def message_bytes(lines):
    """poplib returns a message as dot-unstuffed lines without their CRLF."""
    return b"".join(line + b"\r\n" for line in lines)


def cmd_session(args):
    """CAPA, login, STAT, LIST, UIDL, RETR, TOP, optionally DELE, QUIT."""
    pop = connect(args)
    result = {"greeting": text(pop.getwelcome()), "capa": sorted(pop.capa())}
    result["login"] = text(login(pop, args))
    result["stat"] = list(pop.stat())
    result["list"] = [text(line) for line in pop.list()[1]]
    result["uidl"] = [text(line) for line in pop.uidl()[1]]
    _, lines, _ = pop.retr(args.retr)
    with open(args.out, "wb") as out:
        out.write(message_bytes(lines))
    _, lines, _ = pop.top(args.retr, 0)
    result["top"] = text(message_bytes(lines))
    if args.dele:
        result["dele"] = text(pop.dele(args.dele))
    result["quit"] = text(pop.quit())
    print(json.dumps(result))


def cmd_login_fail(args):
    pop = connect(args)
    try:
        reply = login(pop, args)
    except poplib.error_proto as e:
        print(json.dumps({"failed": True, "error": text(e.args[0])}))
        try:
            pop.quit()
        except Exception:  # noqa: BLE001 - the server may have closed already
            pass
        return
    print(json.dumps({"failed": False, "reply": text(reply)}))
    pop.quit()
    sys.exit(3)


def cmd_refusals(args):
    """What a client gets for commands oxbridge refuses before login."""
    pop = connect(args)
    result = {"capa": sorted(pop.capa())}

    def attempt(name, command):
        try:
            result[name] = text(pop._shortcmd(command))
        except poplib.error_proto as e:
            result[name] = text(e.args[0])

    attempt("apop", "APOP demo c4c9334bac560ecc979e58001b3e22fb")
    attempt("stat", "STAT")
    attempt("pass_first", "PASS nobody-said-user")
    attempt("xoauth2", "AUTH XOAUTH2")
    attempt("auth_login", "AUTH LOGIN")
    attempt("cancel", "*")
    attempt("user", "USER " + args.user)
    if args.stls:
        attempt("stls_again", "STLS")
    result["quit"] = text(pop.quit())
    print(json.dumps(result))


def cmd_hold(args):
    """Logs in, reports READY, waits for a line on stdin, then retrieves and quits."""
    pop = connect(args)
    login(pop, args)
    count, _ = pop.stat()
    print("READY", flush=True)
    sys.stdin.readline()
    pop.noop()
    _, lines, _ = pop.retr(args.retr)
    with open(args.out, "wb") as out:
        out.write(message_bytes(lines))
    pop.quit()
    print(json.dumps({"done": True, "count": count}))


def read_until(sock, marker, limit=1 << 20):
    data = b""
    while marker not in data and len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLError, OSError):
            break
        if not chunk:
            break
        data += chunk
    return data


def is_closed(sock):
    try:
        return sock.recv(100) == b""
    except (ssl.SSLError, OSError):
        return True


def cmd_stls_injection(args):
    """Pipelines USER and PASS behind STLS in one packet; they must not be executed."""
    sock = socket.create_connection((HOST, args.port), timeout=20)
    greeting = read_until(sock, b"\r\n")
    sock.sendall(
        b"STLS\r\nUSER " + args.user.encode() + b"\r\nPASS " + args.password.encode() + b"\r\n"
    )
    reply = read_until(sock, b"\r\n")
    tls = context(args).wrap_socket(sock, server_hostname=HOST)
    tls.sendall(b"NOOP\r\n")
    after = read_until(tls, b"\r\n")
    tls.sendall(b"CAPA\r\n")
    capa = read_until(tls, b"\r\n.\r\n")
    tls.sendall(b"QUIT\r\n")
    quit_reply = read_until(tls, b"\r\n")
    print(json.dumps({
        "greeting": text(greeting),
        "stls_reply": text(reply),
        "after_tls": text(after),
        "capa": text(capa),
        "quit": text(quit_reply),
    }))


def cmd_long_line(args):
    """Sends a line longer than the limit; the server must refuse it and close."""
    tls = context(args).wrap_socket(
        socket.create_connection((HOST, args.port), timeout=20), server_hostname=HOST
    )
    read_until(tls, b"\r\n")
    try:
        tls.sendall(b"USER " + b"x" * args.size)
    except (ssl.SSLError, OSError):
        pass
    reply = read_until(tls, b"\r\n")
    print(json.dumps({"reply": text(reply), "closed": is_closed(tls)}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", required=True)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, creds=True):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--stls", action="store_true", help="plain port, then STLS")
        p.add_argument("--plain", action="store_true", help="plain port, no STLS")
        if creds:
            p.add_argument("--user", required=True)
            p.add_argument("--password", required=True)
            p.add_argument(
                "--auth",
                choices=["user", "plain", "plain-ir", "login", "login-ir"],
                default="user",
            )

    p = sub.add_parser("session"); common(p)
    p.add_argument("--retr", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--dele", type=int, default=0)
    p = sub.add_parser("login-fail"); common(p)
    p = sub.add_parser("refusals"); common(p)
    p = sub.add_parser("hold"); common(p)
    p.add_argument("--retr", type=int, default=1)
    p.add_argument("--out", required=True)
    p = sub.add_parser("stls-injection"); common(p)
    p = sub.add_parser("long-line"); common(p, creds=False)
    p.add_argument("--size", type=int, default=1 << 20)

    args = parser.parse_args()
    handlers = {
        "session": cmd_session, "login-fail": cmd_login_fail, "refusals": cmd_refusals,
        "hold": cmd_hold, "stls-injection": cmd_stls_injection, "long-line": cmd_long_line,
    }
    handlers[args.command](args)


if __name__ == "__main__":
    main()
