//! The SASL decoders oxbridge runs on client input: base64 responses, PLAIN messages, and
//! whole PLAIN/LOGIN exchanges (with or without an initial response) line by line.

#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use oxbridge_fuzz::pick;
use oxbridge_wire::password_sasl::{PasswordExchange, PasswordMechanism, Step};
use oxbridge_wire::sasl::{decode_plain, decode_response, SaslError};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mechanism = PasswordMechanism::ALL[pick(&mut u, 0, 1)];
    let with_ir = pick(&mut u, 0, 1) == 1;
    let rest = u.take_rest();

    // Every line on its own: as a response, and its decoding as a PLAIN message.
    for line in rest.split(|&b| b == b'\n') {
        match decode_response(line) {
            Ok(decoded) => {
                if let Ok(plain) = decode_plain(&decoded) {
                    assert!(!plain.user.is_empty() && !plain.user.contains('\0'));
                    assert!(plain.authzid.is_empty() || plain.authzid == plain.user);
                }
            }
            Err(SaslError::Cancelled) => assert_eq!(line.trim_ascii(), b"*"),
            Err(_) => {}
        }
    }

    // One exchange, fed line by line: it ends within the mechanism's steps and never
    // accepts more once over.
    let mut lines = rest.split(|&b| b == b'\n');
    let initial = if with_ir { lines.next() } else { None };
    let (mut exchange, mut step) = PasswordExchange::start(mechanism, initial);
    let mut challenges = 0;
    loop {
        match step {
            Step::Challenge(_) => {
                challenges += 1;
                assert!(challenges <= 2, "more challenges than {mechanism:?} has");
                let Some(line) = lines.next() else { break };
                step = exchange.respond(line);
            }
            Step::Done { user, .. } => {
                if mechanism == PasswordMechanism::Plain {
                    assert!(!user.is_empty());
                }
                assert!(matches!(exchange.respond(b"AGEAYg=="), Step::Failed(_)));
                break;
            }
            Step::Failed(_) => {
                assert!(matches!(exchange.respond(b"AGEAYg=="), Step::Failed(_)));
                break;
            }
        }
    }
});
