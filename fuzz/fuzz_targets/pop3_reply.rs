//! The upstream POP3 reply path of the back-end: each reply line classified, and the whole
//! login dialog after the greeting (CAPA, `AUTH XOAUTH2`, the token, the verdict) played
//! against an upstream whose every byte comes from the fuzz input, delivered in chunks the
//! input chooses.
//!
//! Invariants: no panic; success only after the token was sent; the capabilities learned
//! (which oxbridge repeats in its own CAPA replies) hold no line breaks.

#![no_main]

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use oxbridge_fuzz::pick;
use oxbridge_pop3::{parse_upstream_reply, upstream_dialog, UpstreamReply};
use oxbridge_wire::Secret;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An upstream that replies with scripted bytes, in scripted chunks, and records what it
/// was sent. It never blocks, so the dialog completes in one poll.
struct Scripted<'a> {
    replies: &'a [u8],
    chunks: Vec<usize>,
    sent: Vec<u8>,
}

impl AsyncRead for Scripted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let chunk = self.chunks.pop().unwrap_or(usize::MAX);
        let n = chunk.min(self.replies.len()).min(buf.remaining());
        let (now, later) = self.replies.split_at(n);
        buf.put_slice(now);
        self.replies = later;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sent.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    // The reply texts only reach logs (escaped there), never a client, so a stray CR in one
    // is harmless; the classification just must not panic.
    for line in data.split_inclusive(|&b| b == b'\n') {
        if let UpstreamReply::Ok(text) | UpstreamReply::Err(text) = parse_upstream_reply(line) {
            assert!(!text.contains('\n'));
        }
    }

    let mut u = Unstructured::new(data);
    let chunks = (0..pick(&mut u, 0, 16))
        .map(|_| pick(&mut u, 1, 64))
        .collect();
    let mut upstream = Scripted {
        replies: u.take_rest(),
        chunks,
        sent: Vec::new(),
    };
    let mut buf = BytesMut::new();
    let token = Secret::from("EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA");
    let result = {
        let dialog = pin!(upstream_dialog(
            &mut upstream,
            &mut buf,
            "alex@contoso.com",
            &token
        ));
        match dialog.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("the dialog waited on a stream that never blocks"),
        }
    };
    if let Ok(capabilities) = result {
        let token_line = b"\r\ndXNlcj1hbGV4QGNvbnRvc28uY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==\r\n";
        assert!(
            upstream
                .sent
                .windows(token_line.len())
                .any(|w| w == token_line),
            "login reported without sending the token"
        );
        for line in capabilities
            .iter()
            .flat_map(|c| c.iter().collect::<Vec<_>>())
        {
            assert!(!line.contains(['\r', '\n']), "{line:?}");
        }
    }
});
