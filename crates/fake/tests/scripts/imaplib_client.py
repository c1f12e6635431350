"""Drives the fake Exchange IMAP service with Python's imaplib, as a real client would.

Environment: PORT, CA (CA file), USER_ADDR, TOKEN, MESSAGE (file with message 1's bytes).
Prints PASS on success; any failed assertion exits non-zero with a traceback.
"""
import imaplib
import os
import ssl
import time

ctx = ssl.create_default_context(cafile=os.environ["CA"])
M = imaplib.IMAP4_SSL("127.0.0.1", int(os.environ["PORT"]), ssl_context=ctx)
user, token = os.environ["USER_ADDR"], os.environ["TOKEN"]
expected = open(os.environ["MESSAGE"], "rb").read()

typ, caps = M.capability()
assert typ == "OK" and b"AUTH=XOAUTH2" in caps[0], caps
typ, _ = M.authenticate("XOAUTH2", lambda _: f"user={user}\x01auth=Bearer {token}\x01\x01".encode())
assert typ == "OK"

typ, data = M.list()
assert typ == "OK" and any(b'"Sent Items"' in d for d in data), data
typ, data = M.select("INBOX")
assert (typ, data) == ("OK", [b"2"]), (typ, data)
typ, data = M.search(None, "UNSEEN")
assert data == [b"1 2"], data

typ, data = M.fetch("1", "(RFC822)")
assert typ == "OK" and data[0][1] == expected, data
typ, data = M.search(None, "SEEN")
assert data == [b"1"], data

typ, data = M.uid("FETCH", "1:*", "(FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE INTERNALDATE)")
assert typ == "OK" and len([d for d in data if d != b")"]) == 2, data
typ, data = M.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
assert data[0][1] == b"Subject: second\r\n\r\n", data

typ, _ = M.store("2", "+FLAGS", "\\Deleted")
typ, data = M.expunge()
assert data == [b"2"], data
typ, data = M.append("Drafts", "(\\Draft)", imaplib.Time2Internaldate(time.time()), b"Subject: draft\r\n\r\nx\r\n")
assert typ == "OK", data
typ, data = M.status("Drafts", "(MESSAGES UIDNEXT)")
assert data == [b"Drafts (MESSAGES 1 UIDNEXT 2)"], data
typ, data = M.namespace()
assert typ == "OK", data
M.close()
typ, data = M.logout()
assert typ == "BYE", (typ, data)
print("PASS")
