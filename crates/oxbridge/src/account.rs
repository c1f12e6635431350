//! `oxbridge account …`: managing accounts in the store. Secrets come from stdin or files.

use std::sync::Arc;

use anyhow::{bail, Context};
use oxbridge_server::open_store;
use oxbridge_store::{Account, CredentialStore, NewAccount, NewGrant};
use oxbridge_wire::Protocol;

use crate::cli::{AccountArgs, AccountCommand, PasswordSource};
use crate::{load_config, secret_input};

pub async fn run(args: AccountArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let store: Arc<dyn CredentialStore> = open_store(&config).map_err(anyhow::Error::msg)?;
    match args.command {
        AccountCommand::Add {
            user,
            mailbox,
            app,
            protocols,
            grant,
            password,
        } => {
            if !config.apps.iter().any(|a| a.name == app) {
                bail!("no [[app]] named {app:?} in {}", args.config.display());
            }
            let protocols = protocols
                .iter()
                .map(|p| p.parse::<Protocol>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let grant = match grant.refresh_token_file {
                Some(path) => NewGrant::RefreshToken(secret_input::from_file(&path)?),
                None => NewGrant::ClientCredentials,
            };
            let password = read_password(&password)?;
            let account = store
                .add_account(NewAccount {
                    name: user,
                    mailbox,
                    app,
                    protocols,
                    grant,
                    password,
                })
                .await?;
            println!(
                "added account {:?} for mailbox {}",
                account.name, account.mailbox
            );
        }
        AccountCommand::List { json } => {
            let accounts = store.list_accounts().await?;
            if json {
                let list: Vec<_> = accounts.iter().map(to_json).collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                println!(
                    "{:<20} {:<32} {:<12} {:<18} {:<16}",
                    "USER", "MAILBOX", "APP", "GRANT", "STATUS"
                );
                for a in &accounts {
                    println!(
                        "{:<20} {:<32} {:<12} {:<18} {:<16}",
                        a.name,
                        a.mailbox,
                        a.app,
                        a.grant.as_str(),
                        a.status.as_str()
                    );
                }
            }
        }
        AccountCommand::Show { user, json } => {
            let account = store
                .account(&user)
                .await?
                .with_context(|| format!("no account {user:?}"))?;
            if json {
                println!("{}", to_json(&account));
            } else {
                print_account(&account);
            }
        }
        AccountCommand::Remove { user } => {
            if !store.remove_account(&user).await? {
                bail!("no account {user:?}");
            }
            println!("removed account {user:?}");
        }
        AccountCommand::Passwd { user, password } => {
            let password = read_password(&password)?;
            store.set_password(&user, &password).await?;
            println!("password of {user:?} changed");
        }
        AccountCommand::ImportToken {
            user,
            refresh_token_file,
        } => {
            let token = secret_input::from_file(&refresh_token_file)?;
            store.import_refresh_token(&user, &token).await?;
            println!("refresh token of {user:?} replaced; account active");
        }
    }
    Ok(())
}

fn read_password(source: &PasswordSource) -> anyhow::Result<oxbridge_wire::Secret> {
    match &source.password_file {
        Some(path) => secret_input::from_file(path),
        None => secret_input::from_stdin(),
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

fn print_account(a: &Account) {
    println!("user:        {}", a.name);
    println!("mailbox:     {}", a.mailbox);
    println!("app:         {}", a.app);
    println!("grant:       {}", a.grant.as_str());
    println!("protocols:   {}", protocols(a));
    println!("status:      {}", a.status.as_str());
    if let Some(reason) = &a.status_reason {
        println!("reason:      {reason}");
    }
    println!("created:     {}", a.created_at);
    if let Some(t) = a.last_login_at {
        println!("last login:  {t}");
    }
    if let Some(t) = a.refresh_token_updated_at {
        println!("token saved: {t}");
    }
}

fn to_json(a: &Account) -> serde_json::Value {
    serde_json::json!({
        "user": a.name,
        "mailbox": a.mailbox,
        "app": a.app,
        "grant": a.grant.as_str(),
        "protocols": a.protocols.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "status": a.status.as_str(),
        "status_reason": a.status_reason,
        "created_at": a.created_at,
        "last_login_at": a.last_login_at,
        "refresh_token_updated_at": a.refresh_token_updated_at,
    })
}
