//! The loopback end of a browser sign-in: a one-shot HTTP listener on 127.0.0.1 that waits
//! for Entra's redirect (`GET /?code=…&state=…` or `?error=…`) and tells the browser it can
//! close the tab. Anything else (a favicon request, a port scan) gets an error and the wait
//! goes on. Requests are bounded in size and time; nothing here trusts its input: the
//! `state` is checked by the broker before the code is used.

use std::collections::HashMap;
use std::time::Duration;

use oxbridge_broker::consent::Callback;
use oxbridge_wire::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read from the browser.
const MAX_HEAD: usize = 16 * 1024;
/// How long one connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

const DONE_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>oxbridge</title></head>\
<body><h1>Signed in</h1><p>oxbridge received the sign-in. You can close this window and return to the terminal.</p></body></html>";

/// Accepts connections until one carries the redirect; returns its parameters.
pub async fn wait_for_redirect(listener: &TcpListener) -> std::io::Result<Callback> {
    loop {
        let (stream, _) = listener.accept().await?;
        match tokio::time::timeout(READ_TIMEOUT, handle(stream)).await {
            Ok(Ok(Some(callback))) => return Ok(callback),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => continue,
        }
    }
}

/// Serves one connection; `Some` if it was the redirect.
async fn handle(mut stream: TcpStream) -> std::io::Result<Option<Callback>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_HEAD {
            respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "too large",
            )
            .await?;
            return Ok(None);
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (Some("GET"), Some(target)) = (parts.next(), parts.next()) else {
        respond(&mut stream, "405 Method Not Allowed", "GET only").await?;
        return Ok(None);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/" {
        respond(&mut stream, "404 Not Found", "not here").await?;
        return Ok(None);
    }
    let params = parse_query(query);
    if !params.contains_key("code") && !params.contains_key("error") {
        respond(
            &mut stream,
            "400 Bad Request",
            "no sign-in result in this request",
        )
        .await?;
        return Ok(None);
    }
    let page = if params.contains_key("error") {
        "<!doctype html><html><body><h1>Sign-in failed</h1><p>See the terminal for details.</p></body></html>"
    } else {
        DONE_PAGE
    };
    respond(&mut stream, "200 OK", page).await?;
    let mut params = params;
    Ok(Some(Callback {
        code: params.remove("code").map(Secret::from),
        state: params.remove("state"),
        error: params.remove("error"),
        error_description: params.remove("error_description"),
    }))
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Decodes `a=1&b=x%20y+z`; pairs that do not decode are skipped.
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q =
            parse_query("code=0.AX%2Fy&state=a+b&error_description=AADSTS65004%3A%20no&bad=%zz");
        assert_eq!(q["code"], "0.AX/y");
        assert_eq!(q["state"], "a b");
        assert_eq!(q["error_description"], "AADSTS65004: no");
        assert!(!q.contains_key("bad"));
    }

    #[tokio::test]
    async fn waits_past_stray_requests_for_the_redirect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let waiter = tokio::spawn(async move { wait_for_redirect(&listener).await });
        let send = |request: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(request.as_bytes()).await.expect("write");
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.expect("read");
            reply
        };
        assert!(send("GET /favicon.ico HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(send("GET / HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 400"));
        let reply = send("GET /?code=c1&state=s1 HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.contains("Signed in"),
            "{reply}"
        );
        let callback = waiter.await.expect("join").expect("callback");
        assert_eq!(
            callback
                .code
                .and_then(|c| c.expose_str().map(str::to_owned))
                .as_deref(),
            Some("c1")
        );
        assert_eq!(callback.state.as_deref(), Some("s1"));
    }
}
