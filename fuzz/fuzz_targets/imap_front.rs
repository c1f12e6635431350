//! The IMAP pre-auth state machine, fed arbitrary client bytes split at arbitrary points,
//! with listener settings and login outcomes chosen by the input. See `oxbridge_fuzz::play`
//! for the invariants checked.

#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use oxbridge_fuzz::{pick, play, split_input, Bounds};
use oxbridge_imap::{ImapFrontEnd, ImapSettings};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let settings = ImapSettings {
        implicit_tls: pick(&mut u, 0, 1) == 1,
        starttls: pick(&mut u, 0, 1) == 1,
        allow_plaintext: pick(&mut u, 0, 1) == 1,
        // Small limits, so that inputs of a few KiB reach them.
        max_line: pick(&mut u, 16, 2048),
        max_literal: pick(&mut u, 0, 1024),
        max_commands: pick(&mut u, 1, 16) as u32,
        max_failed_logins: pick(&mut u, 1, 4) as u32,
    };
    let bounds = Bounds {
        continuation: b"+ ",
        // A command's lines and its literals (LOGIN has two).
        max_buffered: settings.max_line + 2 * settings.max_literal,
        max_lines: (settings.max_commands as usize + 2) * 12,
        tls: settings.implicit_tls,
        allow_plaintext: settings.allow_plaintext,
    };
    let mut front = ImapFrontEnd::new(settings, "192.0.2.7:4321".parse().unwrap());
    let (mut control, client) = split_input(u);
    let _ = play(&mut front, &mut control, client, bounds);
});
