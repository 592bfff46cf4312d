//! Real `lockstep serve` processes on loopback, for the integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockstep_client::{Client, ClientOptions, ReadConsistency, ReplicaStatus};
use lockstep_kv::{Answer, Request, Response};

/// The lockstep binary under test.
pub fn lockstep() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lockstep"))
}

/// A fresh directory under the target directory's tmp, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{name}-{}-{}",
            std::process::id(),
            unique()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!("kept {} for inspection", self.0.display());
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Ports free right now on loopback, outside the kernel's ephemeral range: a replica that is
/// killed and restarted must find its port again, and an outgoing connection could take a
/// freed ephemeral port in between.
pub fn free_ports(count: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next().and_then(|low| low.parse::<u64>().ok()))
        .unwrap_or(32_768)
        .clamp(12_000, 65_535);
    // Spread processes apart by their pid; within a process, never hand out a port twice.
    let span = low - 10_000;
    let start = u64::from(std::process::id()) * 97 % span;
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(offset < span, "no free ports left below the ephemeral range");
        let port = (10_000 + (start + offset) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

pub struct Replica {
    pub id: u64,
    pub peer: u16,
    pub client: u16,
    /// Where it serves etcd's API.
    pub etcd: u16,
    pub child: Option<Child>,
    /// Added to a running cluster: started with `--join` and the members known then.
    pub joined: Option<Vec<u64>>,
}

/// A cluster of `lockstep serve` processes.
pub struct Cluster {
    pub dir: TempDir,
    pub cluster_id: u64,
    pub replicas: BTreeMap<u64, Replica>,
    /// More arguments for every `lockstep serve`.
    pub extra_args: Vec<String>,
    /// More arguments for one replica's `lockstep serve`.
    pub replica_args: BTreeMap<u64, Vec<String>>,
    /// TLS on every port, with these certificates (see [`Cluster::with_tls`]).
    pub tls: Option<lockstep_tls::issue::ClusterFiles>,
    /// The replicas' tick (20 ms: elections settle fast; the servers' default is 50).
    pub tick_millis: u64,
}

impl Cluster {
    pub fn new(name: &str, size: u64) -> Cluster {
        let ports = free_ports(3 * size as usize);
        let replicas = (1..=size)
            .map(|id| {
                let index = (id - 1) as usize * 3;
                let (peer, client, etcd) = (ports[index], ports[index + 1], ports[index + 2]);
                (id, Replica { id, peer, client, etcd, child: None, joined: None })
            })
            .collect();
        Cluster {
            dir: TempDir::new(name),
            cluster_id: 4242,
            replicas,
            extra_args: Vec::new(),
            replica_args: BTreeMap::new(),
            tls: None,
            tick_millis: 20,
        }
    }

    /// TLS on every port (client certificates required), with certificates made under the
    /// cluster's directory; the clients below use them.
    pub fn with_tls(&mut self) {
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        let files = lockstep_tls::issue::write_cluster(
            &self.dir.0.join("tls"),
            self.cluster_id,
            &ids,
            &[],
            30,
        )
        .expect("certificates");
        self.tls = Some(files);
    }

    /// The client side of TLS, if the cluster has it.
    pub fn client_tls(
        &self,
    ) -> Option<Arc<lockstep_tls::Reloading<lockstep_tls::rustls::ClientConfig>>> {
        let files = self.tls.as_ref()?;
        let tls = lockstep_tls::ClientTls {
            ca_file: files.ca(),
            identity: Some((files.client(), files.client_key())),
            alpn: Vec::new(),
        };
        Some(tls.reloading().expect("the client's TLS"))
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.0.join(format!("replica-{id}"))
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.0.join(format!("replica-{id}.log"))
    }

    /// The arguments of `lockstep serve` for replica `id`.
    pub fn serve_args(&self, id: u64) -> Vec<String> {
        let mut args = vec![
            "serve".to_string(),
            "--id".to_string(),
            id.to_string(),
            "--cluster-id".to_string(),
            self.cluster_id.to_string(),
            "--data-dir".to_string(),
            self.data_dir(id).display().to_string(),
            "--tick-millis".to_string(),
            self.tick_millis.to_string(),
            // Checkpoints (and recovery from them) happen within the tests' few thousand writes.
            "--checkpoint-entries".to_string(),
            "5000".to_string(),
        ];
        if let Some(files) = &self.tls {
            for (flag, path) in files.server_flags(id) {
                args.push(flag.to_string());
                args.push(path.display().to_string());
            }
            args.push("--client-cert-auth".to_string());
        }
        args.extend(self.extra_args.iter().cloned());
        args.extend(self.replica_args.get(&id).into_iter().flatten().cloned());
        let joined = self.replicas[&id].joined.clone();
        if joined.is_some() {
            args.push("--join".to_string());
        }
        for replica in self.replicas.values() {
            let initial = self.replicas.values().all(|r| r.joined.is_none() || r.id == replica.id);
            let known = match &joined {
                Some(members) => members.contains(&replica.id),
                None => replica.joined.is_none() || initial && replica.id == id,
            };
            if !known {
                continue;
            }
            args.push("--member".to_string());
            args.push(format!(
                "{}=127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
                replica.id, replica.peer, replica.client, replica.etcd
            ));
        }
        args
    }

    pub fn start(&mut self, id: u64) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open the replica's log");
        let log_err = log.try_clone().expect("clone the log handle");
        let child = lockstep()
            .args(self.serve_args(id))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("start lockstep serve");
        self.replicas.get_mut(&id).expect("a replica").child = Some(child);
    }

    /// A new replica `id` with fresh ports, to join the running cluster (not started).
    pub fn add_replica(&mut self, id: u64) {
        let ports = free_ports(3);
        let mut members: Vec<u64> = self.replicas.keys().copied().collect();
        members.push(id);
        let replica = Replica {
            id,
            peer: ports[0],
            client: ports[1],
            etcd: ports[2],
            child: None,
            joined: Some(members),
        };
        self.replicas.insert(id, replica);
    }

    pub fn start_all(&mut self) {
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for id in ids {
            self.start(id);
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.replicas.get_mut(&id).and_then(|r| r.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn endpoint(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.replicas[&id].client)
    }

    /// Every replica's etcd API address, comma-separated (for etcdctl's --endpoints).
    /// Adds `root` (password `rootpw`) and turns authentication on, with etcdctl.
    pub fn enable_auth(&self) {
        for args in [&["user", "add", "root:rootpw"][..], &["auth", "enable"][..]] {
            let output = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.etcd_endpoints()])
                .args(args)
                .output()
                .expect("etcdctl: `bash scripts/test.sh` installs Debian's etcd-client");
            assert!(output.status.success(), "etcdctl {args:?}: {output:?}");
        }
    }

    pub fn etcd_endpoints(&self) -> String {
        let addresses: Vec<String> =
            self.replicas.values().map(|replica| format!("127.0.0.1:{}", replica.etcd)).collect();
        addresses.join(",")
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.replicas.keys().map(|&id| self.endpoint(id)).collect()
    }

    pub fn client(&self) -> Client<Request, Request, Answer> {
        let options = ClientOptions {
            timeout: Duration::from_secs(60),
            tls: self.client_tls(),
            ..ClientOptions::default()
        };
        Client::new(self.endpoints(), options)
    }

    /// A client of the replicas `ids`.
    pub fn client_of(&self, ids: &[u64]) -> Client<Request, Request, Answer> {
        let options = ClientOptions {
            timeout: Duration::from_secs(60),
            tls: self.client_tls(),
            ..ClientOptions::default()
        };
        Client::new(ids.iter().map(|&id| self.endpoint(id)).collect(), options)
    }

    /// A client of replica `id` alone, reading what it holds (no redirection).
    pub fn replica_client(&self, id: u64) -> Client<Request, Request, Answer> {
        let options = ClientOptions {
            timeout: Duration::from_secs(5),
            consistency: ReadConsistency::Follower,
            tls: self.client_tls(),
            ..ClientOptions::default()
        };
        Client::new(vec![self.endpoint(id)], options)
    }

    /// Replica `id`'s status, with the digest of its state.
    pub async fn status(&self, id: u64) -> Option<ReplicaStatus> {
        self.status_with(id, true).await
    }

    async fn status_with(&self, id: u64, digest: bool) -> Option<ReplicaStatus> {
        let options = ClientOptions {
            timeout: Duration::from_millis(500),
            attempt_timeout: Duration::from_millis(500),
            tls: self.client_tls(),
            ..ClientOptions::default()
        };
        let client: Client<Request, Request, Answer> =
            Client::new(vec![self.endpoint(id)], options);
        client.status_with(digest).await.ok()
    }

    /// The leader, once the running replicas agree on one.
    pub async fn leader(&self, within: Duration) -> u64 {
        let started = Instant::now();
        while started.elapsed() < within {
            for &id in self.replicas.keys() {
                if let Some(status) = self.status_with(id, false).await {
                    if status.role == "leader" {
                        return id;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader within {within:?}; logs in {}", self.dir.0.display());
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

/// The log segments of replica `id`, oldest first.
pub fn segments(cluster: &Cluster, id: u64) -> Vec<PathBuf> {
    let dir = cluster.data_dir(id).join("wal");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the log directory")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    paths.sort();
    paths
}

/// Flips every bit of 8 bytes where `needle` is written in the log; returns the file.
pub fn flip_bytes_at(paths: &[PathBuf], needle: &str) -> PathBuf {
    for path in paths {
        let mut bytes = std::fs::read(path).expect("read a segment");
        if let Some(at) = bytes.windows(needle.len()).position(|window| window == needle.as_bytes())
        {
            for byte in &mut bytes[at..at + 8] {
                *byte ^= 0xFF;
            }
            std::fs::write(path, &bytes).expect("write the segment back");
            return path.clone();
        }
    }
    panic!("{needle} is in no segment of {paths:?}");
}

/// Whether `path` exists.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// Writes `key-NNNNNN = value-N` for N in `from..to` with `writers` writers at once; every
/// write must be acknowledged (the client retries what may be retried). Returns them.
pub async fn write_keys(
    client: Client<Request, Request, Answer>,
    from: u64,
    to: u64,
    writers: u64,
) -> BTreeMap<String, String> {
    let next = Arc::new(AtomicU64::new(from));
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..writers {
        let (client, next) = (client.clone(), next.clone());
        let (acknowledged, failures) = (acknowledged.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return;
                }
                let key = format!("key-{i:06}");
                let value = format!("value-{i}");
                match client.write(Request::put(key.clone(), value.clone())).await {
                    Ok(answer) if matches!(answer.response, Response::Put(_)) => {
                        acknowledged.lock().expect("lock").insert(key, value);
                    }
                    Ok(answer) => failures.lock().expect("lock").push(format!("{key}: {answer:?}")),
                    Err(error) => failures.lock().expect("lock").push(format!("{key}: {error}")),
                }
            }
        }));
    }
    for worker in workers {
        worker.await.expect("a writer panicked");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "writes failed: {failures:?}");
    let acknowledged = acknowledged.lock().expect("lock").clone();
    acknowledged
}
