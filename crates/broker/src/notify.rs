//! Telling an operator that a grant needs a new sign-in, before the device's owner notices.
//!
//! The broker reports each transition of an account to needs-reconsent exactly once (the
//! store's conditional update decides who saw it). A [`Notifier`] then runs the configured
//! command and/or posts to the configured webhook. What it passes is the account name,
//! mailbox, app, failure class, AADSTS codes and the reason with the next step: never a
//! token, a secret or a password. Hooks run in the background with a time limit, so a hung
//! script cannot hold up logins.

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::classify::FailureClass;

/// How long a hook may run before it is abandoned.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// An account that just started needing an interactive sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconsentEvent {
    /// Local account name.
    pub account: String,
    pub mailbox: String,
    pub app: String,
    pub class: FailureClass,
    pub codes: Vec<u32>,
    /// The status reason, ending with the next step.
    pub reason: String,
}

/// Receives grant transitions from the broker. Implementations must return quickly.
pub trait GrantObserver: Send + Sync + fmt::Debug {
    fn needs_reconsent(&self, event: &ReconsentEvent);
}

/// Where notifications go, as configured (`[notify]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifySettings {
    /// Program and arguments; the event is passed in `OXBRIDGE_*` environment variables.
    pub command: Vec<String>,
    /// URL that receives a JSON POST.
    pub webhook: Option<String>,
    /// Extra trust anchors for the webhook.
    pub webhook_ca_file: Option<PathBuf>,
}

/// Runs the configured command and webhook for each event.
#[derive(Debug, Clone)]
pub struct Notifier {
    command: Vec<String>,
    webhook: Option<(reqwest::Client, String)>,
}

impl Notifier {
    /// `None` when nothing is configured.
    pub fn new(settings: &NotifySettings) -> Result<Option<Notifier>, String> {
        if settings.command.is_empty() && settings.webhook.is_none() {
            return Ok(None);
        }
        let webhook = match &settings.webhook {
            Some(url) => {
                let mut builder = reqwest::Client::builder()
                    .use_rustls_tls()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(Duration::from_secs(10));
                if let Some(path) = &settings.webhook_ca_file {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("[notify] webhook_ca_file {}: {e}", path.display()))?;
                    for cert in reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| format!("[notify] webhook_ca_file: {e}"))?
                    {
                        builder = builder.add_root_certificate(cert);
                    }
                }
                let client = builder
                    .build()
                    .map_err(|e| format!("[notify] webhook client: {e}"))?;
                Some((client, url.clone()))
            }
            None => None,
        };
        Ok(Some(Notifier {
            command: settings.command.clone(),
            webhook,
        }))
    }

    /// Runs the hooks for one event and waits for them (bounded by [`HOOK_TIMEOUT`]).
    pub async fn deliver(&self, event: &ReconsentEvent) {
        if let Some((program, args)) = self.command.split_first() {
            let mut child = tokio::process::Command::new(program);
            child
                .args(args)
                .env("OXBRIDGE_EVENT", "needs-reconsent")
                .env("OXBRIDGE_ACCOUNT", &event.account)
                .env("OXBRIDGE_MAILBOX", &event.mailbox)
                .env("OXBRIDGE_APP", &event.app)
                .env("OXBRIDGE_CLASS", event.class.as_str())
                .env("OXBRIDGE_CODES", codes_text(&event.codes))
                .env("OXBRIDGE_REASON", &event.reason)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            match child.spawn() {
                Ok(mut running) => match tokio::time::timeout(HOOK_TIMEOUT, running.wait()).await {
                    Ok(Ok(status)) if status.success() => {}
                    Ok(Ok(status)) => tracing::warn!(
                        account = %event.account, %status, "notify command failed"
                    ),
                    Ok(Err(e)) => tracing::warn!(error = %e, "notify command failed"),
                    Err(_) => tracing::warn!("notify command timed out; killed"),
                },
                Err(e) => tracing::warn!(program, error = %e, "cannot run notify command"),
            }
        }
        if let Some((client, url)) = &self.webhook {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let body = serde_json::json!({
                "event": "needs-reconsent",
                "account": event.account,
                "mailbox": event.mailbox,
                "app": event.app,
                "class": event.class.as_str(),
                "codes": event.codes,
                "reason": event.reason,
                "at": at,
            });
            match client.post(url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(status = %r.status(), "notify webhook refused"),
                Err(e) => tracing::warn!(error = %e, "notify webhook failed"),
            }
        }
    }
}

impl GrantObserver for Notifier {
    fn needs_reconsent(&self, event: &ReconsentEvent) {
        tracing::warn!(
            account = %event.account,
            app = %event.app,
            class = %event.class,
            reason = %event.reason,
            "account needs re-consent; notifying"
        );
        let notifier = self.clone();
        let event = event.clone();
        tokio::spawn(async move { notifier.deliver(&event).await });
    }
}

fn codes_text(codes: &[u32]) -> String {
    codes
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> ReconsentEvent {
        ReconsentEvent {
            account: "scanner".into(),
            mailbox: "scanner@contoso.com".into(),
            app: "contoso".into(),
            class: FailureClass::Reconsent,
            codes: vec![700082],
            reason: "AADSTS700082: expired; run `oxbridge account consent scanner`".into(),
        }
    }

    #[test]
    fn nothing_configured_is_none() {
        assert!(Notifier::new(&NotifySettings::default())
            .expect("ok")
            .is_none());
    }

    #[tokio::test]
    async fn command_gets_the_event_in_its_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("event.txt");
        let settings = NotifySettings {
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "printf '%s|%s|%s|%s|%s' \"$OXBRIDGE_EVENT\" \"$OXBRIDGE_ACCOUNT\" \
                     \"$OXBRIDGE_CLASS\" \"$OXBRIDGE_CODES\" \"$OXBRIDGE_REASON\" > {}",
                    out.display()
                ),
            ],
            ..NotifySettings::default()
        };
        let notifier = Notifier::new(&settings).expect("ok").expect("some");
        notifier.deliver(&event()).await;
        let text = std::fs::read_to_string(&out).expect("hook wrote");
        assert_eq!(
            text,
            "needs-reconsent|scanner|reconsent|700082|AADSTS700082: expired; run `oxbridge account consent scanner`"
        );
    }
}
