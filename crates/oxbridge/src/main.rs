//! oxbridge: an OAuth2-terminating IMAP/POP3/SMTP proxy for Exchange Online.
fn main() {}
