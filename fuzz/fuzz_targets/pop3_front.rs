//! The POP3 pre-auth state machine, fed arbitrary client bytes split at arbitrary points,
//! with listener settings, the upstream's CAPA lines and login outcomes chosen by the input.
//! See `oxbridge_fuzz::play` for the invariants checked.

#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use oxbridge_fuzz::{pick, play, split_input, Bounds};
use oxbridge_pop3::{Pop3FrontEnd, Pop3Settings, UpstreamCapabilities};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    // What an upstream's CAPA said ends up in oxbridge's own CAPA reply.
    let capa_len = pick(&mut u, 0, 64);
    let capa = u.bytes(capa_len.min(u.len())).unwrap_or_default();
    let capa = String::from_utf8_lossy(capa);
    let settings = Pop3Settings {
        implicit_tls: pick(&mut u, 0, 1) == 1,
        starttls: pick(&mut u, 0, 1) == 1,
        allow_plaintext: pick(&mut u, 0, 1) == 1,
        max_line: pick(&mut u, 16, 2048),
        max_commands: pick(&mut u, 1, 16) as u32,
        max_failed_logins: pick(&mut u, 1, 4) as u32,
        upstream: UpstreamCapabilities::from_capa_lines(capa.split('\n')),
    };
    let bounds = Bounds {
        continuation: b"+ ",
        max_buffered: settings.max_line,
        max_lines: (settings.max_commands as usize + 2) * (12 + settings.upstream.iter().count()),
        tls: settings.implicit_tls,
        allow_plaintext: settings.allow_plaintext,
    };
    let mut front = Pop3FrontEnd::new(settings, "192.0.2.7:4321".parse().unwrap());
    let (mut control, client) = split_input(u);
    let _ = play(&mut front, &mut control, client, bounds);
});
