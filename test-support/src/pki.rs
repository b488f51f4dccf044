//! A throwaway certificate authority and the server certificates the TLS
//! tests need: a good one, one for the wrong host, an expired one.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A server certificate with its key.
#[derive(Clone, Debug)]
pub struct ServerCert {
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    /// The certificate in PEM.
    pub cert_pem: String,
    /// The private key in PEM (PKCS #8).
    pub key_pem: String,
}

impl ServerCert {
    /// A rustls server configuration presenting this certificate.
    #[must_use]
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        #[allow(clippy::expect_used)]
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(self.chain.clone(), key)
            })
            .expect("test certificate is usable");
        Arc::new(config)
    }
}

/// The test CA and the certificates it signed.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate in PEM: what a client adds as an extra root.
    pub ca_pem: String,
    /// Valid for `localhost` and `127.0.0.1`.
    pub localhost: ServerCert,
    /// Valid, but only for `wrong.example` (a hostname mismatch on loopback).
    pub wrong_host: ServerCert,
    /// For `localhost` and `127.0.0.1`, expired in 2020.
    pub expired: ServerCert,
}

impl Pki {
    /// Generates a fresh CA and certificates (ECDSA P-256; a few ms).
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn generate() -> Pki {
        let ca_key = KeyPair::generate().expect("key generation");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "postern test CA");
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: &[&str], expired: bool| -> ServerCert {
            let key = KeyPair::generate().expect("key generation");
            let mut p =
                CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                    .expect("leaf params");
            if expired {
                p.not_before = date_time_ymd(2019, 1, 1);
                p.not_after = date_time_ymd(2020, 1, 1);
            }
            let cert = p.signed_by(&key, &issuer).expect("leaf certificate");
            ServerCert {
                chain: vec![cert.der().clone(), ca_cert.der().clone()],
                key_der: key.serialize_der(),
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        };
        Pki {
            ca_pem: ca_cert.pem(),
            localhost: leaf(&["localhost", "127.0.0.1"], false),
            wrong_host: leaf(&["wrong.example"], false),
            expired: leaf(&["localhost", "127.0.0.1"], true),
        }
    }
}
