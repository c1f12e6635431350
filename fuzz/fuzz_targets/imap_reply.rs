//! The upstream IMAP reply path of the back-end: each line as `read_line` frames it, parsed
//! with imap-proto exactly as every login step does, and the capability lists rendered as
//! they go into the client's `OK [CAPABILITY …]`. Nothing an upstream sends may panic or put
//! a line break (a forged reply line) into that client reply.

#![no_main]

use bytes::BytesMut;
use imap_proto::{Response, ResponseCode};
use libfuzzer_sys::fuzz_target;
use oxbridge_imap::{parse_upstream_line, render_capabilities};
use oxbridge_wire::line::next_line;
use oxbridge_wire::upstream::MAX_UPSTREAM_LINE;

fn check_rendered(text: &str) {
    assert!(!text.contains(['\r', '\n', ']']), "{text:?}");
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(len)) = next_line(&buf, MAX_UPSTREAM_LINE) {
        let line = buf.split_to(len);
        match parse_upstream_line(&line) {
            Ok(Response::Capabilities(caps)) => check_rendered(&render_capabilities(&caps)),
            Ok(Response::Done {
                code: Some(ResponseCode::Capabilities(caps)),
                ..
            }) => check_rendered(&render_capabilities(&caps)),
            Ok(_) | Err(_) => {}
        }
    }
});
