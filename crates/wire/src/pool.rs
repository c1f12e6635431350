//! A small pool of upstream connections opened ahead of need (connected, TLS up, greeting
//! read), so a login costs only the authentication round trip. Connections are used once
//! (a login consumes one) and expire before the upstream would drop them for idling.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

/// Ready-to-authenticate upstream connections of one kind.
#[derive(Debug)]
pub struct Pool<T> {
    inner: Arc<Inner<T>>,
}

#[derive(Debug)]
struct Inner<T> {
    idle: Mutex<VecDeque<(T, Instant)>>,
    /// Connections being opened right now.
    opening: AtomicUsize,
    size: usize,
    ttl: Duration,
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + 'static> Pool<T> {
    /// A pool keeping up to `size` connections, each for at most `ttl`.
    pub fn new(size: usize, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                idle: Mutex::new(VecDeque::with_capacity(size)),
                opening: AtomicUsize::new(0),
                size,
                ttl,
            }),
        }
    }

    /// The youngest connection that has not expired, if any.
    pub fn take(&self) -> Option<T> {
        let mut idle = self.inner.idle.lock().ok()?;
        let now = Instant::now();
        while let Some((conn, born)) = idle.pop_back() {
            if now.duration_since(born) < self.inner.ttl {
                return Some(conn);
            }
        }
        None
    }

    /// How many connections are ready now.
    pub fn ready(&self) -> usize {
        self.inner.idle.lock().map(|idle| idle.len()).unwrap_or(0)
    }

    /// Opens connections in the background until `size` are ready or being opened. A
    /// failed attempt is not retried here: the next login (or the keeper) tries again.
    pub fn refill<F, Fut, E>(&self, connect: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let connect = Arc::new(connect);
        loop {
            let have = self.ready() + self.inner.opening.load(Ordering::Acquire);
            if have >= self.inner.size {
                return;
            }
            self.inner.opening.fetch_add(1, Ordering::AcqRel);
            let inner = Arc::downgrade(&self.inner);
            let connect = connect.clone();
            tokio::spawn(async move {
                let result = connect().await;
                if let Some(inner) = inner.upgrade() {
                    if let (Ok(conn), Ok(mut idle)) = (result, inner.idle.lock()) {
                        idle.push_back((conn, Instant::now()));
                    }
                    inner.opening.fetch_sub(1, Ordering::AcqRel);
                }
            });
        }
    }

    /// Keeps the pool fresh while it exists: drops expired connections and refills, every
    /// half `ttl`.
    pub fn keep_fresh<F, Fut, E>(&self, connect: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let weak: Weak<Inner<T>> = Arc::downgrade(&self.inner);
        let period = (self.inner.ttl / 2).max(Duration::from_millis(100));
        let connect = Arc::new(connect);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let pool = Pool { inner };
                pool.expire();
                let connect = connect.clone();
                pool.refill(move || connect());
                drop(pool);
                tokio::time::sleep(period).await;
            }
        });
    }

    fn expire(&self) {
        if let Ok(mut idle) = self.inner.idle.lock() {
            let now = Instant::now();
            idle.retain(|(_, born)| now.duration_since(*born) < self.inner.ttl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refills_to_size_and_expires_old_connections() {
        let pool: Pool<u32> = Pool::new(3, Duration::from_secs(30));
        let counter = Arc::new(AtomicUsize::new(0));
        let c = counter.clone();
        let connect = move || {
            let n = c.fetch_add(1, Ordering::SeqCst) as u32;
            async move { Ok::<_, ()>(n) }
        };
        pool.refill(connect.clone());
        settle().await;
        assert_eq!(pool.ready(), 3);
        assert!(pool.take().is_some());
        pool.refill(connect.clone());
        settle().await;
        assert_eq!(pool.ready(), 3);
        assert_eq!(counter.load(Ordering::SeqCst), 4);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(
            pool.take(),
            None,
            "expired connections are never handed out"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_connects_leave_the_pool_empty() {
        let pool: Pool<u32> = Pool::new(2, Duration::from_secs(30));
        pool.refill(|| async { Err::<u32, _>("refused") });
        settle().await;
        assert_eq!(pool.ready(), 0);
        assert_eq!(pool.take(), None);
    }
}
