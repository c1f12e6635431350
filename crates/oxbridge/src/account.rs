//! `oxbridge account …`: managing accounts in the store. Secrets come from stdin or files.

use std::sync::Arc;

use anyhow::{bail, Context};
use oxbridge_broker::AppRegistration;
use oxbridge_server::{open_store, Config};
use oxbridge_store::{
    Account, AccountStatus, CredentialStore, NewAccount, NewGrant, PasswordInfo, Sealing,
    StoreError,
};
use oxbridge_wire::{Protocol, Secret};

use crate::cli::{
    AccountArgs, AccountCommand, CurrentPasswordSource, OptionalPasswordSource, PasswordSource,
};
use crate::{consent, load_config, secret_input, when};

pub async fn run(args: AccountArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let store: Arc<dyn CredentialStore> = open_store(&config).map_err(anyhow::Error::msg)?;
    match args.command {
        AccountCommand::Add {
            user,
            mailbox,
            app,
            protocols,
            identities,
            grant,
            password_sealed,
            sign_in,
            password,
        } => {
            let registration = app_registration(&config, &app, &args.config)?;
            let sealing = if password_sealed {
                if grant.client_credentials || grant.password_grant {
                    bail!(
                        "--password-sealed needs a delegated grant (--device-code, --browser or \
                         --refresh-token-file): app-only and password-grant accounts keep no \
                         refresh token to seal"
                    );
                }
                if config.relay.iter().any(|rule| rule.account == user) {
                    bail!(
                        "a [[relay]] rule names {user:?}: relaying needs a grant the server can \
                         open without a password, so this account cannot be password-sealed"
                    );
                }
                Sealing::Password
            } else {
                Sealing::MasterKey
            };
            let protocols = protocols
                .iter()
                .map(|p| p.parse::<Protocol>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let identities = identities
                .iter()
                .map(|text| parse_identity(text))
                .collect::<anyhow::Result<Vec<_>>>()?;
            // Everything that can be checked is checked before anyone is asked to sign in.
            let password = read_password(&password)?;
            if store.account(&user).await?.is_some() {
                bail!("account {user:?} already exists");
            }
            let grant = if let Some(path) = grant.refresh_token_file {
                NewGrant::RefreshToken(secret_input::from_file(&path)?)
            } else if grant.password_grant {
                // Entra must accept the password now, or the account would never work.
                oxbridge_broker::consent::Consent::new(
                    &registration,
                    std::time::Duration::from_secs(30),
                )?
                .check_password_grant(&mailbox, &password)
                .await
                .map_err(|e| anyhow::anyhow!("the password grant for {mailbox} failed: {e}"))?;
                NewGrant::Password
            } else if grant.device_code || grant.browser {
                let who = format!("{user} ({mailbox})");
                NewGrant::RefreshToken(
                    consent::sign_in(&registration, &who, grant.browser, &sign_in, None).await?,
                )
            } else {
                NewGrant::ClientCredentials
            };
            let account = store
                .add_account(NewAccount {
                    name: user,
                    mailbox,
                    app,
                    protocols,
                    grant,
                    password,
                    sealing,
                })
                .await?;
            for (protocol, address) in &identities {
                store
                    .set_identity(&account.name, *protocol, Some(address))
                    .await?;
            }
            println!(
                "added account {:?} for mailbox {}",
                account.name, account.mailbox
            );
        }
        AccountCommand::List { json } => {
            let accounts = store.list_accounts().await?;
            if json {
                let list: Vec<_> = accounts.iter().map(|a| to_json(a, None)).collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                print_table(&accounts);
            }
        }
        AccountCommand::Show { user, json } => {
            let account = store
                .account(&user)
                .await?
                .with_context(|| format!("no account {user:?}"))?;
            let passwords = store.passwords(&user).await?;
            if json {
                println!("{}", to_json(&account, Some(&passwords)));
            } else {
                print_account(&account, &passwords);
            }
        }
        AccountCommand::Remove { user } => {
            if !store.remove_account(&user).await? {
                bail!("no account {user:?}");
            }
            println!("removed account {user:?}");
        }
        AccountCommand::Passwd {
            user,
            add,
            revoke,
            list,
            password,
            current,
        } => {
            let change = PasswordChange {
                add,
                revoke,
                list,
                source: &password,
                current: &current,
            };
            passwd(store.as_ref(), &user, change).await?
        }
        AccountCommand::ImportToken {
            user,
            refresh_token_file,
        } => {
            let token = secret_input::from_file(&refresh_token_file)?;
            store.import_refresh_token(&user, &token).await?;
            println!("refresh token of {user:?} replaced; account active");
        }
        AccountCommand::Consent {
            user,
            browser,
            sign_in,
            password,
            reset_passwords,
        } => {
            let account = store
                .account(&user)
                .await?
                .with_context(|| format!("no account {user:?}"))?;
            let registration = app_registration(&config, &account.app, &args.config)?;
            let who = format!("{} ({})", account.name, account.mailbox);
            let claims = account.pending_claims().map(str::to_owned);
            if claims.is_some() {
                println!("Passing on the claims challenge Entra sent with the last failure.");
            }
            if account.password_sealed() {
                let password =
                    sealed_consent_password(store.as_ref(), &account, &password, reset_passwords)
                        .await?;
                let token =
                    consent::sign_in(&registration, &who, browser, &sign_in, claims.as_deref())
                        .await?;
                let removed = store
                    .reseal_grant(&user, &token, &password, reset_passwords)
                    .await?;
                println!("signed in: the grant of {user:?} is sealed under its passwords and the account is active");
                if !removed.is_empty() {
                    println!(
                        "passwords removed (add them again with `oxbridge account passwd {user} \
                         --add NAME`): {}",
                        removed.join(", ")
                    );
                }
            } else {
                if read_optional_password(&password)?.is_some() || reset_passwords {
                    bail!("{user:?} is not password-sealed: consent takes no password");
                }
                let token =
                    consent::sign_in(&registration, &who, browser, &sign_in, claims.as_deref())
                        .await?;
                store.import_refresh_token(&user, &token).await?;
                println!("signed in: the grant of {user:?} is stored and the account is active");
            }
        }
        AccountCommand::Identity {
            user,
            protocol,
            mailbox,
            clear: _,
        } => {
            let protocol: Protocol = protocol.parse().map_err(anyhow::Error::msg)?;
            store
                .set_identity(&user, protocol, mailbox.as_deref())
                .await?;
            match mailbox {
                Some(m) => println!("{user:?} presents {m} for {protocol}"),
                None => println!("{user:?} presents its mailbox for {protocol}"),
            }
        }
    }
    Ok(())
}

/// The password for resealing a password-sealed account's new grant, checked before anyone
/// signs in: it must open one of the account's key slots, unless all are being replaced.
async fn sealed_consent_password(
    store: &dyn CredentialStore,
    account: &Account,
    source: &OptionalPasswordSource,
    reset_passwords: bool,
) -> anyhow::Result<Secret> {
    let user = &account.name;
    let Some(password) = read_optional_password(source)? else {
        bail!(
            "{user:?} is password-sealed: give one of its passwords with --password-stdin or \
             --password-file (or, if all are forgotten, a new one with --reset-passwords)"
        );
    };
    if !reset_passwords {
        let opens = match store.open_grant_key(account.id, &password).await {
            Ok(key) => key.is_some(),
            Err(StoreError::Sealed(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if !opens {
            bail!(
                "the password given is none of {user:?}'s passwords; give one of them to keep \
                 them all, or --reset-passwords to make it the only one"
            );
        }
    }
    Ok(password)
}

/// What `passwd` was asked to do.
struct PasswordChange<'a> {
    add: Option<String>,
    revoke: Option<String>,
    list: bool,
    source: &'a OptionalPasswordSource,
    current: &'a CurrentPasswordSource,
}

/// `passwd`: replace the default password, or add, revoke or list named ones.
async fn passwd(
    store: &dyn CredentialStore,
    user: &str,
    change: PasswordChange<'_>,
) -> anyhow::Result<()> {
    let PasswordChange {
        add,
        revoke,
        list,
        source,
        current,
    } = change;
    let has_source = source.password_stdin || source.password_file.is_some();
    let has_current = current.current_password_stdin || current.current_password_file.is_some();
    if list {
        for p in store.passwords(user).await? {
            println!(
                "{:<24} created {}  last used {}",
                p.name,
                when::timestamp(p.created_at),
                p.last_used_at.map_or("never".into(), when::timestamp)
            );
        }
        return Ok(());
    }
    if let Some(name) = revoke {
        if has_source || has_current {
            bail!("--revoke takes no password");
        }
        if !store.revoke_password(user, &name).await? {
            bail!("{user:?} has no password named {name:?}");
        }
        println!(
            "password {name:?} of {user:?} revoked; other passwords and the grant are unchanged"
        );
        return Ok(());
    }
    if !has_source {
        bail!("give the password with --password-stdin or --password-file");
    }
    let account = store
        .account(user)
        .await?
        .with_context(|| format!("no account {user:?}"))?;
    if account.password_sealed() && !has_current {
        bail!(
            "{user:?} is password-sealed: a new password needs one of its current passwords \
             (--current-password-file or --current-password-stdin), which opens the grant for it"
        );
    }
    if !account.password_sealed() && has_current {
        bail!("{user:?} is not password-sealed: no current password is needed");
    }
    let (current, password) = read_change_passwords(source, current)?;
    match add {
        Some(name) => {
            if account.grant == oxbridge_store::GrantKind::Password {
                bail!(
                    "{user:?} uses the password grant: its password is the user's Entra \
                     password, so it cannot have app passwords"
                );
            }
            store
                .add_password(user, &name, &password, current.as_ref())
                .await?;
            println!("password {name:?} added to {user:?}");
        }
        None => {
            store
                .set_password(user, &password, current.as_ref())
                .await?;
            println!("password of {user:?} changed");
        }
    }
    Ok(())
}

/// The current password (if asked for) and the new one; both on stdin means two lines.
fn read_change_passwords(
    source: &OptionalPasswordSource,
    current: &CurrentPasswordSource,
) -> anyhow::Result<(Option<Secret>, Secret)> {
    if current.current_password_stdin && source.password_stdin {
        let (current, new) = secret_input::two_from_stdin()?;
        return Ok((Some(current), new));
    }
    let current = match (
        &current.current_password_file,
        current.current_password_stdin,
    ) {
        (Some(path), _) => Some(secret_input::from_file(path)?),
        (None, true) => Some(secret_input::from_stdin()?),
        (None, false) => None,
    };
    let new = read_optional_password(source)?
        .context("give the password with --password-stdin or --password-file")?;
    Ok((current, new))
}

/// The `[[app]]` named `name`, with its secret or certificate, for a sign-in.
fn app_registration(
    config: &Config,
    name: &str,
    path: &std::path::Path,
) -> anyhow::Result<AppRegistration> {
    if !config.apps.iter().any(|a| a.name == name) {
        bail!("no [[app]] named {name:?} in {}", path.display());
    }
    oxbridge_server::runtime::app_registrations(config)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .find(|a| a.name == name)
        .with_context(|| format!("no [[app]] named {name:?}"))
}

/// `smtp=delegate@contoso.com`.
fn parse_identity(text: &str) -> anyhow::Result<(Protocol, String)> {
    let (protocol, mailbox) = text
        .split_once('=')
        .with_context(|| format!("--identity {text:?}: expected PROTOCOL=MAILBOX"))?;
    let protocol = protocol.trim().parse().map_err(anyhow::Error::msg)?;
    Ok((protocol, mailbox.trim().to_owned()))
}

fn read_password(source: &PasswordSource) -> anyhow::Result<Secret> {
    match &source.password_file {
        Some(path) => secret_input::from_file(path),
        None => secret_input::from_stdin(),
    }
}

fn read_optional_password(source: &OptionalPasswordSource) -> anyhow::Result<Option<Secret>> {
    match (&source.password_file, source.password_stdin) {
        (Some(path), _) => secret_input::from_file(path).map(Some),
        (None, true) => secret_input::from_stdin().map(Some),
        (None, false) => Ok(None),
    }
}

fn protocols(account: &Account) -> String {
    account
        .protocols
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// One word for the grant's state: what an operator scans a list for.
fn health_word(a: &Account) -> &'static str {
    match a.status {
        AccountStatus::NeedsReconsent => "NEEDS-CONSENT",
        AccountStatus::Disabled => "disabled",
        AccountStatus::Active => match (&a.health.last_failure, a.health.last_refresh_at) {
            (Some(f), Some(ok)) if f.at > ok => "failing",
            (Some(_), None) => "failing",
            (_, Some(_)) => "ok",
            (None, None) => "unused",
        },
    }
}

fn print_table(accounts: &[Account]) {
    println!(
        "{:<16} {:<30} {:<10} {:<22} {:<14} {:<12} {:<10}",
        "USER", "MAILBOX", "APP", "GRANT", "HEALTH", "REFRESHED", "RT AGE"
    );
    let now = when::now();
    for a in accounts {
        let grant = if a.password_sealed() {
            format!("{} (sealed)", a.grant.as_str())
        } else {
            a.grant.as_str().to_string()
        };
        println!(
            "{:<16} {:<30} {:<10} {:<22} {:<14} {:<12} {:<10}",
            a.name,
            a.mailbox,
            a.app,
            grant,
            health_word(a),
            a.health
                .last_refresh_at
                .map_or("-".into(), |t| when::ago(now - t)),
            a.refresh_token_updated_at
                .map_or("-".into(), |t| when::age(now - t)),
        );
    }
}

fn print_account(a: &Account, passwords: &[PasswordInfo]) {
    let now = when::now();
    println!("user:             {}", a.name);
    println!("mailbox:          {}", a.mailbox);
    for (protocol, mailbox) in &a.identities {
        println!("  as {protocol:<5}        {mailbox}");
    }
    println!("app:              {}", a.app);
    println!("grant:            {}", a.grant.as_str());
    if a.password_sealed() {
        println!("sealing:          password-sealed (refreshed only at login: no background refresh, no relay)");
    }
    println!("protocols:        {}", protocols(a));
    println!("status:           {}", a.status.as_str());
    if let Some(reason) = &a.status_reason {
        println!("reason:           {reason}");
    }
    println!(
        "needs re-consent: {}",
        if a.status == AccountStatus::NeedsReconsent {
            "yes"
        } else {
            "no"
        }
    );
    println!("created:          {}", when::timestamp(a.created_at));
    if let Some(t) = a.last_login_at {
        println!("last login:       {}", when::timestamp(t));
    }
    println!(
        "last refresh:     {}",
        a.health.last_refresh_at.map_or("never".into(), |t| format!(
            "{} ({})",
            when::timestamp(t),
            when::ago(now - t)
        ))
    );
    if let Some(t) = a.health.access_token_expires_at {
        println!("token expires:    {}", when::timestamp(t));
    }
    if let Some(t) = a.refresh_token_updated_at {
        println!(
            "refresh token:    saved {} ({} old; Entra expires it after 90 days unused)",
            when::timestamp(t),
            when::age(now - t)
        );
    }
    match &a.health.last_failure {
        Some(f) => {
            let codes: Vec<String> = f.codes.iter().map(|c| format!("AADSTS{c}")).collect();
            println!(
                "last failure:     {} [{}] {}",
                when::timestamp(f.at),
                f.class,
                codes.join(",")
            );
            println!("                  {}", f.reason);
        }
        None => println!("last failure:     none"),
    }
    if a.pending_claims().is_some() {
        println!(
            "claims challenge: pending; `oxbridge account consent {}` passes it on to the sign-in",
            a.name
        );
    }
    println!("passwords:");
    for p in passwords {
        println!(
            "  {:<22} created {}  last used {}",
            p.name,
            when::timestamp(p.created_at),
            p.last_used_at.map_or("never".into(), when::timestamp)
        );
    }
}

fn to_json(a: &Account, passwords: Option<&[PasswordInfo]>) -> serde_json::Value {
    let identities: serde_json::Map<String, serde_json::Value> = a
        .identities
        .iter()
        .map(|(p, m)| (p.as_str().to_owned(), serde_json::Value::from(m.as_str())))
        .collect();
    let mut value = serde_json::json!({
        "user": a.name,
        "mailbox": a.mailbox,
        "identities": identities,
        "app": a.app,
        "grant": a.grant.as_str(),
        "sealing": a.sealing.as_str(),
        "password_sealed": a.password_sealed(),
        "protocols": a.protocols.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "status": a.status.as_str(),
        "status_reason": a.status_reason,
        "needs_reconsent": a.status == AccountStatus::NeedsReconsent,
        "created_at": a.created_at,
        "last_login_at": a.last_login_at,
        "refresh_token_updated_at": a.refresh_token_updated_at,
        "health": {
            "state": health_word(a),
            "refresh": if a.password_sealed() { "sealed: refreshed only at login" } else { "background" },
            "claims_challenge_pending": a.pending_claims().is_some(),
            "last_refresh_at": a.health.last_refresh_at,
            "access_token_expires_at": a.health.access_token_expires_at,
            "last_failure": a.health.last_failure.as_ref().map(|f| serde_json::json!({
                "at": f.at,
                "class": f.class,
                "codes": f.codes,
                "reason": f.reason,
                "claims": f.claims,
            })),
        },
    });
    if let (Some(passwords), Some(map)) = (passwords, value.as_object_mut()) {
        map.insert(
            "passwords".into(),
            passwords
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "name": p.name,
                        "created_at": p.created_at,
                        "last_used_at": p.last_used_at,
                    })
                })
                .collect(),
        );
    }
    value
}
