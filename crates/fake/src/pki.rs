//! A throw-away certificate authority and a server certificate signed by it, generated at
//! run time so no key is ever committed and every test run trusts only its own CA.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::RootCertStore;

/// The names the leaf certificate is valid for: loopback, plus the real Exchange Online and
/// Entra host names so a client configured with production names can be pointed at the fake.
pub const LEAF_NAMES: [&str; 4] = [
    "localhost",
    "127.0.0.1",
    "outlook.office365.com",
    "login.microsoftonline.com",
];

/// A test CA and a leaf certificate for [`LEAF_NAMES`], all as PEM.
#[derive(Clone)]
pub struct TestPki {
    ca_pem: String,
    leaf_chain_pem: String,
    leaf_key_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

impl TestPki {
    /// A fresh CA (ECDSA P-256, via ring) and a leaf signed by it.
    pub fn generate() -> TestPki {
        // Generating and self-signing with fixed, valid parameters cannot fail short of a
        // broken crypto provider, which no test could work around.
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "oxbridge fake test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");

        let leaf_key = KeyPair::generate().expect("generate leaf key");
        let names: Vec<String> = LEAF_NAMES.iter().map(|n| n.to_string()).collect();
        let mut leaf_params = CertificateParams::new(names).expect("leaf params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "outlook.office365.com");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .expect("sign leaf");

        let ca_pem = ca_cert.pem();
        TestPki {
            leaf_chain_pem: format!("{}{}", leaf_cert.pem(), ca_pem),
            leaf_key_pem: leaf_key.serialize_pem(),
            ca_pem,
        }
    }

    /// The CA certificate: what clients of the fake must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The leaf certificate followed by the CA certificate.
    pub fn leaf_cert_pem(&self) -> &str {
        &self.leaf_chain_pem
    }

    /// The leaf's private key (PKCS#8).
    pub fn leaf_key_pem(&self) -> &str {
        &self.leaf_key_pem
    }

    /// Writes the CA certificate to `path`, for a child process's `ca_file` setting.
    pub fn write_ca_pem(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.ca_pem)
    }

    /// A TLS server config presenting the leaf chain.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let certs = oxbridge_wire::tls::certs_from_pem(self.leaf_chain_pem.as_bytes());
        let key = PrivateKeyDer::from_pem_slice(self.leaf_key_pem.as_bytes())
            .expect("the generated leaf key is valid PEM");
        oxbridge_wire::tls::server_config(certs, key).expect("the generated leaf chain is usable")
    }

    /// A TLS client config trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in oxbridge_wire::tls::certs_from_pem(self.ca_pem.as_bytes()) {
            roots
                .add(cert)
                .expect("the generated CA is a valid trust anchor");
        }
        oxbridge_wire::tls::client_config_with_roots(roots).expect("a ring client config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pems_look_right_and_configs_build() {
        let pki = TestPki::generate();
        assert!(pki.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(pki.leaf_cert_pem().matches("BEGIN CERTIFICATE").count(), 2);
        assert!(pki.leaf_key_pem().contains("PRIVATE KEY"));
        let _ = pki.server_config();
        let _ = pki.client_config();
    }
}
