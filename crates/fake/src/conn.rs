//! Buffered reading of lines and literals from a client, with limits, and writing replies;
//! shared by the fake protocol services.

use std::io;

use bytes::{Bytes, BytesMut};
use oxbridge_wire::line::next_line;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why no line or literal could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client closed the connection.
    Eof,
    /// More than the limit arrived without a line end.
    TooLong,
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// A client connection with a read buffer. Reads are cancel-safe: bytes already received
/// stay in the buffer, so IDLE can race a read against store changes.
#[derive(Debug)]
pub(crate) struct Conn<S> {
    stream: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(crate) fn new(stream: S) -> Self {
        Conn {
            stream,
            buf: BytesMut::with_capacity(8192),
        }
    }

    /// One line including its terminator, at most `limit` bytes.
    pub(crate) async fn read_line(&mut self, limit: usize) -> Result<Bytes, ReadError> {
        loop {
            match next_line(&self.buf, limit) {
                Ok(Some(len)) => return Ok(self.buf.split_to(len).freeze()),
                Ok(None) => {}
                Err(_) => return Err(ReadError::TooLong),
            }
            self.fill().await?;
        }
    }

    /// Exactly `n` bytes (a literal's content).
    pub(crate) async fn read_exact(&mut self, n: usize) -> Result<Bytes, ReadError> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.split_to(n).freeze())
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        self.buf.reserve(16 * 1024);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(ReadError::Eof);
        }
        Ok(())
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Flushes and closes the write side (after a BYE).
    pub(crate) async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
