//! rustls client configuration from a [`TlsConfig`] (ring provider).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsConfig;
use crate::error::ConfigError;

fn file_error(endpoint: &str, path: &Path, message: impl ToString) -> ConfigError {
    ConfigError::TlsFile {
        endpoint: endpoint.to_owned(),
        path: path.to_owned(),
        message: message.to_string(),
    }
}

fn load_certs(endpoint: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(endpoint, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(endpoint, path, e))?;
    if certs.is_empty() {
        return Err(file_error(endpoint, path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// Builds the client configuration: roots from `ca_file` or webpki-roots, an optional client
/// certificate. (ALPN is set by the connector builder.)
pub(crate) fn client_config(endpoint: &str, tls: &TlsConfig) -> Result<ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_err = |source| ConfigError::Tls {
        endpoint: endpoint.to_owned(),
        source,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &tls.ca_file {
            Some(path) => {
                for cert in load_certs(endpoint, path)? {
                    roots.add(cert).map_err(|e| file_error(endpoint, path, e))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(endpoint, cert)?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(endpoint, key, e))?;
            builder.with_client_auth_cert(chain, key).map_err(tls_err)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(ConfigError::Conflict {
                endpoint: endpoint.to_owned(),
                message: "tls: cert_file and key_file must be given together".into(),
            });
        }
    };
    Ok(config)
}

/// `insecure_skip_verify`: accepts every certificate, still checks handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
