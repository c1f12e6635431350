//! `oxbridge demo`: the proxy in front of the built-in fake Exchange Online and Entra ID,
//! with one ready account, so a newcomer can point a real client at it in one command.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use oxbridge_fake::{FakeExchange, FakeOptions};
use oxbridge_server::config::{
    AppConfig, ListenerConfig, ListenerTls, UpstreamConfig, UpstreamTlsMode,
};
use oxbridge_server::{open_store, Config};
use oxbridge_store::{NewAccount, NewGrant};
use oxbridge_wire::{Protocol, Secret};
use rand::distributions::{Alphanumeric, DistString};

use crate::cli::DemoArgs;

const DEMO_USER: &str = "demo";
const DEMO_MAILBOX: &str = "demo@contoso.onmicrosoft.com";
const DEMO_CLIENT_ID: &str = "00000000-0000-4000-8000-00000000d3e0";

/// Sample messages for the demo INBOX.
const MESSAGES: [&str; 3] = [
    "From: Alex Wilber <alexw@contoso.onmicrosoft.com>\r\nTo: demo@contoso.onmicrosoft.com\r\nSubject: Welcome to oxbridge\r\nDate: Mon, 16 Nov 2026 09:00:00 +0000\r\nMessage-ID: <welcome@contoso.onmicrosoft.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis message was fetched through oxbridge with XOAUTH2.\r\n",
    "From: Scanner <scanner@contoso.onmicrosoft.com>\r\nTo: demo@contoso.onmicrosoft.com\r\nSubject: Scan from MFP-2F\r\nDate: Tue, 17 Nov 2026 14:12:00 +0000\r\nMessage-ID: <scan-0042@contoso.onmicrosoft.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYour scan is attached (not really: this is a demo).\r\n",
    "From: ERP <erp@contoso.onmicrosoft.com>\r\nTo: demo@contoso.onmicrosoft.com\r\nSubject: Invoice 2026-1187\r\nDate: Wed, 18 Nov 2026 08:30:00 +0000\r\nMessage-ID: <inv-2026-1187@contoso.onmicrosoft.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nInvoice 2026-1187 is due on 1 December.\r\n",
];

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::logging::init("text");
    let fake = FakeExchange::start(FakeOptions::default())
        .await
        .context("cannot start the fake Exchange Online")?;
    fake.directory().add_mailbox(DEMO_MAILBOX);
    for message in MESSAGES {
        fake.directory()
            .deliver(DEMO_MAILBOX, "INBOX", message.as_bytes());
    }
    let client_secret = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    fake.entra().register_app(DEMO_CLIENT_ID, &client_secret);
    let refresh_token = fake
        .entra()
        .issue_refresh_token(DEMO_CLIENT_ID, DEMO_MAILBOX);

    let temp;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            // Private like any data_dir (oxbridge warns about one others can read).
            temp = tempfile::Builder::new()
                .prefix("oxbridge-demo-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&data_dir)?;
    let ca_file = data_dir.join("fake-exchange-ca.pem");
    std::fs::write(&ca_file, fake.pki().ca_pem())?;
    let secret_file = data_dir.join("client-secret");
    write_private(&secret_file, client_secret.as_bytes())?;

    let config = demo_config(&args, &fake, &data_dir, &ca_file, &secret_file)?;
    let password = Alphanumeric.sample_string(&mut rand::thread_rng(), 16);
    let store = open_store(&config).map_err(anyhow::Error::msg)?;
    if store.account(DEMO_USER).await?.is_some() {
        store.remove_account(DEMO_USER).await?;
    }
    store
        .add_account(NewAccount {
            name: DEMO_USER.into(),
            mailbox: DEMO_MAILBOX.into(),
            app: "demo".into(),
            protocols: vec![Protocol::Imap, Protocol::Pop3, Protocol::Smtp],
            grant: NewGrant::RefreshToken(Secret::from(refresh_token)),
            password: Secret::from(password.as_str()),
            sealing: Default::default(),
        })
        .await?;
    drop(store);

    print_instructions(&args, &password);
    crate::run_server(config).await
}

fn demo_config(
    args: &DemoArgs,
    fake: &FakeExchange,
    data_dir: &Path,
    ca_file: &Path,
    secret_file: &Path,
) -> anyhow::Result<Config> {
    let mut config = Config::parse("").map_err(anyhow::Error::msg)?;
    config.data_dir = data_dir.to_path_buf();
    config.admin.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, args.admin_port)).to_string();
    let listener = |protocol, port, tls| ListenerConfig {
        protocol,
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        tls,
        allow_plaintext: false,
        proxy_protocol: false,
        trusted_proxies: None,
    };
    config.listeners = vec![
        listener(Protocol::Imap, args.imap_port, ListenerTls::Implicit),
        listener(
            Protocol::Imap,
            args.imap_starttls_port,
            ListenerTls::Starttls,
        ),
        listener(Protocol::Pop3, args.pop3_port, ListenerTls::Implicit),
        listener(Protocol::Smtp, args.smtp_port, ListenerTls::Starttls),
    ];
    let upstream = |address: SocketAddr, tls| UpstreamConfig {
        address: address.to_string(),
        tls,
        ca_file: Some(ca_file.to_path_buf()),
        server_name: Some("outlook.office365.com".into()),
        connect_timeout_secs: 10,
        pool_size: 0,
        pool_ttl_secs: 20,
    };
    config.upstream.imap = upstream(fake.imap_addr(), UpstreamTlsMode::Implicit);
    config.upstream.pop3 = upstream(fake.pop3_addr(), UpstreamTlsMode::Implicit);
    config.upstream.smtp = upstream(fake.smtp_addr(), UpstreamTlsMode::Starttls);
    config.apps = vec![AppConfig {
        name: "demo".into(),
        authority: fake.authority(),
        tenant: fake.tenant().to_string(),
        client_id: DEMO_CLIENT_ID.into(),
        client_secret_file: Some(secret_file.to_path_buf()),
        client_secret_env: None,
        scopes: Vec::new(),
        app_scope: None,
        ca_file: Some(ca_file.to_path_buf()),
        certificate: None,
        private_key: None,
        assertion: None,
        allow_password_grant: false,
    }];
    Ok(config)
}

fn print_instructions(args: &DemoArgs, password: &str) {
    let DemoArgs {
        imap_port,
        imap_starttls_port,
        pop3_port,
        smtp_port,
        admin_port,
        ..
    } = args;
    println!(
        "\noxbridge demo: the proxy runs in front of a fake Exchange Online and Entra ID.\n\
         \n  IMAP, implicit TLS:  127.0.0.1:{imap_port}\
         \n  IMAP, STARTTLS:      127.0.0.1:{imap_starttls_port}\
         \n  POP3, implicit TLS:  127.0.0.1:{pop3_port}\
         \n  SMTP, STARTTLS:      127.0.0.1:{smtp_port}\
         \n  user: {DEMO_USER}   password: {password}   (mailbox {DEMO_MAILBOX})\
         \n  metrics:             http://127.0.0.1:{admin_port}/metrics\n\
         \nTry (the certificate is self-signed, hence --insecure):\
         \n  curl --insecure \"imaps://127.0.0.1:{imap_port}/INBOX\" -u {DEMO_USER}:{password}\
         \n  curl --insecure \"imaps://127.0.0.1:{imap_port}/INBOX;UID=1\" -u {DEMO_USER}:{password}\
         \n  curl --insecure --ssl-reqd \"imap://127.0.0.1:{imap_starttls_port}/INBOX\" -u {DEMO_USER}:{password}\
         \n  curl --insecure \"pop3s://127.0.0.1:{pop3_port}/1\" -u {DEMO_USER}:{password}\
         \n  swaks --server 127.0.0.1:{smtp_port} --tls --tls-verify=no --auth PLAIN --auth-user {DEMO_USER} --auth-password {password} --from {DEMO_MAILBOX} --to {DEMO_MAILBOX}\n\
         \nPress Ctrl-C to stop.\n"
    );
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
