//! A faithful fake of Exchange Online (IMAP, POP3, SMTP) and Entra ID for tests, benchmarks and the demo.
