//! The SMTP pre-auth state machine, fed arbitrary client bytes split at arbitrary points,
//! with listener settings, the upstream's EHLO extensions and login and relay outcomes
//! chosen by the input. See `oxbridge_fuzz::play` for the invariants checked.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use oxbridge_fuzz::{pick, play, split_input, Bounds};
use oxbridge_smtp::{Extensions, SmtpFrontEnd, SmtpSettings};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    // What an upstream's EHLO said ends up in oxbridge's own EHLO reply.
    let ehlo_len = pick(&mut u, 0, 64);
    let ehlo = u.bytes(ehlo_len.min(u.len())).unwrap_or_default();
    let extensions = Extensions::from_lines(
        String::from_utf8_lossy(ehlo)
            .split('\n')
            .map(str::to_string),
    );
    let settings = SmtpSettings {
        implicit_tls: pick(&mut u, 0, 1) == 1,
        starttls: pick(&mut u, 0, 1) == 1,
        allow_plaintext: pick(&mut u, 0, 1) == 1,
        max_line: pick(&mut u, 16, 2048),
        max_commands: pick(&mut u, 1, 16) as u32,
        max_failed_logins: pick(&mut u, 1, 4) as u32,
        ..SmtpSettings::default()
    };
    let bounds = Bounds {
        continuation: b"334 ",
        max_buffered: settings.max_line,
        max_lines: (settings.max_commands as usize + 2) * (12 + extensions.lines().len()),
        tls: settings.implicit_tls,
        allow_plaintext: settings.allow_plaintext,
    };
    let mut front = SmtpFrontEnd::new(
        settings,
        "192.0.2.7:4321".parse().unwrap(),
        Arc::new(extensions),
    );
    let (mut control, client) = split_input(u);
    let _ = play(&mut front, &mut control, client, bounds);
});
