#!/usr/bin/env python3
"""Raw-socket clients for oxbridge's operations tests (drain, reload, PROXY protocol).

Each subcommand connects, does its part of a scenario and prints JSON on stdout. The
"wait" commands print READY (flushed) once their session is established, then record every
line the server sends until it closes the connection, so the Rust test can act in between
(send SIGTERM, reload) and then assert on what the client saw.
"""

import argparse
import json
import socket
import ssl
import sys
import time

HOST = "127.0.0.1"


def tls(args, raw):
    ctx = ssl.create_default_context(cafile=args.ca)
    return ctx.wrap_socket(raw, server_hostname=HOST)


class Lines:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest if rest else None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"

    def until_tag(self, tag):
        seen = []
        while True:
            line = self.line()
            if line is None:
                raise RuntimeError(f"closed while waiting for {tag}: {seen!r}")
            seen.append(line.decode(errors="replace"))
            if line.startswith(tag.encode() + b" "):
                return seen

    def rest(self):
        lines = []
        while True:
            try:
                line = self.line()
            except (ConnectionResetError, ssl.SSLError) as e:
                lines.append(f"<{type(e).__name__}>")
                break
            if line is None:
                break
            lines.append(line.decode(errors="replace"))
        return lines


def connect(args):
    raw = socket.create_connection((HOST, args.port), timeout=60)
    if args.proxy_header:
        raw.sendall(bytes.fromhex(args.proxy_header))
    return tls(args, raw) if args.tls else raw


def report_after_ready(conn, lines, extra=None):
    print("READY", flush=True)
    started = time.time()
    after = lines.rest()
    result = {"after": after, "seconds": round(time.time() - started, 2)}
    result.update(extra or {})
    print(json.dumps(result), flush=True)


def cmd_imap_wait(args):
    conn = connect(args)
    lines = Lines(conn)
    greeting = lines.line()
    conn.sendall(f"a1 LOGIN {args.user} \"{args.password}\"\r\n".encode())
    login = lines.until_tag("a1")
    if not login[-1].startswith("a1 OK"):
        print(json.dumps({"greeting": greeting.decode(), "login": login}), flush=True)
        return
    conn.sendall(b"a2 SELECT INBOX\r\n")
    lines.until_tag("a2")
    report_after_ready(conn, lines, {"login": login[-1]})


def cmd_imap_login(args):
    """Logs in and out once; prints the greeting and the tagged replies, or that the
    server closed the connection before greeting."""
    try:
        conn = connect(args)
        lines = Lines(conn)
        greeting = lines.line()
    except (ConnectionError, ssl.SSLError, OSError):
        greeting = None
    if greeting is None:
        print(json.dumps({"closed": True}), flush=True)
        return
    conn.sendall(f"a1 LOGIN {args.user} \"{args.password}\"\r\n".encode())
    login = lines.until_tag("a1")[-1]
    conn.sendall(b"a2 LOGOUT\r\n")
    logout = lines.rest()
    print(json.dumps({"greeting": greeting.decode(), "login": login, "logout": logout}), flush=True)


def cmd_pop3_wait(args):
    conn = connect(args)
    lines = Lines(conn)
    lines.line()
    conn.sendall(f"USER {args.user}\r\n".encode())
    lines.line()
    conn.sendall(f"PASS {args.password}\r\n".encode())
    reply = lines.line().decode()
    if not reply.startswith("+OK"):
        print(json.dumps({"login": reply}), flush=True)
        return
    conn.sendall(b"STAT\r\n")
    lines.line()
    report_after_ready(conn, lines, {"login": reply})


def cmd_preauth_wait(args):
    conn = connect(args)
    lines = Lines(conn)
    greeting = lines.line()
    report_after_ready(conn, lines, {"greeting": greeting.decode()})


def cmd_smtp_relay(args):
    """Submits one message without AUTH (a relay rule must cover the client)."""
    conn = connect(args)
    lines = Lines(conn)

    def reply():
        text = []
        while True:
            line = lines.line().decode()
            text.append(line)
            if line[3:4] != "-":
                return "".join(text)

    result = {"greeting": reply()}
    conn.sendall(b"EHLO scanner.example\r\n")
    result["ehlo"] = reply()
    conn.sendall(f"MAIL FROM:<{args.sender}>\r\n".encode())
    result["mail"] = reply()
    conn.sendall(b"QUIT\r\n")
    result["quit"] = lines.rest()
    print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", required=True)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, creds=True):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--tls", action="store_true", help="implicit TLS")
        p.add_argument("--proxy-header", default="", help="hex bytes sent first")
        if creds:
            p.add_argument("--user", required=True)
            p.add_argument("--password", required=True)

    common(sub.add_parser("imap-wait"))
    common(sub.add_parser("imap-login"))
    common(sub.add_parser("pop3-wait"))
    common(sub.add_parser("preauth-wait"), creds=False)
    p = sub.add_parser("smtp-relay")
    common(p, creds=False)
    p.add_argument("--sender", required=True)
    args = parser.parse_args()
    {
        "imap-wait": cmd_imap_wait,
        "imap-login": cmd_imap_login,
        "pop3-wait": cmd_pop3_wait,
        "preauth-wait": cmd_preauth_wait,
        "smtp-relay": cmd_smtp_relay,
    }[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
