//! IMAP front-end (pre-auth state machine and parser) and back-end (XOAUTH2 login upstream).
