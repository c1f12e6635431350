//! IMAP command framing ([`assemble`]: lines, literals, continuations under limits) and the
//! nom command parser ([`parse_command`]) on arbitrary bytes.
//!
//! Besides "no panic", framing must not depend on how the bytes arrived: every proper
//! prefix of a complete command is incomplete, a refused literal is skipped within the
//! input, and a continuation is only asked for once per literal.

#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use oxbridge_fuzz::pick;
use oxbridge_imap::{assemble, parse_command, Assembled, Command};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let max_line = pick(&mut u, 16, 4096);
    let max_literal = pick(&mut u, 0, 1024);
    let input = u.take_rest();

    if let Some((tag, command)) = parse_command(input) {
        assert!(!tag.is_empty() && !tag.contains([' ', '\r', '\n', '+']));
        if let Command::Authenticate { mechanism, .. } = command {
            assert_eq!(mechanism, mechanism.to_ascii_uppercase());
        }
    }

    let mut acknowledged = 0;
    match assemble(input, max_line, max_literal, &mut acknowledged) {
        Assembled::Complete { len } => {
            assert!(len > 0 && len <= input.len());
            let _ = parse_command(&input[..len]);
            for cut in [0, len / 3, len / 2, len - 1] {
                let mut acked = 0;
                let prefix = assemble(&input[..cut], max_line, max_literal, &mut acked);
                assert!(
                    matches!(prefix, Assembled::Incomplete { .. }),
                    "prefix of {cut} bytes of a {len}-byte command: {prefix:?}"
                );
            }
            // Asking again once the literals were acknowledged needs no new continuation.
            let mut again = acknowledged;
            assert_eq!(
                assemble(input, max_line, max_literal, &mut again),
                Assembled::Complete { len }
            );
        }
        Assembled::LiteralTooLarge { tag, skip, .. } => {
            assert!(skip <= input.len());
            assert!(!tag.contains(['\r', '\n']));
        }
        Assembled::Incomplete { continuation } => {
            if continuation {
                let mut again = acknowledged;
                assert_eq!(
                    assemble(input, max_line, max_literal, &mut again),
                    Assembled::Incomplete {
                        continuation: false
                    },
                    "the same literal was asked for twice"
                );
            }
        }
        Assembled::LineTooLong => {}
    }
});
