//! Names, files and handshakes: what is accepted and what is refused, and why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::issue::{write_private, Authority, Issued, Usage, Validity};
use crate::*;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lockstep-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    issue::create_private_dir(&dir).expect("a temporary directory");
    dir
}

fn save(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    write_private(&cert, &issued.cert_pem).expect("written");
    write_private(&key, &issued.key_pem).expect("written");
    (cert, key)
}

fn save_ca(dir: &Path, name: &str, authority: &Authority) -> PathBuf {
    let path = dir.join(format!("{name}.pem"));
    write_private(&path, authority.cert_pem()).expect("written");
    path
}

fn year() -> Validity {
    Validity::days(365)
}

#[test]
fn a_replica_certificate_names_its_replica_and_no_other() {
    let authority = Authority::new("test", year()).expect("an authority");
    let issued = authority.replica(0xabc, 2, &[], year()).expect("a certificate");
    let der =
        rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("PEM");
    assert!(certifies_replica(&der, 0xabc, 2));
    assert!(!certifies_replica(&der, 0xabc, 3), "another replica");
    assert!(!certifies_replica(&der, 0xabd, 2), "another cluster");
    let client = authority.client("c", year()).expect("a certificate");
    let der =
        rustls::pki_types::CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).expect("PEM");
    assert!(!certifies_replica(&der, 0xabc, 2), "a client certificate names no replica");
    let pem = |issued: Issued| {
        rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("PEM")
    };
    let wildcard = authority
        .custom(
            vec!["*.cluster-abc.lockstep".into()],
            vec![Usage::ServerAuth, Usage::ClientAuth],
            year(),
        )
        .expect("issued");
    assert!(!certifies_replica(&pem(wildcard), 0xabc, 2), "a wildcard names no replica");
    let client_only = authority
        .custom(vec![replica_name(0xabc, 2)], vec![Usage::ClientAuth], year())
        .expect("issued");
    assert!(!certifies_replica(&pem(client_only), 0xabc, 2), "a client-only certificate");
}

use rustls::pki_types::pem::PemObject;

#[test]
fn a_key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp("exposed");
    let authority = Authority::new("test", year()).expect("an authority");
    let (cert, key) = save(&dir, "r", &authority.replica(1, 1, &[], year()).expect("issued"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let tls = ServerTls { cert_file: cert, key_file: key, client_ca_file: None, alpn: vec![] };
    let error = tls.build().expect_err("refused").to_string();
    assert!(error.contains("readable by other users") && error.contains("chmod 600"), "{error}");
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let dir = temp("mismatch");
    let authority = Authority::new("test", year()).expect("an authority");
    let (cert, _) = save(&dir, "a", &authority.replica(1, 1, &[], year()).expect("issued"));
    let (_, key) = save(&dir, "b", &authority.replica(1, 1, &[], year()).expect("issued"));
    let tls = ServerTls { cert_file: cert, key_file: key, client_ca_file: None, alpn: vec![] };
    let error = tls.build().expect_err("refused").to_string();
    assert!(error.contains("a.pem with") && error.to_lowercase().contains("key"), "{error}");
}

#[test]
fn missing_and_empty_files_say_which() {
    let dir = temp("missing");
    let tls = ServerTls {
        cert_file: dir.join("nowhere.pem"),
        key_file: dir.join("nowhere-key.pem"),
        client_ca_file: None,
        alpn: vec![],
    };
    let error = tls.build().expect_err("refused").to_string();
    assert!(error.contains("nowhere.pem"), "{error}");
    write_private(&dir.join("empty.pem"), "not PEM at all\n").expect("written");
    let error = load_certificates(&dir.join("empty.pem")).expect_err("refused").to_string();
    assert!(error.contains("holds no CERTIFICATE"), "{error}");
}

/// Serves one TLS connection with `server`, echoing one line; the client's outcome.
async fn handshake(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
    name: &str,
) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
    let address = listener.local_addr().expect("an address");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let serving = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut stream = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        stream.write_all(&byte).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(address).await.expect("connected");
    let name = server_name(name)?;
    let outcome = async {
        let mut stream = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        stream.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    }
    .await;
    let served = serving.await.expect("the server task");
    outcome.and(served)
}

#[tokio::test]
async fn mutual_tls_accepts_the_right_certificates_and_refuses_the_rest() {
    let dir = temp("handshakes");
    let authority = Authority::new("ours", year()).expect("an authority");
    let ca = save_ca(&dir, "ca", &authority);
    let other = Authority::new("theirs", year()).expect("an authority");
    let (server_cert, server_key) =
        save(&dir, "server", &authority.replica(7, 1, &[], year()).expect("issued"));
    let server = ServerTls {
        cert_file: server_cert,
        key_file: server_key,
        client_ca_file: Some(ca.clone()),
        alpn: vec![],
    }
    .build()
    .expect("a server configuration");
    let client_with = |identity: Option<(PathBuf, PathBuf)>| {
        ClientTls { ca_file: ca.clone(), identity, alpn: vec![] }.build().expect("a client")
    };

    let good = save(&dir, "client", &authority.client("c", year()).expect("issued"));
    handshake(server.clone(), client_with(Some(good)), "127.0.0.1").await.expect("accepted");

    let none = handshake(server.clone(), client_with(None), "127.0.0.1").await;
    assert!(none.is_err(), "a client without a certificate");

    let foreign = save(&dir, "foreign", &other.client("c", year()).expect("issued"));
    let refused = handshake(server.clone(), client_with(Some(foreign)), "127.0.0.1").await;
    assert!(refused.is_err(), "a client certificate from another authority");

    let server_only =
        authority.custom(vec!["client".into()], vec![Usage::ServerAuth], year()).expect("issued");
    let server_only = save(&dir, "server-only", &server_only);
    let refused = handshake(server.clone(), client_with(Some(server_only)), "127.0.0.1").await;
    assert!(refused.is_err(), "a certificate without the client usage");

    let now = time::OffsetDateTime::now_utc();
    let past = Validity {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    };
    let expired = save(&dir, "expired", &authority.client("c", past).expect("issued"));
    let refused = handshake(server.clone(), client_with(Some(expired)), "127.0.0.1").await;
    assert!(refused.is_err(), "an expired certificate");

    let future = Validity {
        not_before: now + time::Duration::days(1),
        not_after: now + time::Duration::days(30),
    };
    let early = save(&dir, "early", &authority.client("c", future).expect("issued"));
    let refused = handshake(server.clone(), client_with(Some(early)), "127.0.0.1").await;
    assert!(refused.is_err(), "a certificate not yet valid");

    // The server's name: its certificate names loopback and replica 1 of cluster 7, nothing else.
    let good = save(&dir, "client2", &authority.client("c", year()).expect("issued"));
    let wrong =
        handshake(server.clone(), client_with(Some(good.clone())), &replica_name(7, 2)).await;
    assert!(wrong.is_err(), "a server that is not the replica asked for");
    handshake(server, client_with(Some(good)), &replica_name(7, 1))
        .await
        .expect("the replica asked for");
}

#[test]
fn a_reloading_configuration_follows_its_files() {
    let dir = temp("reload");
    let authority = Authority::new("test", year()).expect("an authority");
    let (cert, key) = save(&dir, "r", &authority.replica(1, 1, &[], year()).expect("issued"));
    let tls = ServerTls {
        cert_file: cert.clone(),
        key_file: key.clone(),
        client_ca_file: None,
        alpn: vec![],
    };
    let reloading = tls.reloading().expect("built");
    let first = reloading.current();
    assert!(!reloading.reload_if_changed().expect("unchanged"));
    assert!(Arc::ptr_eq(&first, &reloading.current()));

    // A half-written rotation (a new certificate, the old key) keeps the old configuration.
    let next = authority.replica(1, 1, &[], year()).expect("issued");
    write_private(&cert, &next.cert_pem).expect("written");
    assert!(reloading.reload_if_changed().is_err());
    assert!(Arc::ptr_eq(&first, &reloading.current()), "the old configuration stays");
    write_private(&key, &next.key_pem).expect("written");
    assert!(reloading.reload_if_changed().expect("rebuilt"));
    assert!(!Arc::ptr_eq(&first, &reloading.current()));
}

#[test]
fn a_cluster_directory_is_private_and_reuses_its_authority() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp("cluster").join("tls");
    let files =
        issue::write_cluster(&dir, 0x5, &[1, 2, 3], &["db.example".into()], 30).expect("written");
    let mode = |path: &Path| std::fs::metadata(path).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for path in
        [files.ca(), files.ca_key(), files.replica(2), files.replica_key(2), files.client_key()]
    {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    let ca = std::fs::read(files.ca()).expect("read");
    issue::write_cluster(&dir, 0x5, &[4], &[], 30).expect("written");
    assert_eq!(ca, std::fs::read(files.ca()).expect("read"), "the authority is kept");
    let der = load_certificates(&files.replica(4)).expect("loaded").remove(0);
    assert!(certifies_replica(&der, 0x5, 4));
}

#[test]
fn server_names_come_from_endpoints() {
    assert!(matches!(
        server_name("127.0.0.1:2379"),
        Ok(rustls::pki_types::ServerName::IpAddress(_))
    ));
    assert!(matches!(server_name("[::1]:2379"), Ok(rustls::pki_types::ServerName::IpAddress(_))));
    assert!(matches!(
        server_name("db.example:2379"),
        Ok(rustls::pki_types::ServerName::DnsName(_))
    ));
    assert!(server_name("bad host:1").is_err());
}

#[test]
fn a_tls_client_hello_is_recognised() {
    assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]));
    assert!(!looks_like_tls(b"PRI * HTTP/2.0"));
    assert!(!looks_like_tls(&[0x16]));
}
