//! The verifier's server as a hostile client (or an expiring certificate) meets it: client
//! certificates, certificate files rotated under a running kube-apiserver, a stalled request
//! header, and the connection cap.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{
    support::{
        DEADLINE, Operator, Tenant, VerifierProcess, VerifierSetup, cluster_env, eventually,
        unique_name, within,
    },
    verifier::webhook::whoami,
};

/// A scratch directory under target/test-logs.
fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-logs")
        .join(unique_name(prefix));
    std::fs::create_dir_all(&dir).expect("scratch dir is writable");
    dir
}

/// Runs the openssl CLI, failing the test if it fails.
async fn openssl(args: &[&str]) {
    let output = crate::support::within(
        crate::support::DEADLINE,
        tokio::process::Command::new("openssl")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("openssl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Issues a certificate with a fresh key from the CA `<ca>.crt`/`<ca>.key`, with the
/// openssl `extensions` (e.g. `extendedKeyUsage=clientAuth`); returns (cert, key) paths.
async fn issue_certificate(
    dir: &Path,
    name: &str,
    ca: &Path,
    extensions: &str,
) -> (PathBuf, PathBuf) {
    let (cert, key, csr, ext) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
        dir.join(format!("{name}.ext")),
    );
    std::fs::write(&ext, format!("{extensions}\n")).unwrap();
    let subject = format!("/CN={name}");
    let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    let (ca_cert, ca_key) = (
        path(&ca.with_extension("crt")),
        path(&ca.with_extension("key")),
    );
    let (cert_path, key_path) = (path(&cert), path(&key));
    let (csr, ext) = (path(&csr), path(&ext));
    openssl(&[
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key_path, "-out",
        &csr,
    ])
    .await;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_cert,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert_path,
    ])
    .await;
    (cert, key)
}

/// The cluster CA (`$ATO_CLUSTER_DIR/pki/ca`), which signs serving certificates and which the
/// verifier does not accept client certificates from.
fn cluster_ca() -> PathBuf {
    Path::new(&cluster_env("ATO_CLUSTER_DIR")).join("pki/ca")
}

fn first_certificate(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path)
        .expect("certificate file is readable")
        .next()
        .expect("a certificate")
        .expect("a PEM certificate")
        .as_ref()
        .to_vec()
}

/// The leaf certificate the verifier presents to a new connection (DER).
async fn served_certificate(verifier: &VerifierProcess) -> Option<Vec<u8>> {
    let client = VerifierProcess::http_builder()
        .identity(crate::support::test_client_identity())
        .tls_info(true)
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/healthz", verifier.url))
        .send()
        .await
        .ok()?;
    let info = response.extensions().get::<reqwest::tls::TlsInfo>()?;
    info.peer_certificate().map(<[u8]>::to_vec)
}

/// A value from the verifier's metrics (on its probe port).
async fn metric(verifier: &VerifierProcess, series: &str) -> Option<f64> {
    let text = verifier.metrics().await;
    (!text.is_empty()).then(|| crate::support::series_value(&text, series).unwrap_or(0.0))
}

#[tokio::test]
async fn a_rotated_certificate_is_served_and_kube_apiserver_keeps_authenticating() {
    let tenant = Tenant::new("cert-reload").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let dir = scratch_dir("cert-reload");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::copy(cluster_env("ATO_VERIFIER_CERT"), &cert).unwrap();
    std::fs::copy(cluster_env("ATO_VERIFIER_KEY"), &key).unwrap();
    let old = first_certificate(&cert);
    // A short idle timeout, so kube-apiserver's connection from before the rotation closes
    // and its next call needs a handshake with the new certificate.
    let verifier = VerifierProcess::start_with(
        &tenant.namespace,
        VerifierSetup {
            tls: Some((cert.clone(), key.clone())),
            args: vec!["--verifier-idle-timeout-seconds".into(), "1".into()],
            private_port: false,
        },
    )
    .await;
    let token = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    let username = json!(format!("accesstoken:{}:t", tenant.namespace));
    let authenticated = || async {
        whoami(token.expose_secret())
            .await
            .filter(|info| info["username"] == username)
    };
    eventually("kube-apiserver to authenticate the token", authenticated).await;
    assert_eq!(served_certificate(&verifier).await, Some(old.clone()));

    // Renew: a new key and certificate from the cluster CA, swapped in by rename as a
    // Secret volume update or cert-manager would.
    let (new_cert, new_key) = issue_certificate(
        &dir,
        "renewed",
        &cluster_ca(),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
    )
    .await;
    let new = first_certificate(&new_cert);
    assert_ne!(new, old);
    std::fs::rename(&new_key, &key).unwrap();
    std::fs::rename(&new_cert, &cert).unwrap();
    eventually("the renewed certificate to be served", || async {
        (served_certificate(&verifier).await? == new).then_some(())
    })
    .await;
    // Only our own /metrics connection left: kube-apiserver's next call is a new handshake.
    eventually("connections from before the rotation to close", || async {
        (metric(&verifier, "access_token_operator_verifier_connections").await? <= 1.0)
            .then_some(())
    })
    .await;
    // And it does call: kube-apiserver's 1 s answer cache does not stand in for the verifier.
    let accepted = r#"access_token_operator_tokenreviews_total{outcome="authenticated"}"#;
    let before = metric(&verifier, accepted).await.unwrap();
    eventually(
        "kube-apiserver to authenticate the token over the renewed certificate",
        || async {
            authenticated().await?;
            (metric(&verifier, accepted).await? > before).then_some(())
        },
    )
    .await;
    assert!(
        metric(
            &verifier,
            r#"access_token_operator_verifier_tls_reloads_total{result="Success"}"#
        )
        .await
        .unwrap()
            >= 1.0
    );

    // A broken file is refused and the current certificate kept.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    eventually("the broken file to be noticed", || async {
        (metric(
            &verifier,
            r#"access_token_operator_verifier_tls_reloads_total{result="Failure"}"#,
        )
        .await?
            >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(served_certificate(&verifier).await, Some(new));
    assert!(
        authenticated().await.is_some(),
        "kube-apiserver still authenticates"
    );
    assert!(
        verifier.logs().contains("keeping the current certificate"),
        "the refusal is logged"
    );
}

#[tokio::test]
async fn with_a_client_ca_only_kube_apiserver_and_holders_of_its_certificates_are_served() {
    let tenant = Tenant::new("client-ca").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let verifier = VerifierProcess::start(&tenant.namespace).await;
    let healthz = format!("{}/healthz", verifier.url);

    let anonymous = VerifierProcess::http_builder().build().unwrap();
    assert!(
        anonymous.get(&healthz).send().await.is_err(),
        "a client without a certificate is refused"
    );

    let dir = scratch_dir("client-ca");
    let (cert, key) = issue_certificate(
        &dir,
        "intruder",
        &cluster_ca(),
        "extendedKeyUsage=clientAuth",
    )
    .await;
    let mut pem = std::fs::read(cert).unwrap();
    pem.extend(std::fs::read(key).unwrap());
    let intruder = VerifierProcess::http_builder()
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    assert!(
        intruder.get(&healthz).send().await.is_err(),
        "a certificate from another CA (even the cluster's) is refused"
    );

    let response = verifier.http().get(&healthz).send().await.unwrap();
    assert_eq!(response.status(), 200, "the CA's own client is served");

    // kube-apiserver presents the client certificate from its webhook kubeconfig.
    let token = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    let info = eventually("kube-apiserver to authenticate the token", || {
        whoami(token.expose_secret())
    })
    .await;
    assert_eq!(
        info["username"],
        format!("accesstoken:{}:t", tenant.namespace)
    );
}

/// A TLS client that trusts the cluster CA, presents the test client certificate, and speaks
/// HTTP/1.1 only (where the header timeout applies).
fn raw_connector() -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(cluster_env("ATO_CLUSTER_CA")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(cluster_env("ATO_VERIFIER_TEST_CLIENT_CERT"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(cluster_env("ATO_VERIFIER_TEST_CLIENT_KEY")).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// Opens a TLS connection to the verifier; completes once the server has accepted it and
/// answered the handshake.
async fn connect(verifier: &VerifierProcess) -> std::io::Result<TlsStream<TcpStream>> {
    let address = verifier.url.trim_start_matches("https://").to_string();
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    raw_connector().connect(name, tcp).await
}

/// Sends a complete `GET /healthz` with `Connection: close` and returns the whole answer.
async fn get_healthz(stream: &mut TlsStream<TcpStream>) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = within(DEADLINE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_stalled_request_header_is_cut_off_by_the_header_timeout() {
    // An idle timeout far beyond the test's deadline: only the header timeout can close it.
    let verifier = VerifierProcess::start_with(
        "stalled-header",
        VerifierSetup {
            args: ["--verifier-header-timeout-seconds", "2"]
                .into_iter()
                .chain(["--verifier-idle-timeout-seconds", "3600"])
                .map(String::from)
                .collect(),
            private_port: true,
            ..Default::default()
        },
    )
    .await;
    let mut stalled = within(DEADLINE, connect(&verifier)).await.unwrap();
    stalled
        .write_all(b"POST /tokenreviews HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: applic")
        .await
        .unwrap();
    stalled.flush().await.unwrap();
    let mut answer = Vec::new();
    // EOF or a reset: either way the server closed it. The deadline is the 2 s header
    // timeout plus slack for a busy machine, shorter than the 10 s default: the flag counts.
    let _ = within(Duration::from_secs(8), stalled.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "the half request was not served"
    );

    // A client that sends its header in time is served.
    let mut prompt = within(DEADLINE, connect(&verifier)).await.unwrap();
    assert!(get_healthz(&mut prompt).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn beyond_the_connection_cap_a_client_waits_until_a_connection_closes() {
    // Timeouts beyond the test's deadline, so held connections stay open until dropped.
    let verifier = VerifierProcess::start_with(
        "connection-cap",
        VerifierSetup {
            args: [
                "--verifier-max-connections",
                "2",
                "--verifier-header-timeout-seconds",
                "3600",
                "--verifier-idle-timeout-seconds",
                "3600",
            ]
            .map(String::from)
            .to_vec(),
            private_port: true,
            ..Default::default()
        },
    )
    .await;
    // The readiness probe's connection may still be closing: these wait for a slot if so.
    let first = within(DEADLINE, connect(&verifier)).await.unwrap();
    let _second = within(DEADLINE, connect(&verifier)).await.unwrap();

    let third = tokio::spawn({
        let url = verifier.url.clone();
        async move {
            let address = url.trim_start_matches("https://").to_string();
            let tcp = TcpStream::connect(address).await?;
            let name = ServerName::try_from("127.0.0.1").unwrap();
            let mut stream = raw_connector().connect(name, tcp).await?;
            Ok::<_, std::io::Error>(get_healthz(&mut stream).await)
        }
    });
    tokio::pin!(third);
    // Not a wait for something to happen: a window in which it must not.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut third)
            .await
            .is_err(),
        "a third connection is not served while two are held"
    );

    drop(first);
    let answer = within(DEADLINE, third).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A verifier on a private port whose timeouts outlast the test (only the limit under test
/// closes anything), with `args` on top.
async fn patient_verifier(log_name: &str, args: &[&str]) -> VerifierProcess {
    let mut all = vec![
        "--verifier-handshake-timeout-seconds",
        "3600",
        "--verifier-header-timeout-seconds",
        "3600",
        "--verifier-idle-timeout-seconds",
        "3600",
    ];
    all.extend_from_slice(args);
    VerifierProcess::start_with(
        log_name,
        VerifierSetup {
            args: all.into_iter().map(String::from).collect(),
            private_port: true,
            ..Default::default()
        },
    )
    .await
}

/// A TCP connection to the verifier from loopback address `source` (all of 127/8 is local,
/// so each test client can be an address of its own).
async fn tcp_from(verifier: &VerifierProcess, source: [u8; 4]) -> TcpStream {
    let address: std::net::SocketAddr =
        verifier.url.trim_start_matches("https://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    within(DEADLINE, socket.connect(address)).await.unwrap()
}

/// Whether the server ended `tcp` without serving it (read: end of stream or a reset). A
/// connection it holds sends nothing and is never ended here, so `within` fails the test.
async fn refused(mut tcp: TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(within(DEADLINE, tcp.read(&mut byte)).await, Ok(0) | Err(_))
}

/// A TLS connection with the test's client certificate from loopback `source`; `None` if
/// the server ends it before the handshake completes.
async fn tls_from(verifier: &VerifierProcess, source: [u8; 4]) -> Option<TlsStream<TcpStream>> {
    let tcp = tcp_from(verifier, source).await;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    within(DEADLINE, raw_connector().connect(name, tcp))
        .await
        .ok()
}

/// `GET /healthz` over [`tls_from`]; `None` if the connection was refused.
async fn healthz_from(verifier: &VerifierProcess, source: [u8; 4]) -> Option<String> {
    let mut stream = tls_from(verifier, source).await?;
    Some(within(DEADLINE, get_healthz(&mut stream)).await)
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_the_connections() {
    let verifier = patient_verifier(
        "connection-share",
        &["--verifier-max-connections-per-peer", "2"],
    )
    .await;
    let hog = [127, 0, 0, 3];
    // Two held (they never even start TLS), the third from the same address ended at once.
    let first = tcp_from(&verifier, hog).await;
    let _second = tcp_from(&verifier, hog).await;
    assert!(
        refused(tcp_from(&verifier, hog).await).await,
        "a third is refused"
    );
    // Another address is served meanwhile.
    let answer = healthz_from(&verifier, [127, 0, 0, 4])
        .await
        .expect("served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Once one of the two closes, the address may connect again.
    drop(first);
    let answer = eventually("the address's slot to be given back", || async {
        let answer = healthz_from(&verifier, hog).await?;
        answer.starts_with("HTTP/1.1 200").then_some(answer)
    })
    .await;
    assert!(answer.contains("ok"), "{answer}");
}

#[tokio::test]
async fn connections_are_kept_for_clients_that_authenticated_before() {
    // 4 slots, 2 kept: clients that never presented a certificate share the other 2.
    let verifier = patient_verifier(
        "connection-reserve",
        &[
            "--verifier-max-connections",
            "4",
            "--verifier-reserved-connections",
            "2",
        ],
    )
    .await;
    // The launcher's readiness probe authenticated from 127.0.0.1 (its client certificate).
    let strangers = ([127, 0, 0, 5], [127, 0, 0, 6]);
    let _held = (
        tcp_from(&verifier, strangers.0).await,
        tcp_from(&verifier, strangers.1).await,
    );
    assert!(
        refused(tcp_from(&verifier, strangers.0).await).await,
        "the unauthenticated share is taken"
    );
    assert!(
        refused(tcp_from(&verifier, [127, 0, 0, 7]).await).await,
        "by any address that never authenticated"
    );
    let answer = healthz_from(&verifier, [127, 0, 0, 1])
        .await
        .expect("served");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "an authenticated client is served: {answer}"
    );
}

#[tokio::test]
async fn a_connection_is_closed_at_its_maximum_age_however_it_is_used() {
    let verifier = patient_verifier(
        "connection-age",
        &["--verifier-max-connection-age-seconds", "2"],
    )
    .await;
    let mut stream = tls_from(&verifier, [127, 0, 0, 1]).await.expect("served");
    // A keep-alive request: only the maximum age can end this connection (every timeout is
    // an hour); the answer comes, then the end of the stream.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = within(DEADLINE, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_http2_client_that_only_pings_is_idle_and_closed() {
    let verifier = VerifierProcess::start_with(
        "connection-pings",
        VerifierSetup {
            args: ["--verifier-idle-timeout-seconds", "3"]
                .map(String::from)
                .to_vec(),
            private_port: true,
            ..Default::default()
        },
    )
    .await;
    // HTTP/2, pinging every second while idle, and never closing on its own.
    let client = VerifierProcess::http_builder()
        .identity(crate::support::test_client_identity())
        .http2_prior_knowledge()
        .http2_keep_alive_interval(Duration::from_secs(1))
        .http2_keep_alive_while_idle(true)
        .pool_idle_timeout(None)
        .build()
        .unwrap();
    let answer = client
        .get(format!("{}/healthz", verifier.url))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    let open = "access_token_operator_verifier_connections";
    eventually("the pinging connection to be closed as idle", || async {
        let text = verifier.metrics().await;
        (crate::support::series_value(&text, open) == Some(0.0)).then_some(())
    })
    .await;
}
