//! [`FakeExchange`]: starts the fake tenant (the IMAP, POP3 and SMTP submission services and
//! the token endpoint) on loopback ports and stops it when dropped.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::directory::Directory;
use crate::entra::{self, FakeEntra};
use crate::ids;
use crate::imap;
use crate::pki::TestPki;
use crate::pop3::{self, Pop3Switches};
use crate::smtp::{self, SmtpSwitches, TlsMode};

/// How to start the fake. `Default` gives Exchange Online's behaviour.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The tenant's domain, as in `{authority}/{tenant}/oauth2/v2.0/token`.
    pub tenant: String,
    /// Certificates to serve; `None` generates a fresh test PKI.
    pub pki: Option<TestPki>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            tenant: "contoso.onmicrosoft.com".to_string(),
            pki: None,
        }
    }
}

/// The running fake services. Dropping it aborts every task (listeners and connections).
#[derive(Debug)]
pub struct FakeExchange {
    tenant: String,
    pki: TestPki,
    directory: Directory,
    entra: FakeEntra,
    imap_addr: SocketAddr,
    pop3_addr: SocketAddr,
    pop3: Pop3Switches,
    smtp_addr: SocketAddr,
    smtp_implicit_addr: SocketAddr,
    smtp: SmtpSwitches,
    entra_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeExchange {
    /// Binds every service on `127.0.0.1:0` and starts serving.
    pub async fn start(options: FakeOptions) -> io::Result<FakeExchange> {
        oxbridge_wire::tls::install_crypto_provider();
        let pki = options.pki.unwrap_or_else(TestPki::generate);
        let tls = pki.server_config();
        let directory = Directory::new();
        let entra = FakeEntra::new(&options.tenant, directory.clone());

        let imap_listener = TcpListener::bind("127.0.0.1:0").await?;
        let pop3_listener = TcpListener::bind("127.0.0.1:0").await?;
        let pop3_addr = pop3_listener.local_addr()?;
        let pop3 = Pop3Switches::default();
        let smtp_listener = TcpListener::bind("127.0.0.1:0").await?;
        let smtp_implicit_listener = TcpListener::bind("127.0.0.1:0").await?;
        let smtp_addr = smtp_listener.local_addr()?;
        let smtp_implicit_addr = smtp_implicit_listener.local_addr()?;
        let smtp = SmtpSwitches::default();
        let entra_listener = TcpListener::bind("127.0.0.1:0").await?;
        let imap_addr = imap_listener.local_addr()?;
        let entra_addr = entra_listener.local_addr()?;
        let backend = format!(
            "{}.NAMPRD{}.PROD.OUTLOOK.COM",
            ids::alnum_upper(13),
            ids::alnum_upper(2)
        );
        let tasks = vec![
            tokio::spawn(imap::serve(
                directory.clone(),
                imap_listener,
                tls.clone(),
                backend.clone(),
            )),
            tokio::spawn(pop3::serve(
                directory.clone(),
                pop3.clone(),
                pop3_listener,
                tls.clone(),
                backend.clone(),
            )),
            tokio::spawn(smtp::serve(
                directory.clone(),
                smtp.clone(),
                smtp_listener,
                tls.clone(),
                backend.clone(),
                TlsMode::StartTls,
            )),
            tokio::spawn(smtp::serve(
                directory.clone(),
                smtp.clone(),
                smtp_implicit_listener,
                tls.clone(),
                backend,
                TlsMode::Implicit,
            )),
            tokio::spawn(entra::serve(entra.clone(), entra_listener, tls)),
        ];
        Ok(FakeExchange {
            tenant: options.tenant,
            pki,
            directory,
            entra,
            imap_addr,
            pop3_addr,
            pop3,
            smtp_addr,
            smtp_implicit_addr,
            smtp,
            entra_addr,
            tasks,
        })
    }

    /// The implicit-TLS IMAP address (the fake `outlook.office365.com:993`).
    pub fn imap_addr(&self) -> SocketAddr {
        self.imap_addr
    }

    /// The implicit-TLS POP3 address (the fake `outlook.office365.com:995`).
    pub fn pop3_addr(&self) -> SocketAddr {
        self.pop3_addr
    }

    /// The POP3 service's switches (inline XOAUTH2 rejection and its counter).
    pub fn pop3(&self) -> &Pop3Switches {
        &self.pop3
    }

    /// The submission address with STARTTLS (the fake `smtp.office365.com:587`).
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp_addr
    }

    /// The same submission service with implicit TLS, which Exchange Online does not offer
    /// (EXCHANGE.md §1.1); it exercises oxbridge's implicit-TLS upstream option, which
    /// other providers (Gmail's 465) need.
    pub fn smtp_implicit_addr(&self) -> SocketAddr {
        self.smtp_implicit_addr
    }

    /// The submission service's switches and the messages it accepted.
    pub fn smtp(&self) -> &SmtpSwitches {
        &self.smtp
    }

    /// `https://127.0.0.1:PORT`; the token URL is `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn authority(&self) -> String {
        format!("https://{}", self.entra_addr)
    }

    /// The full token URL for the configured tenant.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.authority(), self.tenant)
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    pub fn entra(&self) -> &FakeEntra {
        &self.entra
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }
}

impl Drop for FakeExchange {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
