//! TLS: a private CA (`ca_file`), client certificates (`cert_file`/`key_file`), `server_name`,
//! and `insecure_skip_verify`, against a rustls server with certificates made by rcgen.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{fast_retry, profile};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pyro_core::{AppendErrorKind, Receiver};
use pyro_write::{AppendMode, EndpointConfig, TlsConfig, Writer, WriterConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    ca_der: CertificateDer<'static>,
}

/// A CA, a server certificate for `localhost` only, and a client certificate.
fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["pyro-client".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    let client_cert = dir.path().join("client.pem");
    let client_key_path = dir.path().join("client.key");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&client_cert, client.pem()).unwrap();
    std::fs::write(&client_key_path, client_key.serialize_pem()).unwrap();
    Pki {
        ca_file,
        client_cert,
        client_key: client_key_path,
        server_chain: vec![server.der().clone()],
        server_key: server_key.serialize_der(),
        ca_der: ca.der().clone(),
        _dir: dir,
    }
}

struct TlsServer {
    url: String,
    requests: Arc<AtomicUsize>,
    /// Per TLS connection: whether the client presented a certificate.
    client_certs: Arc<Mutex<Vec<bool>>>,
    /// Per TLS connection: the negotiated ALPN protocol.
    alpn: Arc<Mutex<Vec<String>>>,
}

async fn tls_server(pki: &Pki) -> TlsServer {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            pki.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let client_certs: Arc<Mutex<Vec<bool>>> = Arc::default();
    let alpn: Arc<Mutex<Vec<String>>> = Arc::default();
    let (reqs, certs, protos) = (requests.clone(), client_certs.clone(), alpn.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let reqs = reqs.clone();
            let certs = certs.clone();
            let protos = protos.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                certs
                    .lock()
                    .unwrap()
                    .push(tls.get_ref().1.peer_certificates().is_some());
                protos.lock().unwrap().push(
                    String::from_utf8_lossy(tls.get_ref().1.alpn_protocol().unwrap_or_default())
                        .into_owned(),
                );
                let svc = service_fn(move |_req| {
                    reqs.fetch_add(1, Ordering::Relaxed);
                    async { Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new()))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsServer {
        url: format!("https://127.0.0.1:{}", addr.port()),
        requests,
        client_certs,
        alpn,
    }
}

async fn push(endpoint: EndpointConfig) -> Result<(), pyro_core::AppendError> {
    let config = WriterConfig {
        endpoints: vec![endpoint],
        append_mode: AppendMode::WaitForDelivery,
        ..WriterConfig::default()
    };
    let w = Writer::builder(config).spawn().unwrap();
    let r = w.append(profile("svc", "tls")).await;
    let _ = w
        .shutdown(std::time::Instant::now() + Duration::from_secs(5))
        .await;
    r
}

fn endpoint(url: &str, tls: TlsConfig) -> EndpointConfig {
    let mut e = EndpointConfig::new(url);
    e.retry = fast_retry();
    e.retry.max_backoff_retries = 1;
    e.tls_config = tls;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_ca_with_server_name_and_client_certificate() {
    let pki = pki();
    let server = tls_server(&pki).await;
    let tls = TlsConfig {
        ca_file: Some(pki.ca_file.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
        server_name: Some("localhost".into()),
        insecure_skip_verify: false,
    };
    push(endpoint(&server.url, tls)).await.unwrap();
    assert_eq!(server.requests.load(Ordering::Relaxed), 1);
    assert_eq!(*server.client_certs.lock().unwrap(), [true]);
    assert_eq!(
        *server.alpn.lock().unwrap(),
        ["h2"],
        "HTTP/2 negotiated over TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_verified() {
    let pki = pki();
    let server = tls_server(&pki).await;
    // Default roots (webpki) do not know the private CA.
    let err = push(endpoint(&server.url, TlsConfig::default()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AppendErrorKind::Unavailable, "{err}");
    // The right CA, but the certificate is for `localhost`, not 127.0.0.1.
    let tls = TlsConfig {
        ca_file: Some(pki.ca_file.clone()),
        ..TlsConfig::default()
    };
    assert!(push(endpoint(&server.url, tls)).await.is_err());
    assert_eq!(server.requests.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_is_an_explicit_opt_in() {
    let pki = pki();
    let server = tls_server(&pki).await;
    let tls = TlsConfig {
        insecure_skip_verify: true,
        ..TlsConfig::default()
    };
    push(endpoint(&server.url, tls)).await.unwrap();
    assert_eq!(server.requests.load(Ordering::Relaxed), 1);
    assert_eq!(*server.client_certs.lock().unwrap(), [false]);
}

#[test]
fn broken_tls_files_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for tls in [
        TlsConfig {
            ca_file: Some(empty.clone()),
            ..TlsConfig::default()
        },
        TlsConfig {
            ca_file: Some(dir.path().join("missing.pem")),
            ..TlsConfig::default()
        },
        TlsConfig {
            cert_file: Some(empty.clone()),
            ..TlsConfig::default()
        },
    ] {
        let e = pyro_write::PushSink::new(&endpoint("https://x", tls)).unwrap_err();
        assert!(
            matches!(
                e,
                pyro_write::ConfigError::TlsFile { .. } | pyro_write::ConfigError::Conflict { .. }
            ),
            "{e}"
        );
    }
}
