//! rustls configuration: which roots are trusted, and the one way to turn
//! certificate verification off.
//!
//! The crypto provider is *ring*: it builds on a bare machine with only a C
//! compiler, where aws-lc-rs also needs CMake (and on some targets NASM or Go).
//! Both are rustls' supported providers and give the same protocol coverage
//! for a mail client.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::Error;

/// Which certificates the transport trusts.
///
/// By default: the Mozilla root program as shipped by `webpki-roots`, nothing
/// else. Extra roots (a company CA, a test CA) are added from PEM; the
/// platform's own store is added with the `rustls-native-certs` feature.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// A caller's own rustls configuration, used as is.
    custom: Option<Arc<rustls::ClientConfig>>,
    extra_roots: Vec<CertificateDer<'static>>,
    without_webpki_roots: bool,
    native_roots: bool,
    dangerous_accept_invalid_certs: bool,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("custom_rustls_config", &self.custom.is_some())
            .field("extra_roots", &self.extra_roots.len())
            .field("webpki_roots", &!self.without_webpki_roots)
            .field("native_roots", &self.native_roots)
            .field(
                "dangerous_accept_invalid_certs",
                &self.dangerous_accept_invalid_certs,
            )
            .finish()
    }
}

impl TlsOptions {
    /// Uses `config` as is for SMTP and token requests: the caller's own
    /// roots, verifier, client certificate or crypto provider (aws-lc-rs,
    /// a FIPS build). The other settings here are then not used. Its ALPN
    /// list should be empty: SMTP and the token endpoint speak no ALPN
    /// protocol.
    #[must_use]
    pub fn from_rustls_config(config: Arc<rustls::ClientConfig>) -> Self {
        TlsOptions {
            custom: Some(config),
            ..TlsOptions::default()
        }
    }

    /// Trusts every certificate in `pem` (one or more `CERTIFICATE` blocks) in
    /// addition to the other roots. Returns how many were added; a PEM text
    /// without any certificate is an error.
    pub fn add_root_pem(&mut self, pem: &[u8]) -> Result<usize, Error> {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::Config(format!("bad PEM certificate: {e}")))?;
            self.extra_roots.push(cert);
            added += 1;
        }
        if added == 0 {
            return Err(Error::Config(
                "no CERTIFICATE block in the PEM text".to_owned(),
            ));
        }
        Ok(added)
    }

    /// Trusts every certificate in the PEM file at `path` (see
    /// [`TlsOptions::add_root_pem`]).
    pub fn add_root_pem_file(&mut self, path: impl AsRef<Path>) -> Result<usize, Error> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        self.add_root_pem(&pem)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// [`TlsOptions::add_root_pem`], chaining:
    /// `TlsOptions::default().with_root_pem(pem)?.without_webpki_roots()`.
    pub fn with_root_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        self.add_root_pem(pem)?;
        Ok(self)
    }

    /// [`TlsOptions::add_root_pem_file`], chaining.
    pub fn with_root_pem_file(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        self.add_root_pem_file(path)?;
        Ok(self)
    }

    /// Stops trusting the built-in Mozilla roots: only the extra and native
    /// roots remain (a private CA only).
    #[must_use]
    pub fn without_webpki_roots(mut self) -> Self {
        self.without_webpki_roots = true;
        self
    }

    /// Also trusts the operating system's certificate store (feature
    /// `rustls-native-certs`).
    #[cfg(feature = "rustls-native-certs")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls-native-certs")))]
    #[must_use]
    pub fn native_roots(mut self, on: bool) -> Self {
        self.native_roots = on;
        self
    }

    /// **Dangerous.** Accepts any certificate for any name, expired or
    /// self-signed: anyone on the path can read the credentials and the mail.
    /// Only for a test server you cannot give a proper certificate.
    #[must_use]
    pub fn dangerous_accept_invalid_certs(mut self, on: bool) -> Self {
        self.dangerous_accept_invalid_certs = on;
        self
    }

    /// `true` when certificate verification is off.
    #[must_use]
    pub fn accepts_invalid_certs(&self) -> bool {
        self.dangerous_accept_invalid_certs
    }

    /// The rustls configuration (no ALPN, no client certificate).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        if let Some(config) = &self.custom {
            return Ok(Arc::clone(config));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS setup: {e}")))?;
        let config = if self.dangerous_accept_invalid_certs {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.roots()?)
                .with_no_client_auth()
        };
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, Error> {
        let mut roots = RootCertStore::empty();
        if !self.without_webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in &self.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| Error::Config(format!("unusable root certificate: {e}")))?;
        }
        #[cfg(feature = "rustls-native-certs")]
        if self.native_roots {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::Config(
                    "no usable certificate in the platform's store".to_owned(),
                ));
            }
        }
        if roots.is_empty() {
            return Err(Error::Config("no trusted root certificate".to_owned()));
        }
        Ok(roots)
    }
}

/// The name to verify the server's certificate against: a DNS name, or an IP
/// address literal (then the certificate needs an IP SAN).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|_| Error::Config(format!("{host:?} is not a valid host name for TLS")))
}

/// The verifier behind [`TlsOptions::dangerous_accept_invalid_certs`]: the
/// chain and name are not checked; the handshake signatures still are, so the
/// session is at least bound to the key the server showed.
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The provider in use, for callers that build their own rustls objects:
/// *ring* by default, aws-lc-rs with the `aws-lc-rs` feature.
#[must_use]
pub fn crypto_provider() -> CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    return rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(not(feature = "aws-lc-rs"))]
    rustls::crypto::ring::default_provider()
}
