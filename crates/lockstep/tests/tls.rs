//! TLS on every port, on real processes: a cluster with TLS everywhere takes writes through
//! the native client and etcd's API (etcdctl), and a fourth process that does not hold the
//! certificate of the replica it claims to be cannot move the cluster's term or leader, whatever
//! it sends to the peer ports.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Cluster;
use lockstep_core::message::VoteRequest;
use lockstep_core::{LogIndex, Message, MessageBody, NodeId, Term};
use lockstep_kv::Request;
use lockstep_tls::issue::{write_private, Authority, Validity};
use lockstep_tls::rustls::pki_types::ServerName;
use lockstep_tls::{replica_name, ClientTls};
use lockstep_wire::{Kind, PeerHello, PeerStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The frames of a forged peer connection: a hello claiming to be `from`, then a vote request
/// with a huge term that asks to skip pre-vote (as a leadership transfer does), then a
/// `TimeoutNow` "from the leader", which would make the recipient campaign at once.
fn forged_frames(cluster_id: u64, from: u64, to: u64) -> Vec<u8> {
    let hello = PeerHello { cluster_id, from, to, stream: PeerStream::Consensus };
    let mut bytes = lockstep_wire::encode(Kind::Hello, &hello).expect("encoded").to_vec();
    let vote = Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1000),
        body: MessageBody::Vote(VoteRequest {
            last_log_index: LogIndex(1 << 40),
            last_log_term: Term(999),
            leadership_transfer: true,
        }),
    };
    let timeout_now = Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1000),
        body: MessageBody::TimeoutNow,
    };
    for message in [vote, timeout_now] {
        bytes.extend_from_slice(&lockstep_wire::encode(Kind::Peer, &message).expect("encoded"));
    }
    bytes
}

/// Sends `frames` over `stream` and waits for the other end to close it; whether it did.
async fn send_and_wait<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    frames: &[u8],
) -> bool {
    let _ = stream.write_all(frames).await;
    let _ = stream.flush().await;
    let mut buffer = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A TLS connection to `port` asking for replica `to`'s certificate, presenting `identity`.
async fn tls_to(
    port: u16,
    ca: &Path,
    identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    cluster_id: u64,
    to: u64,
) -> Result<lockstep_tls::tokio_rustls::client::TlsStream<TcpStream>, String> {
    let config = ClientTls { ca_file: ca.to_path_buf(), identity, alpn: Vec::new() }
        .build()
        .map_err(|error| error.to_string())?;
    let connector = lockstep_tls::tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|error| error.to_string())?;
    let name = ServerName::try_from(replica_name(cluster_id, to)).map_err(|e| e.to_string())?;
    connector.connect(name, tcp).await.map_err(|error| error.to_string())
}

#[test]
fn a_tls_cluster_serves_clients_and_refuses_peers_that_are_not_who_they_claim() {
    let mut cluster = Cluster::new("tls", 3);
    cluster.with_tls();
    cluster.start_all();
    let files = cluster.tls.clone().expect("certificates");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let client = cluster.client();
        for n in 0..20 {
            client
                .write(Request::put(format!("k{n}"), Bytes::from(format!("v{n}"))))
                .await
                .expect("a write over TLS");
        }

        // etcd's own client, with the certificates `lockstep up --tls` prints.
        let etcdctl = |args: &[&str]| {
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg("--endpoints")
                .arg(cluster.etcd_endpoints())
                .arg("--cacert")
                .arg(files.ca())
                .arg("--cert")
                .arg(files.client())
                .arg("--key")
                .arg(files.client_key())
                .arg("--command-timeout=10s")
                .args(args)
                .output()
                .unwrap_or_else(|error| {
                    panic!("etcdctl cannot run ({error}): `bash scripts/test.sh` installs it")
                })
        };
        let put = etcdctl(&["put", "from-etcdctl", "yes"]);
        assert!(put.status.success(), "etcdctl put over TLS: {put:?}");
        let get = etcdctl(&["get", "k7", "--print-value-only"]);
        assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "v7", "{get:?}");

        let before = cluster.status(leader).await.expect("the leader answers");
        let target = cluster.replicas.keys().copied().find(|&id| id != leader).expect("a follower");
        let impostor = cluster.replicas.keys().copied().find(|&id| id != leader && id != target);
        let impostor = impostor.expect("a third replica");
        let port = cluster.replicas[&target].peer;
        let frames = forged_frames(cluster.cluster_id, leader, target);
        let dir = cluster.dir.0.join("forgers");
        lockstep_tls::issue::create_private_dir(&dir).expect("a directory");

        // 1. Plaintext to a TLS peer port.
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connects");
        assert!(send_and_wait(tcp, &frames).await, "plaintext is refused");

        // 2. TLS without a certificate.
        if let Ok(stream) = tls_to(port, &files.ca(), None, cluster.cluster_id, target).await {
            assert!(send_and_wait(stream, &frames).await, "no certificate is refused");
        }

        // 3. A certificate naming the leader, from another authority.
        let other = Authority::new("not the cluster's", Validity::days(30)).expect("authority");
        let forged =
            other.replica(cluster.cluster_id, leader, &[], Validity::days(30)).expect("issued");
        let (cert, key) = (dir.join("other.pem"), dir.join("other-key.pem"));
        write_private(&cert, &forged.cert_pem).expect("written");
        write_private(&key, &forged.key_pem).expect("written");
        if let Ok(stream) =
            tls_to(port, &files.ca(), Some((cert, key)), cluster.cluster_id, target).await
        {
            assert!(send_and_wait(stream, &frames).await, "another authority is refused");
        }

        // 4. The cluster's own certificate for another replica, claiming to be the leader.
        let stream = tls_to(
            port,
            &files.ca(),
            Some((files.replica(impostor), files.replica_key(impostor))),
            cluster.cluster_id,
            target,
        )
        .await
        .expect("a valid certificate completes the handshake");
        assert!(send_and_wait(stream, &frames).await, "another replica's certificate is refused");

        // 5. A client certificate of the cluster, claiming to be the leader.
        if let Ok(stream) = tls_to(
            port,
            &files.ca(),
            Some((files.client(), files.client_key())),
            cluster.cluster_id,
            target,
        )
        .await
        {
            assert!(send_and_wait(stream, &frames).await, "a client certificate is refused");
        }

        // Nothing moved: the same leader in the same term, everywhere.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for &id in cluster.replicas.keys() {
            let status = cluster.status(id).await.expect("every replica answers");
            assert_eq!(status.term, before.term, "replica {id}'s term moved");
            assert_eq!(status.leader, Some(leader), "replica {id} follows another leader");
        }
        let log = cluster.log(target);
        assert!(log.contains("plaintext on a TLS port"), "the refusal is logged: {log}");
        assert!(log.contains("does not name it"), "the impostor is named in the log: {log}");

        // And the cluster still serves, with every write there.
        client.write(Request::put("after", "forgeries")).await.expect("a write after");
        for n in 0..20 {
            let key = format!("k{n}");
            match client.read(Request::get(key.clone())).await.expect("a read") {
                lockstep_kv::Answer { response: lockstep_kv::Response::Range(range), .. } => {
                    assert_eq!(range.kvs.len(), 1, "{key} is there");
                }
                other => panic!("reading {key}: {other:?}"),
            }
        }
    });
}

/// Rotation on a running cluster: a bundle with the old and the new authority, new leaf
/// certificates from the new one, then the old authority removed; the servers re-read their
/// files by themselves, a replica restarted afterwards joins its peers with the new
/// certificates, and writes go on throughout with none lost.
#[test]
fn certificates_rotate_on_a_running_cluster_without_losing_a_write() {
    let mut cluster = Cluster::new("tls-rotation", 3);
    cluster.with_tls();
    cluster.start_all();
    let files = cluster.tls.clone().expect("certificates");
    let client_tls = cluster.client_tls().expect("the client's TLS");
    let options = lockstep_client::ClientOptions {
        timeout: Duration::from_secs(60),
        tls: Some(client_tls.clone()),
        ..lockstep_client::ClientOptions::default()
    };
    let client: lockstep_client::Client<Request, Request, lockstep_kv::Answer> =
        lockstep_client::Client::new(cluster.endpoints(), options);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut written = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    client
                        .write(Request::put(format!("w{written}"), "v"))
                        .await
                        .unwrap_or_else(|error| panic!("write {written} failed: {error:?}"));
                    written += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                written
            })
        };
        let settle = || tokio::time::sleep(Duration::from_secs(3));
        let old_ca = std::fs::read_to_string(files.ca()).expect("the old authority");
        let new = Authority::new("the new authority", Validity::days(30)).expect("authority");

        // 1. Trust both.
        write_private(&files.ca(), &format!("{old_ca}{}", new.cert_pem())).expect("bundle");
        client_tls.reload_if_changed().expect("the client trusts both");
        settle().await;
        // 2. New leaf certificates from the new authority (key first: the servers keep the
        // old pair until both files agree).
        for &id in cluster.replicas.keys() {
            let issued =
                new.replica(cluster.cluster_id, id, &[], Validity::days(30)).expect("issued");
            write_private(&files.replica_key(id), &issued.key_pem).expect("written");
            write_private(&files.replica(id), &issued.cert_pem).expect("written");
        }
        let issued = new.client("client", Validity::days(30)).expect("issued");
        write_private(&files.client_key(), &issued.key_pem).expect("written");
        write_private(&files.client(), &issued.cert_pem).expect("written");
        client_tls.reload_if_changed().expect("the client's new certificate");
        settle().await;
        // 3. The old authority removed.
        write_private(&files.ca(), new.cert_pem()).expect("written");
        client_tls.reload_if_changed().expect("the client trusts the new authority alone");
        settle().await;

        // A connection made now gets the new certificates: one trusting the new authority
        // alone is served, one trusting the old alone is not.
        let new_only = cluster.dir.0.join("new-ca.pem");
        write_private(&new_only, new.cert_pem()).expect("written");
        let old_only = cluster.dir.0.join("old-ca.pem");
        write_private(&old_only, &old_ca).expect("written");
        let port = cluster.replicas[&leader].client;
        for (ca, served) in [(&new_only, true), (&old_only, false)] {
            let config = ClientTls {
                ca_file: ca.clone(),
                identity: Some((files.client(), files.client_key())),
                alpn: Vec::new(),
            }
            .build()
            .expect("a client configuration");
            let connector = lockstep_tls::tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connects");
            let name = ServerName::try_from("127.0.0.1").expect("a name");
            assert_eq!(connector.connect(name, tcp).await.is_ok(), served, "{}", ca.display());
        }

        // The leader restarted: it must reach its peers, and they it, with the new
        // certificates alone; the client reconnects to whoever leads.
        cluster.kill(leader);
        settle().await;
        cluster.start(leader);
        settle().await;
        stop.store(true, std::sync::atomic::Ordering::Release);
        let written = writer.await.expect("the writer");
        assert!(written > 100, "writes went on during the rotation ({written})");
        let status = cluster.status(leader).await.expect("the restarted replica answers");
        assert!(status.applied > written, "the restarted replica caught up: {status:?}");
        for n in 0..written {
            let key = format!("w{n}");
            match client.read(Request::get(key.clone())).await.expect("a read") {
                lockstep_kv::Answer { response: lockstep_kv::Response::Range(range), .. } => {
                    assert_eq!(range.kvs.len(), 1, "{key} was acknowledged and is there");
                }
                other => panic!("reading {key}: {other:?}"),
            }
        }
        let log =
            cluster.log(cluster.replicas.keys().copied().find(|&id| id != leader).expect("one"));
        assert!(log.contains("new certificates"), "the reload is logged: {log}");
    });
}

/// What `lockstep serve` and the client commands refuse at start, each with a clear error and
/// a non-zero exit: plaintext off loopback, a key others may read, a peer certificate for
/// another replica, a key that is not the certificate's.
#[test]
fn bad_tls_configurations_are_refused_at_start_with_a_clear_error() {
    let mut cluster = Cluster::new("tls-refusals", 3);
    cluster.with_tls();
    let files = cluster.tls.clone().expect("certificates");
    let data = cluster.dir.0.join("refused");
    let ports = common::free_ports(2);
    let member = format!("1=127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let serve = |extra: &[String]| {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--id".into(),
            "1".into(),
            "--cluster-id".into(),
            cluster.cluster_id.to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--member".into(),
            member.clone(),
        ];
        args.extend(extra.iter().cloned());
        let output = common::lockstep().args(&args).output().expect("lockstep runs");
        assert!(!output.status.success(), "{args:?} started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let path = |p: std::path::PathBuf| p.display().to_string();
    let tls = |cert: String, key: String| -> Vec<String> {
        vec![
            "--cert-file".into(),
            cert.clone(),
            "--key-file".into(),
            key.clone(),
            "--trusted-ca-file".into(),
            path(files.ca()),
            "--peer-cert-file".into(),
            cert,
            "--peer-key-file".into(),
            key,
            "--peer-trusted-ca-file".into(),
            path(files.ca()),
        ]
    };

    let error = serve(&["--listen-client".into(), "0.0.0.0:0".into()]);
    assert!(
        error.contains("not a loopback address") && error.contains("--insecure-plaintext"),
        "{error}"
    );

    let error = serve(&tls(path(files.replica(2)), path(files.replica_key(2))));
    assert!(error.contains("does not name replica 1"), "{error}");

    let error = serve(&tls(path(files.replica(1)), path(files.replica_key(2))));
    assert!(error.contains("replica-1.pem with") && error.contains("TLS"), "{error}");

    use std::os::unix::fs::PermissionsExt;
    let exposed = cluster.dir.0.join("exposed-key.pem");
    std::fs::copy(files.replica_key(1), &exposed).expect("copied");
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let error = serve(&tls(path(files.replica(1)), path(exposed.clone())));
    assert!(error.contains("readable by other users") && error.contains("chmod 600"), "{error}");
    assert!(!data.join("identity").exists(), "nothing was written for a refused start");

    let output = common::lockstep()
        .args(["get", "k", "--cacert"])
        .arg(files.ca())
        .arg("--cert")
        .arg(files.client())
        .arg("--key")
        .arg(&exposed)
        .output()
        .expect("lockstep runs");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && error.contains("readable by other users"), "{error}");
}
