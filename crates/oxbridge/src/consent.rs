//! Interactive sign-in from the command line: the device-code flow for headless servers
//! (`docker exec`, `kubectl exec`, SSH) and the browser flow with a loopback redirect.
//!
//! What the user must do is printed plainly on standard output (URL and code on lines of
//! their own, so scripts and tests can read them). While waiting, a terminal gets a one-line
//! progress indicator that rewrites itself; a pipe or log file gets a line only when
//! something changes (a slow-down) and at most once a minute otherwise, so it never spams.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use oxbridge_broker::consent::{Consent, ConsentError};
use oxbridge_broker::AppRegistration;
use oxbridge_wire::Secret;

use crate::cli::SignInOptions;
use crate::loopback;

/// How long a token request may take during sign-in.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a non-terminal gets a "still waiting" line.
const QUIET_PERIOD: Duration = Duration::from_secs(60);

/// Signs in for `app` and returns the refresh token. `who` names the account in messages;
/// `claims` is a pending claims challenge to pass on (Conditional Access, MFA).
pub async fn sign_in(
    app: &AppRegistration,
    who: &str,
    browser: bool,
    options: &SignInOptions,
    claims: Option<&str>,
) -> anyhow::Result<Secret> {
    let consent = Consent::new(app, REQUEST_TIMEOUT)?;
    let result = if browser {
        browser_sign_in(&consent, who, options, claims).await
    } else {
        device_code_sign_in(&consent, who, claims).await
    };
    result.map_err(|e| match e {
        Failure::Consent(e) => anyhow::anyhow!("sign-in for {who} failed: {e}"),
        Failure::Other(e) => e,
    })
}

enum Failure {
    Consent(ConsentError),
    Other(anyhow::Error),
}

impl From<ConsentError> for Failure {
    fn from(e: ConsentError) -> Self {
        Failure::Consent(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

async fn device_code_sign_in(
    consent: &Consent,
    who: &str,
    claims: Option<&str>,
) -> Result<Secret, Failure> {
    let code = consent.start_device_code(claims).await?;
    let expires = code.expires_in();
    println!("To sign in for {who}, open this page in any browser:");
    println!();
    println!("    {}", code.verification_uri());
    println!();
    println!("and enter the code:");
    println!();
    println!("    {}", code.user_code());
    println!();
    println!(
        "Sign in as the mailbox user (or its delegate). The code expires in {}.",
        human(expires)
    );
    let progress = Progress::start(expires, code.interval());
    let result = consent
        .finish_device_code(&code, |interval| progress.waiting(interval))
        .await;
    progress.stop();
    Ok(result?)
}

async fn browser_sign_in(
    consent: &Consent,
    who: &str,
    options: &SignInOptions,
    claims: Option<&str>,
) -> Result<Secret, Failure> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.redirect_port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", options.redirect_port))?;
    let port = listener.local_addr().context("loopback address")?.port();
    let redirect = format!("http://localhost:{port}/");
    let request =
        consent.authorization_request(&redirect, options.login_hint.as_deref(), claims)?;
    println!("To sign in for {who}, open this URL in a browser on this machine:");
    println!();
    println!("    {}", request.url);
    println!();
    println!("Waiting for the browser to come back to {redirect} …");
    let timeout = Duration::from_secs(options.browser_timeout.max(1));
    let callback = match tokio::time::timeout(timeout, loopback::wait_for_redirect(&listener)).await
    {
        Ok(callback) => callback.context("the loopback redirect failed")?,
        Err(_) => return Err(ConsentError::Expired(timeout).into()),
    };
    Ok(consent.redeem(request, &callback).await?)
}

/// The waiting indicator. On a terminal a ticker task rewrites one line every second; else
/// lines are printed only on a change of interval or once per [`QUIET_PERIOD`].
struct Progress {
    state: Arc<Mutex<ProgressState>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

struct ProgressState {
    started: Instant,
    expires: Duration,
    interval: Duration,
    last_line: Instant,
}

impl Progress {
    fn start(expires: Duration, interval: Duration) -> Progress {
        let now = Instant::now();
        let state = Arc::new(Mutex::new(ProgressState {
            started: now,
            expires,
            interval,
            last_line: now,
        }));
        let ticker = if std::io::stdout().is_terminal() {
            let state = state.clone();
            Some(tokio::spawn(async move {
                const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
                let mut frame = 0;
                loop {
                    let line = {
                        let s = lock(&state);
                        let elapsed = s.started.elapsed();
                        format!(
                            "\r{} waiting for the sign-in: {} elapsed, {} left (checking every {} s)   ",
                            FRAMES[frame % FRAMES.len()],
                            human(elapsed),
                            human(s.expires.saturating_sub(elapsed)),
                            s.interval.as_secs()
                        )
                    };
                    {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(line.as_bytes());
                        let _ = out.flush();
                    }
                    frame += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }))
        } else {
            println!(
                "Waiting for the sign-in (checking every {} s)…",
                interval.as_secs()
            );
            None
        };
        Progress { state, ticker }
    }

    /// Called before each wait between polls with the interval in force.
    fn waiting(&self, interval: Duration) {
        let mut s = lock(&self.state);
        let slowed = interval > s.interval;
        s.interval = interval;
        if self.ticker.is_some() {
            return;
        }
        if slowed {
            println!(
                "Entra asked to check less often; now every {} s.",
                interval.as_secs()
            );
            s.last_line = Instant::now();
        } else if s.last_line.elapsed() >= QUIET_PERIOD {
            println!(
                "Still waiting for the sign-in ({} elapsed).",
                human(s.started.elapsed())
            );
            s.last_line = Instant::now();
        }
    }

    fn stop(self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
            println!();
        }
    }
}

fn lock(state: &Mutex<ProgressState>) -> std::sync::MutexGuard<'_, ProgressState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `14 min 59 s`, `45 s`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(900)), "15 min");
        assert_eq!(human(Duration::from_secs(61)), "1 min 1 s");
        assert_eq!(human(Duration::from_secs(5)), "5 s");
    }
}
