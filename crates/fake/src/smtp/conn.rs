//! A submission connection's framing: command lines, DATA up to the lone dot (with
//! dot-stuffing undone), BDAT chunks, and handing the bare stream over for STARTTLS with
//! whatever the client pipelined behind it dropped.

use std::io;

use bytes::{Bytes, BytesMut};
use oxbridge_wire::line::next_line;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest line inside message data; RFC 5322 says 998, real mail is sloppier.
const MAX_DATA_LINE: usize = 1024 * 1024;

/// Why nothing could be read.
#[derive(Debug)]
pub(super) enum ReadError {
    Eof,
    TooLong,
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

#[derive(Debug)]
pub(super) struct SmtpConn<S> {
    stream: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpConn<S> {
    pub(super) fn new(stream: S) -> Self {
        SmtpConn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// The stream without the read buffer: bytes a client sent after STARTTLS but before the
    /// handshake are dropped, never executed.
    pub(super) fn into_inner(self) -> S {
        self.stream
    }

    /// One line including its terminator, at most `limit` bytes.
    pub(super) async fn read_line(&mut self, limit: usize) -> Result<Bytes, ReadError> {
        loop {
            match next_line(&self.buf, limit) {
                Ok(Some(len)) => return Ok(self.buf.split_to(len).freeze()),
                Ok(None) => {}
                Err(_) => return Err(ReadError::TooLong),
            }
            self.fill().await?;
        }
    }

    /// Message data up to the line holding a lone `.`, with dot-stuffing undone. `None` if it
    /// grew beyond `max` bytes (it is still read to the end, so the session stays in step).
    pub(super) async fn read_data(&mut self, max: usize) -> Result<Option<Vec<u8>>, ReadError> {
        let mut message = Vec::new();
        let mut too_big = false;
        loop {
            let line = self.read_line(MAX_DATA_LINE).await?;
            if line.as_ref() == b".\r\n" || line.as_ref() == b".\n" {
                break;
            }
            let content = line.strip_prefix(b".").unwrap_or(&line);
            if too_big || message.len() + content.len() > max {
                too_big = true;
                message = Vec::new();
            } else {
                message.extend_from_slice(content);
            }
        }
        Ok((!too_big).then_some(message))
    }

    /// Reads a BDAT chunk of `size` bytes, appending it to `sink` if there is one.
    pub(super) async fn read_chunk(
        &mut self,
        size: u64,
        mut sink: Option<&mut Vec<u8>>,
    ) -> Result<(), ReadError> {
        let mut left = size;
        while left > 0 {
            if self.buf.is_empty() {
                self.fill().await?;
            }
            let take = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let part = self.buf.split_to(take);
            if let Some(sink) = sink.as_deref_mut() {
                sink.extend_from_slice(&part);
            }
            left -= take as u64;
        }
        Ok(())
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        self.buf.reserve(64 * 1024);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(ReadError::Eof);
        }
        Ok(())
    }

    /// Sends one reply (already in wire form, without the final CRLF).
    pub(super) async fn reply(&mut self, reply: &str) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(reply.len() + 2);
        bytes.extend_from_slice(reply.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await
    }

    pub(super) async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
