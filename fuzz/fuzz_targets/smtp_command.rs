//! The SMTP command parser on arbitrary lines. A `MAIL FROM` sender becomes a relay
//! request that is logged and matched against the operator's rules, so it must stay a
//! plain, bounded address.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxbridge_smtp::{parse_command, Command};

fuzz_target!(|line: &[u8]| {
    match parse_command(line) {
        Command::Mail { sender } => {
            assert!(sender.len() <= 256 * 3, "{} bytes", sender.len());
            assert!(
                !sender
                    .chars()
                    .any(|c| c.is_ascii_control() || c == '<' || c == '>'),
                "{sender:?}"
            );
        }
        Command::Auth {
            mechanism,
            initial_response,
        } => {
            assert!(!mechanism.is_empty());
            assert_eq!(mechanism, mechanism.to_ascii_uppercase());
            if let Some(ir) = initial_response {
                assert!(!ir.is_empty() && !ir.contains(&b' '));
            }
        }
        Command::Ehlo(name) | Command::Helo(name) => assert!(!name.is_empty()),
        _ => {}
    }
});
