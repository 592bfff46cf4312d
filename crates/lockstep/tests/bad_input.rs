//! Bad input gets a clear error and changes nothing: unknown flags, bad configurations, a
//! port in use, a data directory of another cluster, garbage on the client and peer ports.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Output;
use std::time::Duration;

use common::{lockstep, Cluster, TempDir};
use lockstep_kv::{Request, Response};

fn run(args: &[&str]) -> Output {
    lockstep().args(args).env("RUST_LOG", "error").output().expect("run lockstep")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unknown_flags_and_commands_are_refused() {
    let output = run(&["put", "k", "v", "--bogus"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("unexpected argument '--bogus'"), "{}", stderr(&output));

    let output = run(&["fly"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unrecognized subcommand"), "{}", stderr(&output));

    let output = run(&["serve", "--id", "1"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--cluster-id is required"), "{}", stderr(&output));

    let output = run(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["up", "serve", "put", "get", "del", "scan", "txn", "status"] {
        assert!(help.contains(command), "--help mentions {command}: {help}");
    }
}

#[test]
fn bad_configurations_name_the_problem_and_write_nothing() {
    let dir = TempDir::new("bad-config");
    let data = dir.0.join("data");
    let config = dir.0.join("replica.toml");
    let good = format!(
        "id = 1\ncluster_id = 9\ndata_dir = \"{}\"\n\n[[members]]\nid = 1\npeer = \"127.0.0.1:1\"\nclient = \"127.0.0.1:2\"\n",
        data.display()
    );

    std::fs::write(&config, good.replace("cluster_id = 9\n", "")).expect("write");
    let output = run(&["serve", "--config", config.to_str().expect("utf-8")]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("missing field `cluster_id`"), "{}", stderr(&output));

    std::fs::write(&config, good.replace("127.0.0.1:2", "127.0.0.1:http-ish")).expect("write");
    let output = run(&["serve", "--config", config.to_str().expect("utf-8")]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("client address"), "{}", stderr(&output));

    std::fs::write(&config, format!("{good}\nspeed = 11\n")).expect("write");
    let output = run(&["serve", "--config", config.to_str().expect("utf-8")]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("speed"), "{}", stderr(&output));

    let output = run(&[
        "serve",
        "--id",
        "1",
        "--cluster-id",
        "9",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--member",
        "1=127.0.0.1:1",
    ]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("ID=PEER_ADDRESS,CLIENT_ADDRESS"), "{}", stderr(&output));

    let output = run(&["serve", "--config", dir.0.join("absent.toml").to_str().expect("utf-8")]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("cannot read"), "{}", stderr(&output));

    assert!(!data.exists(), "a refused configuration created the data directory");
}

#[test]
fn a_port_in_use_is_reported_and_nothing_is_written() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let dir = TempDir::new("port-in-use");
    let data = dir.0.join("data");
    let peer = common::free_ports(1)[0];
    let member = format!("1=127.0.0.1:{peer},127.0.0.1:{port}");
    let output = run(&[
        "serve",
        "--id",
        "1",
        "--cluster-id",
        "9",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--member",
        &member,
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&format!(
            "cannot listen for clients on 127.0.0.1:{port}: the address is in use"
        )),
        "{}",
        stderr(&output)
    );
    assert!(!data.exists(), "the data directory was created although the server could not start");
}

#[test]
fn a_data_directory_of_another_cluster_is_refused() {
    let mut cluster = Cluster::new("other-cluster", 1);
    cluster.start(1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(cluster.leader(Duration::from_secs(20)));
    cluster.kill(1);
    let identity_before = std::fs::read(cluster.data_dir(1).join("identity")).expect("identity");

    cluster.cluster_id = 777;
    let output = lockstep().args(cluster.serve_args(1)).output().expect("run");
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("belongs to cluster 4242, not cluster 777"),
        "{}",
        stderr(&output)
    );
    let identity_after = std::fs::read(cluster.data_dir(1).join("identity")).expect("identity");
    assert_eq!(identity_before, identity_after);
}

/// Sends `bytes` to `port` and returns what comes back before the server closes.
fn send_garbage(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn garbage_on_the_client_and_peer_ports_closes_that_connection_only() {
    let mut cluster = Cluster::new("garbage", 1);
    cluster.start(1);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(cluster.leader(Duration::from_secs(20)));
    let client = cluster.client();
    let before = runtime.block_on(client.write(Request::put("k", "before"))).expect("write");
    assert!(matches!(before.response, Response::Put(_)));

    let client_port = cluster.replicas[&1].client;
    let peer_port = cluster.replicas[&1].peer;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut garbage = vec![0u8; 4096];
    for byte in &mut garbage {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *byte = seed as u8;
    }
    // Random bytes, a frame header claiming 4 GiB, a good frame header with a bad checksum.
    let huge = [0xff, 0xff, 0xff, 0xff, 1, 4, 0, 0, 0, 0];
    let mut bad_crc = lockstep_wire::encode(
        lockstep_wire::Kind::Client,
        &lockstep_wire::ClientMessage::<Request, Request>::Status { id: 7, digest: false },
    )
    .expect("encode")
    .to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x55;
    for bytes in [&garbage[..], &huge[..], &bad_crc[..]] {
        let answer = send_garbage(client_port, bytes);
        assert!(!answer.is_empty(), "the client port says why it closes the connection");
        let mut decoder = lockstep_wire::Decoder::new(1 << 20);
        decoder.extend(&answer);
        let (_, body) = decoder.next_frame().expect("a frame").expect("a whole frame");
        let message: lockstep_wire::ServerMessage<lockstep_kv::Answer> =
            lockstep_wire::decode(&body).expect("an answer");
        assert!(
            matches!(
                message,
                lockstep_wire::ServerMessage::Refused {
                    id: 0,
                    error: lockstep_wire::ClientError::Malformed(_)
                }
            ),
            "{message:?}"
        );
        let answer = send_garbage(peer_port, bytes);
        assert!(answer.is_empty(), "the peer port closes without a word");
    }
    // A hello from another cluster is refused.
    let hello = lockstep_wire::encode(
        lockstep_wire::Kind::Hello,
        &lockstep_wire::PeerHello {
            cluster_id: 1,
            from: 2,
            to: 1,
            stream: lockstep_wire::PeerStream::Consensus,
        },
    )
    .expect("encode");
    assert!(send_garbage(peer_port, &hello).is_empty());

    // The server is still up and still holds what it held.
    let answer = runtime.block_on(client.read(Request::get("k"))).expect("read");
    let Response::Range(range) = answer.response else { panic!("{answer:?}") };
    assert_eq!(range.kvs[0].value, "before");
    runtime.block_on(client.write(Request::put("k", "after"))).expect("write after garbage");
    let log = cluster.log(1);
    assert!(log.contains("closed a client connection"), "{log}");
    assert!(log.contains("closed a peer connection"), "{log}");
    assert!(log.contains("belongs to cluster 1, this is cluster 4242"), "{log}");
}
