//! The hot path: after login, bytes are copied both ways untouched until either side is done.
//!
//! One future drives both directions (no task or lock per direction). A direction holds no
//! buffer while idle: it reads into a per-thread scratch buffer only when its socket is
//! readable, writes straight from it, and keeps a heap copy only of what the other side
//! could not take yet. EOF on one side becomes a half-close on the other, and an idle timer
//! ends sessions on which nothing moved for too long; it is re-armed only when it fires,
//! so the per-chunk cost is one flag store (and one byte store, see below).
//!
//! A server that must end a spliced session (the drain at shutdown) cannot know where the
//! protocol's messages begin and end: it never parses the traffic. [`splice_until`] therefore
//! stops at the best point it can find without parsing: it stops forwarding the client's
//! commands, lets the upstream finish what it is sending, and returns once that direction has
//! been quiet for a moment with nothing held back. [`SpliceStats::at_line_boundary`] then
//! says whether the last byte the client got was a line feed, so a protocol that allows an
//! unsolicited line between responses (IMAP's untagged `* BYE`) can say goodbye.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

/// Size of the per-thread read buffer: several TLS records per read.
const SCRATCH_SIZE: usize = 64 * 1024;
/// Another read is worth making only if a whole TLS record's plaintext fits.
const MIN_READ_ROOM: usize = 16 * 1024;

/// While stopping, the upstream direction counts as finished once nothing has moved for
/// this long: a response in progress arrives in bursts far closer together than this.
const DRAIN_QUIET: Duration = Duration::from_millis(250);

/// While stopping, give up waiting for a quiet moment after this long (a mailbox streaming
/// a large message, or IDLE updates arriving back to back).
const DRAIN_MAX: Duration = Duration::from_secs(3);

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// Tuning of the splice.
#[derive(Debug, Clone, Copy)]
pub struct SpliceSettings {
    /// End the session when nothing moved either way for this long (between one and two
    /// times this, as the timer is coarse on purpose).
    pub idle_timeout: Option<Duration>,
}

impl Default for SpliceSettings {
    fn default() -> Self {
        Self {
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
    /// The `stop` future of [`splice_until`] ended the splice (both connections are intact).
    pub stopped: bool,
    /// When stopped: everything read from the upstream reached the client and the last
    /// byte was a line feed, so the client is between lines (as far as can be known
    /// without parsing).
    pub at_line_boundary: bool,
}

/// Called with the bytes each write moved, per direction, as they move: live metrics
/// without waiting for a session (an IDLE that lasts days, a mailbox sync) to end, and
/// without losing the count when it ends in an error. Meant to be a relaxed atomic add.
#[derive(Clone, Copy)]
pub struct Meters<'a> {
    pub client_to_upstream: &'a (dyn Fn(u64) + Send + Sync),
    pub upstream_to_client: &'a (dyn Fn(u64) + Send + Sync),
}

impl Meters<'static> {
    /// Counting nothing.
    pub const NONE: Meters<'static> = Meters {
        client_to_upstream: &|_| {},
        upstream_to_client: &|_| {},
    };
}

impl std::fmt::Debug for Meters<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters").finish_non_exhaustive()
    }
}

/// Copies `client` ⇄ `upstream` after first delivering bytes either side had already sent
/// (consumed, so their buffers are freed before the long-lived part starts).
pub async fn splice<C, U>(
    client: &mut C,
    upstream: &mut U,
    client_pending: impl AsRef<[u8]>,
    upstream_pending: impl AsRef<[u8]>,
    settings: SpliceSettings,
    meters: Meters<'_>,
) -> io::Result<SpliceStats>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    splice_until(
        client,
        upstream,
        client_pending,
        upstream_pending,
        settings,
        meters,
        std::future::pending(),
    )
    .await
}

/// [`splice`], until `stop` resolves. Then the client's bytes are no longer forwarded (no
/// new command reaches the upstream), the upstream's keep flowing to the client until they
/// pause for a moment or a few seconds pass, and the splice returns with
/// [`SpliceStats::stopped`] set, leaving both connections open for the caller to close,
/// after a goodbye if the protocol has one that fits [`SpliceStats::at_line_boundary`].
pub async fn splice_until<C, U>(
    client: &mut C,
    upstream: &mut U,
    client_pending: impl AsRef<[u8]>,
    upstream_pending: impl AsRef<[u8]>,
    settings: SpliceSettings,
    meters: Meters<'_>,
    stop: impl Future<Output = ()>,
) -> io::Result<SpliceStats>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut stats = SpliceStats::default();
    let pending = client_pending.as_ref();
    if !pending.is_empty() {
        upstream.write_all(pending).await?;
        upstream.flush().await?;
        stats.client_to_upstream += pending.len() as u64;
        (meters.client_to_upstream)(pending.len() as u64);
    }
    drop(client_pending);
    let mut up = Pump::default();
    let mut down = Pump::default();
    let pending = upstream_pending.as_ref();
    if let Some(&last) = pending.last() {
        client.write_all(pending).await?;
        client.flush().await?;
        stats.upstream_to_client += pending.len() as u64;
        (meters.upstream_to_client)(pending.len() as u64);
        down.last = last;
    }
    drop(upstream_pending);

    let mut idle = settings
        .idle_timeout
        .map(|d| (d, Box::pin(tokio::time::sleep(d))));
    let mut stop = pin!(stop);
    // Set once `stop` resolved: the quiet-moment timer and the hard limit.
    let mut draining: Option<Drain> = None;

    let result = poll_fn(|cx| -> Poll<io::Result<End>> {
        if draining.is_none() && stop.as_mut().poll(cx).is_ready() {
            let now = tokio::time::Instant::now();
            draining = Some((
                Box::pin(tokio::time::sleep_until(now + DRAIN_QUIET)),
                Box::pin(tokio::time::sleep_until(now + DRAIN_MAX)),
            ));
            down.active = false;
        }
        if let Some((quiet, limit)) = draining.as_mut() {
            // Only the upstream's direction moves now; the client's commands stay unread.
            if down
                .poll(
                    cx,
                    Pin::new(&mut *upstream),
                    Pin::new(&mut *client),
                    meters.upstream_to_client,
                )?
                .is_ready()
            {
                return Poll::Ready(Ok(End::Closed));
            }
            if std::mem::take(&mut down.active) {
                quiet
                    .as_mut()
                    .reset(tokio::time::Instant::now() + DRAIN_QUIET);
            }
            let settled = quiet.as_mut().poll(cx).is_ready() && down.pending.is_empty();
            if settled || limit.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(End::Stopped));
            }
            return Poll::Pending;
        }
        let up_done = up.poll(
            cx,
            Pin::new(&mut *client),
            Pin::new(&mut *upstream),
            meters.client_to_upstream,
        )?;
        let down_done = down.poll(
            cx,
            Pin::new(&mut *upstream),
            Pin::new(&mut *client),
            meters.upstream_to_client,
        )?;
        if up_done.is_ready() && down_done.is_ready() {
            return Poll::Ready(Ok(End::Closed));
        }
        if let Some((period, sleep)) = idle.as_mut() {
            while sleep.as_mut().poll(cx).is_ready() {
                if !std::mem::take(&mut up.active) && !std::mem::take(&mut down.active) {
                    return Poll::Ready(Ok(End::Idle));
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
    match result? {
        End::Closed => {}
        End::Idle => stats.idle_timeout = true,
        End::Stopped => {
            stats.stopped = true;
            stats.at_line_boundary = down.pending.is_empty() && down.last == b'\n';
        }
    }
    Ok(stats)
}

/// The timers of a stopping splice: the quiet moment being waited for, and the limit.
type Drain = (Pin<Box<Sleep>>, Pin<Box<Sleep>>);

/// How the copying loop ended.
enum End {
    /// Both directions reached end of file.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// `stop` resolved and the upstream's direction settled (or ran out of time).
    Stopped,
}

/// One direction of the splice.
struct Pump {
    /// Bytes read but not yet accepted by the writer; empty (unallocated) most of the time.
    pending: Vec<u8>,
    start: usize,
    eof: bool,
    need_flush: bool,
    done: bool,
    active: bool,
    total: u64,
    /// The last byte read, so a stopped splice can tell whether it stopped between lines.
    last: u8,
    /// A read failed after others succeeded in the same round; reported once their bytes
    /// are forwarded.
    read_error: Option<io::Error>,
}

impl Default for Pump {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            start: 0,
            eof: false,
            need_flush: false,
            done: false,
            active: false,
            total: 0,
            // Before the splice, the last thing either side got was a whole reply line.
            last: b'\n',
            read_error: None,
        }
    }
}

impl Pump {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        meter: &(dyn Fn(u64) + Send + Sync),
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while self.start < self.pending.len() {
                let n = ready!(writer.as_mut().poll_write(cx, &self.pending[self.start..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                self.total += n as u64;
                meter(n as u64);
                self.need_flush = true;
            }
            if !self.pending.is_empty() {
                self.pending = Vec::new();
                self.start = 0;
            }
            if self.eof {
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            match self.read_and_forward(cx, reader.as_mut(), writer.as_mut(), meter) {
                Poll::Ready(result) => result?,
                Poll::Pending => {
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads what is available into the thread's scratch buffer and writes as much of it
    /// as the writer takes; the rest is copied into `pending`.
    ///
    /// A TLS stream hands out one record (at most 16 KiB) per read, so reads go on while
    /// more is ready and there is room: one write then carries up to 64 KiB, which means a
    /// quarter of the write calls and of the wake-ups at the other end during a transfer.
    /// Nothing waits for more to arrive: what is there is forwarded at once.
    fn read_and_forward<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        meter: &(dyn Fn(u64) + Send + Sync),
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if let Some(e) = self.read_error.take() {
            return Poll::Ready(Err(e));
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut read_buf = ReadBuf::new(&mut scratch[..]);
            ready!(reader.as_mut().poll_read(cx, &mut read_buf))?;
            let n = read_buf.filled().len();
            if n == 0 {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            while read_buf.remaining() >= MIN_READ_ROOM {
                let before = read_buf.filled().len();
                match reader.as_mut().poll_read(cx, &mut read_buf) {
                    Poll::Ready(Ok(())) if read_buf.filled().len() > before => {}
                    // End of stream: forward what was read first, then half-close.
                    Poll::Ready(Ok(())) => {
                        self.eof = true;
                        break;
                    }
                    // Forward what was read; the error ends the pump on the next round.
                    Poll::Ready(Err(e)) => {
                        self.read_error = Some(e);
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            let n = read_buf.filled().len();
            self.active = true;
            self.last = scratch[n - 1];
            let mut written = 0;
            while written < n {
                match writer.as_mut().poll_write(cx, &scratch[written..n]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(k)) => {
                        written += k;
                        self.need_flush = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            self.total += written as u64;
            meter(written as u64);
            if written < n {
                self.pending = scratch[written..n].to_vec();
                self.start = 0;
            }
            Poll::Ready(Ok(()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
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
                SpliceSettings { idle_timeout: None },
                Meters::NONE,
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
                idle_timeout: Some(Duration::from_secs(5)),
            },
            Meters::NONE,
        )
        .await
        .unwrap();
        assert!(stats.idle_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_lets_the_upstream_finish_and_reports_a_line_boundary() {
        let (mut client_far, mut client_near) = duplex(4096);
        let (mut upstream_near, mut upstream_far) = duplex(4096);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stats = splice_until(
                &mut client_near,
                &mut upstream_near,
                b"",
                b"",
                SpliceSettings::default(),
                Meters::NONE,
                async move {
                    let _ = stop_rx.await;
                },
            )
            .await;
            (stats, client_near, upstream_near)
        });
        upstream_far.write_all(b"* 3 EXISTS\r\n").await.unwrap();
        let mut line = [0u8; 12];
        client_far.read_exact(&mut line).await.unwrap();
        stop_tx.send(()).unwrap();
        // After the stop the client's command is no longer forwarded, while the upstream's
        // answer to an earlier one still reaches the client.
        client_far.write_all(b"a1 NOOP\r\n").await.unwrap();
        upstream_far.write_all(b"* 4 EXISTS\r\n").await.unwrap();
        let (stats, mut client_near, _upstream_near) = task.await.unwrap();
        let stats = stats.unwrap();
        assert!(stats.stopped && stats.at_line_boundary, "{stats:?}");
        assert_eq!(stats.client_to_upstream, 0);
        assert_eq!(stats.upstream_to_client, 24);
        client_near.write_all(b"* BYE\r\n").await.unwrap();
        drop(client_near);
        let mut rest = Vec::new();
        client_far.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"* 4 EXISTS\r\n* BYE\r\n");
        let mut nothing = [0u8; 1];
        let pending = tokio::time::timeout(Duration::from_secs(1), upstream_far.read(&mut nothing));
        assert!(
            pending.await.is_err(),
            "the NOOP must not reach the upstream"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_in_the_middle_of_a_line_is_reported() {
        let (mut client_far, mut client_near) = duplex(4096);
        let (mut upstream_near, mut upstream_far) = duplex(4096);
        upstream_far
            .write_all(b"* 1 FETCH (BODY[] {100}\r\nhalf a mess")
            .await
            .unwrap();
        let stats = splice_until(
            &mut client_near,
            &mut upstream_near,
            b"",
            b"",
            SpliceSettings::default(),
            Meters::NONE,
            tokio::time::sleep(Duration::from_secs(1)),
        )
        .await
        .unwrap();
        assert!(stats.stopped && !stats.at_line_boundary, "{stats:?}");
        let mut got = vec![0u8; stats.upstream_to_client as usize];
        client_far.read_exact(&mut got).await.unwrap();
        assert!(got.ends_with(b"half a mess"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_gives_up_waiting_for_a_chatty_upstream() {
        let (mut client_far, mut client_near) = duplex(1 << 16);
        let (mut upstream_near, mut upstream_far) = duplex(1 << 16);
        let chatter = tokio::spawn(async move {
            loop {
                if upstream_far
                    .write_all(b"* OK still here\r\n")
                    .await
                    .is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = client_far.read_to_end(&mut sink).await;
        });
        let started = tokio::time::Instant::now();
        let stats = splice_until(
            &mut client_near,
            &mut upstream_near,
            b"",
            b"",
            SpliceSettings::default(),
            Meters::NONE,
            tokio::time::sleep(Duration::from_secs(1)),
        )
        .await
        .unwrap();
        assert!(stats.stopped);
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(1) + DRAIN_MAX, "{took:?}");
        assert!(took < Duration::from_secs(2) + DRAIN_MAX, "{took:?}");
        drop((client_near, upstream_near));
        chatter.abort();
        let _ = reader.await;
    }

    /// Reads at most one TLS record's worth at a time, like a TLS stream; counts writes.
    struct RecordStream {
        inner: tokio::io::DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for RecordStream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut record = [0u8; 16 * 1024];
            let mut limited = ReadBuf::new(&mut record[..buf.remaining().min(16 * 1024)]);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut limited))?;
            buf.put_slice(limited.filled());
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for RecordStream {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn records_ready_together_leave_in_one_write() {
        let (mut client_far, client_inner) = duplex(1 << 20);
        let (upstream_inner, mut upstream_far) = duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let mut client_near = RecordStream {
            inner: client_inner,
            writes: Arc::default(),
        };
        let mut upstream_near = RecordStream {
            inner: upstream_inner,
            writes: writes.clone(),
        };
        // 256 KiB already waiting: sixteen records.
        let up: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 253) as u8).collect();
        client_far.write_all(&up).await.unwrap();
        client_far.shutdown().await.unwrap();
        upstream_far.shutdown().await.unwrap();
        let stats = splice(
            &mut client_near,
            &mut upstream_near,
            b"",
            b"",
            SpliceSettings { idle_timeout: None },
            Meters::NONE,
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        upstream_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, up);
        assert_eq!(stats.client_to_upstream, up.len() as u64);
        let writes = writes.load(Ordering::Relaxed);
        assert!(writes <= 4, "{writes} writes for sixteen records");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_transfers_both_ways_arrive_intact_through_small_pipes() {
        let (client_far, mut client_near) = duplex(1000);
        let (mut upstream_near, upstream_far) = duplex(777);
        let up: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..700_001u32).map(|i| (i % 241) as u8).collect();
        // Live counts, as the metrics see them while the session runs.
        let metered = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let counts = metered.clone();
        let splice_task = tokio::spawn(async move {
            let up = |n| {
                counts[0].fetch_add(n, Ordering::Relaxed);
            };
            let down = |n| {
                counts[1].fetch_add(n, Ordering::Relaxed);
            };
            splice(
                &mut client_near,
                &mut upstream_near,
                b"",
                b"",
                SpliceSettings::default(),
                Meters {
                    client_to_upstream: &up,
                    upstream_to_client: &down,
                },
            )
            .await
        });
        let (up_clone, down_clone) = (up.clone(), down.clone());
        let client = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(client_far);
            let writer = tokio::spawn(async move {
                w.write_all(&up_clone).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            got
        });
        let (mut r, mut w) = tokio::io::split(upstream_far);
        let writer = tokio::spawn(async move {
            w.write_all(&down_clone).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got_up = Vec::new();
        r.read_to_end(&mut got_up).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got_up, up);
        assert_eq!(client.await.unwrap(), down);
        let stats = splice_task.await.unwrap().unwrap();
        assert_eq!(stats.client_to_upstream, up.len() as u64);
        assert_eq!(stats.upstream_to_client, down.len() as u64);
        assert_eq!(metered[0].load(Ordering::Relaxed), up.len() as u64);
        assert_eq!(metered[1].load(Ordering::Relaxed), down.len() as u64);
    }
}
