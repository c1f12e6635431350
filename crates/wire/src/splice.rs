//! The hot path: after login, bytes are copied both ways untouched until either side is done.
//!
//! One future drives both directions (no task or lock per direction), each direction owns a
//! fixed buffer, EOF on one side becomes a half-close on the other, and an idle timer ends
//! sessions on which nothing moved for too long. The timer is re-armed only when it fires,
//! so the per-chunk cost is one flag store.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Tuning of the splice.
#[derive(Debug, Clone, Copy)]
pub struct SpliceSettings {
    /// Bytes buffered per direction.
    pub buffer_size: usize,
    /// End the session when nothing moved either way for this long (between one and two
    /// times this, as the timer is coarse on purpose).
    pub idle_timeout: Option<Duration>,
}

impl Default for SpliceSettings {
    fn default() -> Self {
        Self {
            buffer_size: 16 * 1024,
            idle_timeout: Some(Duration::from_secs(60 * 60)),
        }
    }
}

/// What a finished splice moved, and why it ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpliceStats {
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
    pub idle_timeout: bool,
}

/// Copies `client` ⇄ `upstream` after first delivering bytes either side had already sent.
pub async fn splice<C, U>(
    client: &mut C,
    upstream: &mut U,
    client_pending: &[u8],
    upstream_pending: &[u8],
    settings: SpliceSettings,
) -> io::Result<SpliceStats>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut stats = SpliceStats::default();
    if !client_pending.is_empty() {
        upstream.write_all(client_pending).await?;
        upstream.flush().await?;
        stats.client_to_upstream += client_pending.len() as u64;
    }
    if !upstream_pending.is_empty() {
        client.write_all(upstream_pending).await?;
        client.flush().await?;
        stats.upstream_to_client += upstream_pending.len() as u64;
    }

    let mut up = Pump::new(settings.buffer_size);
    let mut down = Pump::new(settings.buffer_size);
    let mut idle = settings
        .idle_timeout
        .map(|d| (d, Box::pin(tokio::time::sleep(d))));

    let result = poll_fn(|cx| -> Poll<io::Result<bool>> {
        let up_done = up.poll(cx, Pin::new(&mut *client), Pin::new(&mut *upstream))?;
        let down_done = down.poll(cx, Pin::new(&mut *upstream), Pin::new(&mut *client))?;
        if up_done.is_ready() && down_done.is_ready() {
            return Poll::Ready(Ok(false));
        }
        if let Some((period, sleep)) = idle.as_mut() {
            while sleep.as_mut().poll(cx).is_ready() {
                if !std::mem::take(&mut up.active) && !std::mem::take(&mut down.active) {
                    return Poll::Ready(Ok(true));
                }
                let next = tokio::time::Instant::now() + *period;
                sleep.as_mut().reset(next);
            }
        }
        Poll::Pending
    })
    .await;

    stats.client_to_upstream += up.total;
    stats.upstream_to_client += down.total;
    stats.idle_timeout = result?;
    Ok(stats)
}

/// One direction of the splice.
struct Pump {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    need_flush: bool,
    done: bool,
    active: bool,
    total: u64,
}

impl Pump {
    fn new(size: usize) -> Self {
        Self {
            buf: vec![0; size.max(512)].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            need_flush: false,
            done: false,
            active: false,
            total: 0,
        }
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.start == self.end && !self.eof {
                let mut read_buf = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut read_buf) {
                    Poll::Ready(Ok(())) => {
                        let n = read_buf.filled().len();
                        if n == 0 {
                            self.eof = true;
                        } else {
                            self.start = 0;
                            self.end = n;
                            self.active = true;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.start < self.end {
                let n = ready!(writer
                    .as_mut()
                    .poll_write(cx, &self.buf[self.start..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                self.total += n as u64;
                self.need_flush = true;
            }
            if self.eof {
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt};

    #[tokio::test]
    async fn copies_both_ways_with_pending_bytes_first_and_half_close() {
        let (mut client_far, mut client_near) = duplex(64);
        let (mut upstream_near, mut upstream_far) = duplex(64);
        let task = tokio::spawn(async move {
            splice(
                &mut client_near,
                &mut upstream_near,
                b"pipelined ",
                b"banner ",
                SpliceSettings {
                    buffer_size: 7,
                    idle_timeout: None,
                },
            )
            .await
        });
        client_far.write_all(b"from client").await.unwrap();
        client_far.shutdown().await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 21];
        upstream_far.read_exact(&mut chunk).await.unwrap();
        got.extend_from_slice(&chunk);
        assert_eq!(got, b"pipelined from client");
        upstream_far.write_all(b"reply").await.unwrap();
        upstream_far.shutdown().await.unwrap();
        let mut down = Vec::new();
        client_far.read_to_end(&mut down).await.unwrap();
        assert_eq!(down, b"banner reply");
        let stats = task.await.unwrap().unwrap();
        assert_eq!(stats.client_to_upstream, 21);
        assert_eq!(stats.upstream_to_client, 12);
    }

    #[tokio::test(start_paused = true)]
    async fn ends_after_idle_timeout() {
        let (_client_far, mut client_near) = duplex(64);
        let (mut upstream_near, _upstream_far) = duplex(64);
        let stats = splice(
            &mut client_near,
            &mut upstream_near,
            b"",
            b"",
            SpliceSettings {
                buffer_size: 64,
                idle_timeout: Some(Duration::from_secs(5)),
            },
        )
        .await
        .unwrap();
        assert!(stats.idle_timeout);
    }
}
