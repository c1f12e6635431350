//! Keeping idle delegated grants alive.
//!
//! Entra expires a refresh token after 90 days without use (AADSTS700082, EXCHANGE.md §4.6).
//! A scanner that sends one mail a quarter would find its grant dead every time, so the
//! server periodically refreshes delegated grants that have been idle for a while (14 days
//! by default), long before the limit. The refreshes are spread out: each account comes due
//! at its own point in a window (a per-account offset of up to a tenth of the idle time), and
//! a sweep waits `spacing` between two refreshes, so a thousand accounts onboarded on the
//! same day never burst the token endpoint. Every sweep also updates the health gauges.
//!
//! Password-sealed grants are skipped: the server cannot open them without a password, so
//! they are refreshed only at logins (`oxbridge account show` says so).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxbridge_store::{Account, AccountStatus, CredentialStore, GrantKind};
use tokio::sync::watch;

use crate::broker::TokenBroker;

/// When and how fast idle grants are refreshed (`[grants]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// A delegated grant unused for this long is refreshed. Must stay well under 90 days.
    pub idle_after: Duration,
    /// How often the accounts are checked.
    pub check_every: Duration,
    /// Pause between two background refreshes.
    pub spacing: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            idle_after: Duration::from_secs(14 * 24 * 3600),
            check_every: Duration::from_secs(3600),
            spacing: Duration::from_secs(5),
        }
    }
}

/// Runs sweeps every `check_every` until `stop` turns true.
pub async fn run_background_refresh(
    broker: Arc<TokenBroker>,
    store: Arc<dyn CredentialStore>,
    policy: RefreshPolicy,
    mut stop: watch::Receiver<bool>,
) {
    tracing::info!(
        idle_after_secs = policy.idle_after.as_secs(),
        check_every_secs = policy.check_every.as_secs(),
        "background refresh of idle delegated grants is on"
    );
    loop {
        if sweep(&broker, store.as_ref(), &policy, &mut stop)
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(policy.check_every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The sweep was interrupted by shutdown.
struct Stopped;

/// One pass: update gauges, then refresh every due account, oldest first, spaced out.
async fn sweep(
    broker: &TokenBroker,
    store: &dyn CredentialStore,
    policy: &RefreshPolicy,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Stopped> {
    let accounts = match store.list_accounts().await {
        Ok(accounts) => accounts,
        Err(e) => {
            tracing::warn!(error = %e, "background refresh: cannot list accounts");
            return Ok(());
        }
    };
    let now = unix_now();
    broker.observe_accounts(&accounts, now);
    let mut due: Vec<&Account> = accounts
        .iter()
        .filter(|a| is_due(a, now, policy.idle_after))
        .collect();
    due.sort_by_key(|a| last_use(a));
    for (index, account) in due.iter().enumerate() {
        if index > 0 {
            tokio::select! {
                _ = tokio::time::sleep(policy.spacing) => {}
                _ = stop.changed() => return Err(Stopped),
            }
        }
        match broker.refresh_grant(account).await {
            Ok(_) => {
                tracing::info!(account = %account.name, app = %account.app, "idle grant refreshed")
            }
            Err(e) => tracing::warn!(
                account = %account.name, app = %account.app, error = %e,
                "background refresh of an idle grant failed"
            ),
        }
    }
    if !due.is_empty() {
        if let Ok(accounts) = store.list_accounts().await {
            broker.observe_accounts(&accounts, unix_now());
        }
    }
    Ok(())
}

/// When the grant was last known to be used: the later of the last rotation and the last
/// successful token request, or its creation.
fn last_use(account: &Account) -> i64 {
    account
        .refresh_token_updated_at
        .into_iter()
        .chain(account.health.last_refresh_at)
        .max()
        .unwrap_or(account.created_at)
}

/// Whether an active delegated account, not password-sealed, has been idle long enough,
/// counting its own offset.
fn is_due(account: &Account, now: i64, idle_after: Duration) -> bool {
    if account.grant != GrantKind::RefreshToken
        || account.status != AccountStatus::Active
        || account.password_sealed()
    {
        return false;
    }
    let idle = i64::try_from(idle_after.as_secs()).unwrap_or(i64::MAX);
    now.saturating_sub(last_use(account)) >= idle - spread_offset(account.id, idle)
}

/// A stable per-account offset in `[0, idle / 10)`, so accounts created together come due
/// at different sweeps (Knuth's multiplicative hash of the id).
fn spread_offset(id: i64, idle: i64) -> i64 {
    let window = idle / 10;
    if window <= 0 {
        return 0;
    }
    let hashed = (id as u64).wrapping_mul(2_654_435_761) % 1_000_003;
    i64::try_from(hashed).unwrap_or(0) * window / 1_000_003
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbridge_store::{GrantHealth, Sealing};

    fn account(id: i64, grant: GrantKind, saved: Option<i64>) -> Account {
        Account {
            id,
            name: format!("u{id}"),
            mailbox: format!("u{id}@contoso.com"),
            app: "contoso".into(),
            grant,
            protocols: vec![oxbridge_wire::Protocol::Imap],
            status: AccountStatus::Active,
            status_reason: None,
            created_at: 0,
            updated_at: 0,
            last_login_at: None,
            refresh_token_updated_at: saved,
            identities: Default::default(),
            health: GrantHealth::default(),
            sealing: Sealing::MasterKey,
        }
    }

    const DAY: i64 = 86_400;

    #[test]
    fn only_idle_active_delegated_grants_are_due() {
        let idle = Duration::from_secs(14 * 86_400);
        let now = 100 * DAY;
        assert!(is_due(
            &account(1, GrantKind::RefreshToken, Some(now - 15 * DAY)),
            now,
            idle
        ));
        assert!(!is_due(
            &account(1, GrantKind::RefreshToken, Some(now - DAY)),
            now,
            idle
        ));
        assert!(!is_due(
            &account(1, GrantKind::ClientCredentials, None),
            now,
            idle
        ));
        let mut dead = account(1, GrantKind::RefreshToken, Some(0));
        dead.status = AccountStatus::NeedsReconsent;
        assert!(!is_due(&dead, now, idle));
        // A recent successful refresh counts as use even without rotation.
        let mut used = account(1, GrantKind::RefreshToken, Some(0));
        used.health.last_refresh_at = Some(now - DAY);
        assert!(!is_due(&used, now, idle));
        // A password-sealed grant opens only at a login.
        let mut sealed = account(1, GrantKind::RefreshToken, Some(now - 15 * DAY));
        sealed.sealing = Sealing::Password;
        assert!(!is_due(&sealed, now, idle));
    }

    #[test]
    fn accounts_spread_over_a_tenth_of_the_window() {
        let idle = 14 * DAY;
        let offsets: Vec<i64> = (1..=200).map(|id| spread_offset(id, idle)).collect();
        assert!(offsets.iter().all(|o| (0..idle / 10).contains(o)));
        let distinct: std::collections::HashSet<_> = offsets.iter().map(|o| o / 3600).collect();
        assert!(distinct.len() > 20, "offsets cluster: {distinct:?}");
        assert_eq!(spread_offset(7, 5), 0);
    }
}
