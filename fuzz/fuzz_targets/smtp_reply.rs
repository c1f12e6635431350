//! The upstream SMTP reply path: each line parsed as the back-end reads it, whole replies in
//! the wire form the front-end passes through to clients (`535 5.7.139 …` verbatim), and
//! EHLO extensions rewritten into oxbridge's own EHLO reply. Whatever the upstream sends,
//! what reaches the client is whole reply lines with one code: no forged line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxbridge_smtp::{parse_reply_line, Extensions, Reply};

fuzz_target!(|data: &[u8]| {
    let mut lines = Vec::new();
    for raw in data.split_inclusive(|&b| b == b'\n') {
        if let Some(line) = parse_reply_line(raw) {
            assert!((200..600).contains(&line.code));
            lines.push(line);
        }
    }
    if let Some(first) = lines.first() {
        let reply = Reply {
            code: first.code,
            lines: lines.iter().map(|l| l.text.clone()).collect(),
        };
        let wire = reply.to_wire();
        let count = wire.split("\r\n").count();
        assert_eq!(count, reply.lines.len().max(1), "{wire:?}");
        for line in wire.split("\r\n") {
            assert!(!line.contains(['\r', '\n']), "{wire:?}");
            assert!(line.starts_with(&first.code.to_string()), "{wire:?}");
        }
        let back = Reply::from_wire(&wire).expect("to_wire output parses");
        assert_eq!(back.code, reply.code);
        assert_eq!(back.lines.len(), reply.lines.len().max(1));

        let extensions = Extensions::from_ehlo(&reply);
        for starttls in [false, true] {
            for auth in [false, true] {
                // The hop's own extensions are oxbridge's: exactly one AUTH line (ours) when
                // logins are allowed, none otherwise; STARTTLS likewise.
                let advertised = extensions.advertised(starttls, auth);
                let keyword =
                    |line: &String| line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                let auths: Vec<&String> = advertised
                    .iter()
                    // `AUTH=` alone names no mechanism; it is passed on like any keyword.
                    .filter(|l| {
                        let k = keyword(l);
                        k == "AUTH" || (k.starts_with("AUTH=") && k.len() > 5)
                    })
                    .collect();
                assert_eq!(auths.len(), usize::from(auth), "{advertised:?}");
                if auth {
                    assert_eq!(auths[0], "AUTH PLAIN LOGIN");
                }
                let starttls_lines = advertised
                    .iter()
                    .filter(|l| keyword(l) == "STARTTLS")
                    .count();
                assert_eq!(starttls_lines, usize::from(starttls), "{advertised:?}");
                let wire = Reply {
                    code: 250,
                    lines: advertised,
                }
                .to_wire();
                assert!(wire.split("\r\n").all(|l| l.starts_with("250")));
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(reply) = Reply::from_wire(text) {
            let _ = reply.to_wire();
        }
    }
});
