//! `discovery.docker` over TLS (`tls_config`: CA, client certificate and key, as
//! `dockerd --tlsverify` wants): a rustls server with rcgen certificates that requires a client
//! certificate and answers the Engine API. Without the client certificate the handshake fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use pyro_core::Discoverer;
use pyro_discovery::docker::{ApiErrorKind, DockerConfig, DockerDiscoverer};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate() {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["pyro".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (ca_file, cert_file, key_file) = (
        file("ca.pem", ca.pem()),
        file("cert.pem", client.pem()),
        file("key.pem", client_key.serialize_pem()),
    );

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let body = if line.contains("/version") {
                    r#"{"ApiVersion":"1.41"}"#
                } else if line.contains("/containers/json") {
                    r#"[{"Id":"c1","Names":["/web"],"HostConfig":{"NetworkMode":"n"},
                        "Ports":[{"PrivatePort":80,"Type":"tcp"}],
                        "NetworkSettings":{"Networks":{"n":{"NetworkID":"n1","IPAddress":"10.0.0.2"}}}}]"#
                } else {
                    "[]"
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });

    let host = format!("tcp://localhost:{port}");
    let config: DockerConfig = serde_json::from_value(serde_json::json!({
        "host": host,
        "tls_config": {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file},
    }))
    .unwrap();
    let d = DockerDiscoverer::new(config).unwrap();
    let set = d.subscribe().next().await.unwrap();
    assert_eq!(set.len(), 1, "failures: {}", d.metrics().failures());
    assert_eq!(set[0].labels().get("__address__"), Some("10.0.0.2:80"));
    assert!(served.load(Ordering::SeqCst) >= 3);

    // A client certificate the server's CA did not sign: the handshake fails, typed.
    let other = CertifiedIssuer::self_signed(
        CertificateParams::new(vec!["x".to_owned()]).unwrap(),
        KeyPair::generate().unwrap(),
    )
    .unwrap();
    let other_key = KeyPair::generate().unwrap();
    let stranger = CertificateParams::new(vec!["stranger".to_owned()])
        .unwrap()
        .signed_by(&other_key, &other)
        .unwrap();
    let config: DockerConfig = serde_json::from_value(serde_json::json!({
        "host": host,
        "tls_config": {"ca_file": ca_file, "cert_file": file("s.pem", stranger.pem()),
                       "key_file": file("s.key", other_key.serialize_pem())},
    }))
    .unwrap();
    let e = DockerDiscoverer::new(config)
        .unwrap()
        .refresh()
        .await
        .unwrap_err();
    assert_eq!(e.api_kind(), Some(ApiErrorKind::Unreachable), "{e}");
}
