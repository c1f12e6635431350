#!/usr/bin/env python3
"""Captures real client transcripts as fuzz seeds.

Runs a small recording server per protocol that answers the way oxbridge does before login
(greeting, capabilities, AUTH PLAIN/LOGIN challenges; plain TCP, so the client's bytes are
readable), points real clients at it (curl, Python's imaplib/poplib/smtplib, swaks, msmtp),
and writes each connection's client bytes as a seed:

  seeds/<proto>_command/<client>     the raw transcript (command parser targets)
  seeds/<proto>_front/<client>       a settings header + the transcript (state machine targets)

The upstream-reply and config seeds are written by hand from EXCHANGE.md's real Exchange
Online transcripts and the documented configuration; this script does not touch them.

Usage: python3 fuzz/seeds/capture.py   (from the repository root; needs curl, swaks, msmtp)
"""

import base64
import imaplib
import os
import poplib
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading

SEEDS = os.path.dirname(os.path.abspath(__file__))
USER, PASSWORD = "demo", "s3cret pw"


def be(value, nbytes):
    return value.to_bytes(nbytes, "big")


# The settings bytes each front target reads before the client's bytes (see the targets:
# arbitrary's int_in_range reads big-endian bytes, as many as the range needs), followed by a
# zero control length so the transcript is replayed one byte at a time.
IMAP_HEADER = (
    bytes([1, 0, 0])  # implicit TLS, no STARTTLS, no plaintext
    + be(2048 - 16, 2)  # max_line 2048
    + be(1024, 2)  # max_literal 1024
    + bytes([15, 2])  # 16 commands, 3 failed logins
    + be(0, 2)
)
POP3_HEADER = bytes([0]) + bytes([1, 0, 0]) + be(2048 - 16, 2) + bytes([15, 2]) + be(0, 2)
SMTP_HEADER = POP3_HEADER


class Recorder:
    """A one-protocol server recording what each client sends."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.transcripts = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            conn, _ = self.sock.accept()
            conn.settimeout(10)
            record = bytearray()
            self.transcripts.append(record)
            threading.Thread(target=self.run, args=(conn, record), daemon=True).start()

    def run(self, conn, record):
        session = Session(conn, record)
        try:
            self.handler(session)
        except (OSError, EOFError):
            pass
        finally:
            conn.close()

    def take(self):
        done = [bytes(t) for t in self.transcripts]
        self.transcripts.clear()
        return done


class Session:
    def __init__(self, conn, record):
        self.conn, self.record, self.buf = conn, record, b""

    def send(self, text):
        self.conn.sendall(text.encode() if isinstance(text, str) else text)

    def fill(self):
        data = self.conn.recv(65536)
        if not data:
            raise EOFError
        self.record.extend(data)
        self.buf += data

    def line(self):
        while b"\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


def imap(s):
    caps = "IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN AUTH=LOGIN"
    s.send(f"* OK [CAPABILITY {caps}] oxbridge IMAP4 service ready.\r\n")
    while True:
        line = s.line()
        # Literals: answer synchronizing ones, then read them and the rest of the command.
        while line.endswith(b"}") and b"{" in line:
            size = line[line.rindex(b"{") + 1 : -1]
            sync = not size.endswith(b"+")
            if sync:
                s.send("+ Ready for literal data.\r\n")
            line += s.exact(int(size.rstrip(b"+"))) + s.line()
        parts = line.split(b" ")
        tag = parts[0].decode(errors="replace")
        verb = parts[1].upper() if len(parts) > 1 else b""
        if verb == b"UID" and len(parts) > 2:
            verb = parts[2].upper()
        if verb == b"CAPABILITY":
            s.send(f"* CAPABILITY {caps}\r\n{tag} OK CAPABILITY completed.\r\n")
        elif verb == b"AUTHENTICATE":
            if len(parts) < 4:
                prompts = ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"] if parts[2].upper() == b"LOGIN" else [""]
                for prompt in prompts:
                    s.send(f"+ {prompt}\r\n")
                    s.line()
            elif parts[2].upper() == b"LOGIN":
                s.send("+ UGFzc3dvcmQ6\r\n")
                s.line()
            s.send(f"{tag} OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] AUTHENTICATE completed.\r\n")
        elif verb == b"LOGIN":
            s.send(f"{tag} OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] LOGIN completed.\r\n")
        elif verb in (b"SELECT", b"EXAMINE"):
            s.send(f"* 1 EXISTS\r\n* FLAGS (\\Seen)\r\n* OK [UIDVALIDITY 1] ok\r\n{tag} OK [READ-WRITE] SELECT completed.\r\n")
        elif verb == b"LIST":
            s.send(f'* LIST (\\HasNoChildren) "/" INBOX\r\n{tag} OK LIST completed.\r\n')
        elif verb == b"FETCH":
            s.send(f"* 1 FETCH (UID 1 BODY[] {{7}}\r\nhello\r\n)\r\n{tag} OK FETCH completed.\r\n")
        elif verb == b"LOGOUT":
            s.send(f"* BYE signing off.\r\n{tag} OK LOGOUT completed.\r\n")
            return
        else:
            s.send(f"{tag} OK completed.\r\n")


def pop3(s):
    s.send("+OK oxbridge POP3 service ready.\r\n")
    while True:
        line = s.line()
        verb = line.split(b" ")[0].upper()
        args = line.split(b" ")[1:]
        if verb == b"CAPA":
            s.send("+OK Capability list follows\r\nUSER\r\nSASL PLAIN LOGIN\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n")
        elif verb == b"AUTH" and not args:
            s.send("+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n")
        elif verb == b"AUTH":
            mech = args[0].upper()
            if mech == b"LOGIN":
                if len(args) < 2:
                    s.send("+ VXNlcm5hbWU6\r\n")
                    s.line()
                s.send("+ UGFzc3dvcmQ6\r\n")
                s.line()
            elif len(args) < 2:
                s.send("+ \r\n")
                s.line()
            s.send("+OK User successfully authenticated.\r\n")
        elif verb == b"STAT":
            s.send("+OK 1 7\r\n")
        elif verb in (b"LIST", b"UIDL") and not args:
            s.send("+OK\r\n1 7\r\n.\r\n" if verb == b"LIST" else "+OK\r\n1 AAA\r\n.\r\n")
        elif verb in (b"RETR", b"TOP"):
            s.send("+OK\r\nhello\r\n.\r\n")
        elif verb == b"QUIT":
            s.send("+OK signing off.\r\n")
            return
        else:
            s.send("+OK\r\n")


def smtp(s):
    s.send("220 oxbridge ESMTP oxbridge ready\r\n")
    while True:
        line = s.line()
        verb = line.split(b" ")[0].upper()
        args = line.split(b" ")[1:]
        if verb == b"EHLO":
            s.send("250-oxbridge Hello [127.0.0.1]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 SMTPUTF8\r\n")
        elif verb == b"AUTH":
            mech = args[0].upper()
            if mech == b"LOGIN":
                if len(args) < 2:
                    s.send("334 VXNlcm5hbWU6\r\n")
                    s.line()
                s.send("334 UGFzc3dvcmQ6\r\n")
                s.line()
            elif len(args) < 2:
                s.send("334 \r\n")
                s.line()
            s.send("235 2.7.0 Authentication successful\r\n")
        elif verb == b"DATA":
            s.send("354 Start mail input; end with <CRLF>.<CRLF>\r\n")
            while s.line() != b".":
                pass
            s.send("250 2.6.0 Queued mail for delivery\r\n")
        elif verb == b"QUIT":
            s.send("221 2.0.0 Service closing transmission channel\r\n")
            return
        else:
            s.send("250 2.0.0 OK\r\n")


def run(args, **kw):
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, **kw)


def capture_imap(port):
    url = f"imap://127.0.0.1:{port}"
    user = f"{USER}:{PASSWORD}"
    yield "curl-list", lambda: run(["curl", "-s", "--user", user, url + "/"])
    yield "curl-fetch", lambda: run(["curl", "-s", "--user", user, url + "/INBOX;UID=1"])
    yield "curl-plain", lambda: run(["curl", "-s", "--login-options", "AUTH=PLAIN", "--user", user, url + "/INBOX;UID=1"])
    yield "curl-plain-sasl-ir", lambda: run(["curl", "-s", "--sasl-ir", "--login-options", "AUTH=PLAIN", "--user", user, url + "/"])
    yield "curl-login-mech", lambda: run(["curl", "-s", "--login-options", "AUTH=LOGIN", "--user", user, url + "/"])

    def imaplib_login():
        c = imaplib.IMAP4("127.0.0.1", port)
        c.login(USER, PASSWORD)
        c.select("INBOX")
        c.fetch("1", "(RFC822)")
        c.logout()

    def imaplib_plain():
        c = imaplib.IMAP4("127.0.0.1", port)
        c.authenticate("PLAIN", lambda _: f"\0{USER}\0{PASSWORD}".encode())
        c.logout()

    def imaplib_literal():
        # imaplib sends a password with special characters as a synchronizing literal.
        c = imaplib.IMAP4("127.0.0.1", port)
        c.literal = PASSWORD.encode() + b"\x00\xff"
        c._simple_command("LOGIN", USER, None)
        c.logout()

    yield "imaplib-login", imaplib_login
    yield "imaplib-plain", imaplib_plain
    yield "imaplib-literal", imaplib_literal


def capture_pop3(port):
    url = f"pop3://127.0.0.1:{port}"
    user = f"{USER}:{PASSWORD}"
    yield "curl-list", lambda: run(["curl", "-s", "--user", user, url + "/"])
    yield "curl-retr", lambda: run(["curl", "-s", "--user", user, url + "/1"])
    yield "curl-plain", lambda: run(["curl", "-s", "--login-options", "AUTH=PLAIN", "--user", user, url + "/1"])
    yield "curl-plain-sasl-ir", lambda: run(["curl", "-s", "--sasl-ir", "--login-options", "AUTH=PLAIN", "--user", user, url + "/"])
    yield "curl-login-mech", lambda: run(["curl", "-s", "--login-options", "AUTH=LOGIN", "--user", user, url + "/"])

    def poplib_user():
        c = poplib.POP3("127.0.0.1", port)
        c.capa()
        c.user(USER)
        c.pass_(PASSWORD)
        c.stat()
        c.retr(1)
        c.quit()

    yield "poplib-user-pass", poplib_user


def capture_smtp(port, workdir):
    message = os.path.join(workdir, "message.eml")
    with open(message, "w") as f:
        f.write("From: scanner@contoso.com\r\nTo: a@b.example\r\nSubject: scan\r\n\r\nhello\r\n")
    url = f"smtp://127.0.0.1:{port}"
    user = f"{USER}:{PASSWORD}"
    mail = ["--mail-from", "scanner@contoso.com", "--mail-rcpt", "a@b.example", "-T", message]
    yield "curl", lambda: run(["curl", "-s", "--user", user, *mail, url])
    yield "curl-login-mech", lambda: run(["curl", "-s", "--login-options", "AUTH=LOGIN", "--user", user, *mail, url])
    yield "curl-plain-sasl-ir", lambda: run(["curl", "-s", "--sasl-ir", "--login-options", "AUTH=PLAIN", "--user", user, *mail, url])
    swaks = ["swaks", "--server", f"127.0.0.1:{port}", "--from", "scanner@contoso.com", "--to", "a@b.example"]
    yield "swaks-plain", lambda: run([*swaks, "--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD])
    yield "swaks-login", lambda: run([*swaks, "--auth", "LOGIN", "--auth-user", USER, "--auth-password", PASSWORD])
    yield "swaks-relay", lambda: run(swaks)
    msmtprc = os.path.join(workdir, "msmtprc")
    with open(msmtprc, "w") as f:
        f.write(f"account default\nhost 127.0.0.1\nport {port}\ntls off\nauth plain\nuser {USER}\npassword {PASSWORD}\nfrom scanner@contoso.com\n")
    os.chmod(msmtprc, 0o600)
    yield "msmtp", lambda: run(["msmtp", "-C", msmtprc, "a@b.example"], input=open(message, "rb").read())

    def smtplib_login():
        c = smtplib.SMTP("127.0.0.1", port)
        c.ehlo("client.example")
        c.login(USER, PASSWORD)
        c.sendmail("scanner@contoso.com", ["a@b.example"], b"Subject: x\r\n\r\nhello\r\n")
        c.quit()

    yield "smtplib-login", smtplib_login


def write(target, name, data):
    directory = os.path.join(SEEDS, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def main():
    for tool in ("curl", "swaks", "msmtp"):
        if not shutil.which(tool):
            sys.exit(f"capture.py needs {tool}")
    with tempfile.TemporaryDirectory() as workdir:
        for proto, handler, clients, header in (
            ("imap", imap, capture_imap, IMAP_HEADER),
            ("pop3", pop3, capture_pop3, POP3_HEADER),
            ("smtp", smtp, lambda port: capture_smtp(port, workdir), SMTP_HEADER),
        ):
            recorder = Recorder(handler)
            for name, client in clients(recorder.port):
                client()
                for i, transcript in enumerate(recorder.take()):
                    seed = name if i == 0 else f"{name}-{i}"
                    if proto == "imap":
                        write("imap_command", seed, transcript)
                    else:
                        # The line parsers take one line: the first command worth parsing.
                        for n, line in enumerate(transcript.split(b"\r\n")[:8]):
                            write(f"{proto}_command", f"{seed}-{n}", line)
                    write(f"{proto}_front", seed, header + transcript)
                    for n, line in enumerate(transcript.split(b"\r\n")):
                        token = line.strip()
                        try:
                            base64.b64decode(token, validate=True)
                        except ValueError:
                            continue
                        if token:
                            write("sasl", f"{proto}-{seed}-{n}", bytes([0, 0]) + token + b"\n")
                print(f"{proto} {name}: captured", file=sys.stderr)


if __name__ == "__main__":
    main()
