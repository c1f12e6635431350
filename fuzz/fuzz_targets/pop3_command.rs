//! The POP3 command parser on arbitrary lines.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxbridge_pop3::{parse_command, Command};

fuzz_target!(|line: &[u8]| {
    match parse_command(line) {
        Command::User(name) => {
            assert!(!name.is_empty() && !name.trim_ascii().is_empty());
            assert!(!name.ends_with(b" "));
        }
        Command::Pass(password) => assert!(password.len() < line.len()),
        Command::Auth {
            mechanism: Some(mechanism),
            initial_response,
        } => {
            assert!(!mechanism.is_empty());
            assert!(mechanism
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            if let Some(ir) = initial_response {
                assert!(!ir.is_empty() && !ir.contains(&b' '));
            }
        }
        _ => {}
    }
});
