//! A tiny HTTP/1.1 token endpoint on 127.0.0.1:0 that counts requests, keeps their form
//! bodies, and answers with canned responses (the last one repeats).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One canned answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (to let concurrent callers pile up).
    pub delay: Duration,
    /// Close the connection without answering (a network failure).
    pub hang_up: bool,
}

impl Canned {
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: body.into(),
            delay: Duration::ZERO,
            hang_up: false,
        }
    }

    /// A token response with the given lifetime and optional rotated refresh token.
    pub fn token(access_token: &str, expires_in: u64, refresh_token: Option<&str>) -> Self {
        let rt = refresh_token
            .map(|rt| format!(r#","refresh_token":"{rt}""#))
            .unwrap_or_default();
        Self::json(
            200,
            format!(
                r#"{{"token_type":"Bearer","expires_in":{expires_in},"ext_expires_in":{expires_in},"access_token":"{access_token}"{rt}}}"#
            ),
        )
    }

    /// An Entra error body (EXCHANGE.md §4.7), with trace ids on later lines.
    pub fn entra_error(status: u16, error: &str, code: u32, text: &str) -> Self {
        Self::json(
            status,
            format!(
                r#"{{"error":"{error}","error_description":"AADSTS{code}: {text}\r\nTrace ID: 0000\r\nCorrelation ID: 1111\r\nTimestamp: 2024-01-01 00:00:00Z","error_codes":[{code}],"timestamp":"2024-01-01 00:00:00Z","trace_id":"0000","correlation_id":"1111","error_uri":"https://login.microsoftonline.com/error?code={code}"}}"#
            ),
        )
    }

    pub fn plain(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: body.into(),
            delay: Duration::ZERO,
            hang_up: false,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn hang_up() -> Self {
        Self {
            hang_up: true,
            ..Self::plain(500, "")
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    script: Mutex<VecDeque<Canned>>,
    bodies: Mutex<Vec<String>>,
    paths: Mutex<Vec<String>>,
    count: AtomicUsize,
}

/// Handle to the running fake; dropping it leaves the task to die with the runtime.
#[derive(Debug, Clone)]
pub struct FakeEndpoint {
    pub authority: String,
    shared: Arc<Shared>,
}

impl FakeEndpoint {
    pub async fn start(script: Vec<Canned>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        *shared.script.lock().expect("lock") = script.into();
        let task_shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = task_shared.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &shared).await;
                });
            }
        });
        Self {
            authority: format!("http://{addr}"),
            shared,
        }
    }

    /// Replaces what the endpoint answers from now on.
    pub fn set_script(&self, script: Vec<Canned>) {
        *self.shared.script.lock().expect("lock") = script.into();
    }

    pub fn requests(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    pub fn bodies(&self) -> Vec<String> {
        self.shared.bodies.lock().expect("lock").clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.shared.paths.lock().expect("lock").clone()
    }
}

fn next_answer(shared: &Shared) -> Canned {
    let mut script = shared.script.lock().expect("lock");
    if script.len() > 1 {
        script.pop_front().expect("non-empty")
    } else {
        script
            .front()
            .cloned()
            .unwrap_or_else(|| Canned::plain(500, "no script"))
    }
}

async fn serve(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[header_end..]).to_string();
    let path = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_owned();

    shared.count.fetch_add(1, Ordering::SeqCst);
    shared.bodies.lock().expect("lock").push(body);
    shared.paths.lock().expect("lock").push(path);

    let answer = next_answer(shared);
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    if answer.hang_up {
        return Ok(());
    }
    let mut response = format!("HTTP/1.1 {} Canned\r\n", answer.status);
    for (name, value) in &answer.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        answer.body.len(),
        answer.body
    ));
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
