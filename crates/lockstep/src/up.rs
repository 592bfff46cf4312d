//! `lockstep up`: a local cluster of separate server processes on loopback.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use tokio::process::{Child, Command};

use crate::commands::statuses;
use crate::{ClientArgs, Output};

/// Start a local cluster: one `lockstep serve` process per replica, on loopback, with data
/// under --data-dir. Prints the endpoints and a live status line; a replica that exits or is
/// killed is restarted after 3 s (unless --no-restart); Ctrl-C stops them all. Run it again to
/// restart the same cluster from its data.
#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// How many replicas.
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Where the replicas keep their data (one directory each) and their logs.
    #[arg(long, default_value = "lockstep-data")]
    data_dir: PathBuf,
    /// Replica N serves clients on PORT+N, peers on PORT+100+N and metrics on PORT+200+N.
    #[arg(long, default_value_t = 7100)]
    port: u16,
    /// Leave a replica that exits (or is killed) stopped, instead of restarting it after 3 s.
    #[arg(long)]
    no_restart: bool,
    /// Replica N serves etcd's v3 API on ETCD_PORT+10000*(N-1) (2379, 12379, 22379: etcdctl's
    /// default endpoint reaches replica 1); 0 turns the etcd API off.
    #[arg(long, default_value_t = 2379)]
    etcd_port: u16,
    /// Keep this many revisions of history, compacting older ones automatically (0: never).
    #[arg(long, default_value_t = 0)]
    auto_compact_revisions: u64,
    /// Answer a request only once a majority reported the same output chain at its entry.
    #[arg(long)]
    verified_outputs: bool,
    /// Turn the audit of replicas off.
    #[arg(long)]
    no_audit: bool,
    /// TLS on every port, with certificates made under DATA_DIR/tls (kept: a cluster started
    /// with --tls keeps TLS when restarted without it). Clients must present a certificate;
    /// the client commands run from the same folder find DATA_DIR/tls by themselves.
    #[arg(long)]
    tls: bool,
}

impl Default for UpArgs {
    fn default() -> UpArgs {
        UpArgs {
            replicas: 3,
            data_dir: crate::default_data_dir(),
            port: 7100,
            no_restart: false,
            etcd_port: 2379,
            auto_compact_revisions: 0,
            verified_outputs: false,
            no_audit: false,
            tls: false,
        }
    }
}

/// The cluster id kept in the data directory, made on first use.
fn cluster_id(dir: &Path) -> Result<u64, String> {
    let path = dir.join("cluster-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{} is damaged: it should hold a number", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
            }
            // A random id (the operating system's randomness, through the standard library's
            // hasher keys) of 63 bits, so that TOML, whose integers are signed, can hold it:
            // two clusters made apart do not share one.
            let id = {
                use std::hash::BuildHasher;
                let random = std::collections::hash_map::RandomState::new()
                    .hash_one((std::process::id(), std::time::SystemTime::now()));
                (random & (i64::MAX as u64)).max(1)
            };
            std::fs::write(&path, format!("{id}\n"))
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
            Ok(id)
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Runs the cluster until Ctrl-C or SIGTERM.
pub async fn run(args: UpArgs) -> Result<(), String> {
    if args.replicas == 0 || args.replicas > 9 {
        return Err("--replicas: between 1 and 9 (3 or 5 for fault tolerance)".to_string());
    }
    if u64::from(args.port) + 200 + args.replicas > 65_535 {
        return Err("--port: too high for that many replicas".to_string());
    }
    let cluster = cluster_id(&args.data_dir)?;
    let tls_dir = lockstep_tls::cluster_dir(&args.data_dir);
    let tls = if args.tls || tls_dir.join("ca.pem").exists() {
        let replicas: Vec<u64> = (1..=args.replicas).collect();
        let files = lockstep_tls::issue::ClusterFiles { dir: tls_dir.clone() };
        // Certificates made once, then kept (made again only for a replica that has none).
        let missing: Vec<u64> =
            replicas.iter().copied().filter(|id| !files.replica(*id).exists()).collect();
        if !missing.is_empty() || !files.client().exists() {
            lockstep_tls::issue::write_cluster(&tls_dir, cluster, &missing, &[], 3650)
                .map_err(|error| error.to_string())?;
        }
        Some(files)
    } else {
        None
    };
    let exe = std::env::current_exe().map_err(|error| format!("cannot find myself: {error}"))?;
    let etcd_port = |id: u64| u64::from(args.etcd_port) + 10_000 * (id - 1);
    if args.etcd_port != 0 && etcd_port(args.replicas) > 65_535 {
        return Err("--etcd-port: too high for that many replicas".to_string());
    }
    let members: Vec<String> = (1..=args.replicas)
        .map(|id| {
            let client = u64::from(args.port) + id;
            let peer = u64::from(args.port) + 100 + id;
            match args.etcd_port {
                0 => format!("{id}=127.0.0.1:{peer},127.0.0.1:{client}"),
                _ => {
                    format!("{id}=127.0.0.1:{peer},127.0.0.1:{client},127.0.0.1:{}", etcd_port(id))
                }
            }
        })
        .collect();
    let endpoints: Vec<String> =
        (1..=args.replicas).map(|id| format!("127.0.0.1:{}", u64::from(args.port) + id)).collect();
    let spawn = |id: u64| -> Result<Child, String> {
        let log_path = args.data_dir.join(format!("replica-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|error| format!("cannot open {}: {error}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|error| error.to_string())?;
        let mut command = Command::new(&exe);
        command
            .arg("serve")
            .arg("--id")
            .arg(id.to_string())
            .arg("--cluster-id")
            .arg(cluster.to_string())
            .arg("--data-dir")
            .arg(args.data_dir.join(format!("replica-{id}")))
            .arg("--listen-metrics")
            .arg(format!("127.0.0.1:{}", u64::from(args.port) + 200 + id));
        for member in &members {
            command.arg("--member").arg(member);
        }
        if args.auto_compact_revisions > 0 {
            command.arg("--auto-compact-revisions").arg(args.auto_compact_revisions.to_string());
        }
        if args.verified_outputs {
            command.arg("--verified-outputs");
        }
        if args.no_audit {
            command.arg("--no-audit");
        }
        if let Some(files) = &tls {
            for (flag, path) in files.server_flags(id) {
                command.arg(flag).arg(path);
            }
            command.arg("--client-cert-auth");
        }
        command.stdin(Stdio::null()).stdout(log).stderr(log_err).kill_on_drop(true);
        command.spawn().map_err(|error| format!("cannot start replica {id}: {error}"))
    };
    let mut children: Vec<(u64, Child)> = Vec::new();
    for id in 1..=args.replicas {
        children.push((id, spawn(id)?));
    }
    // When each exited replica is due to be restarted.
    let mut restarts: Vec<(u64, std::time::Instant)> = Vec::new();

    let scheme = if tls.is_some() { "https" } else { "http" };
    match &tls {
        Some(_) => println!(
            "lockstep: {} replicas of cluster {cluster} on loopback, TLS on every port \
             (certificates in {})",
            args.replicas,
            tls_dir.display()
        ),
        None => println!("lockstep: {} replicas of cluster {cluster} on loopback", args.replicas),
    }
    for (id, endpoint) in (1..=args.replicas).zip(&endpoints) {
        println!(
            "  replica {id}: clients {endpoint}  metrics {scheme}://127.0.0.1:{}/metrics  data {}  log {}",
            u64::from(args.port) + 200 + id,
            args.data_dir.join(format!("replica-{id}")).display(),
            args.data_dir.join(format!("replica-{id}.log")).display()
        );
    }
    if args.etcd_port != 0 {
        let etcd: Vec<String> =
            (1..=args.replicas).map(|id| format!("127.0.0.1:{}", etcd_port(id))).collect();
        match &tls {
            Some(files) => println!(
                "  etcd API: {} (etcdctl --endpoints {} --cacert {} --cert {} --key {} get \
                 --prefix '')",
                etcd.join(", "),
                etcd.join(","),
                files.ca().display(),
                files.client().display(),
                files.client_key().display()
            ),
            None => println!(
                "  etcd API: {} (etcdctl --endpoints {} get --prefix '')",
                etcd.join(", "),
                etcd.join(",")
            ),
        }
    }
    println!("try:  lockstep put greeting hello   lockstep get greeting   lockstep status");
    println!("      (with --endpoints {} if not the default)", endpoints.join(","));
    println!("Ctrl-C stops the cluster.");

    let client = ClientArgs {
        endpoints: endpoints.clone(),
        output: Output::Text,
        timeout: 1.0,
        consistency: crate::Consistency::Linearizable,
        serializable: false,
        cacert: tls.as_ref().map(|files| files.ca()),
        cert: tls.as_ref().map(|files| files.client()),
        key_file: tls.as_ref().map(|files| files.client_key()),
        user: None,
    };
    let terminal = std::io::stdout().is_terminal();
    let mut last_line = String::new();
    let stop = crate::serve::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        for (id, child) in &mut children {
            let exited = !restarts.iter().any(|(waiting, _)| waiting == id);
            if let (true, Ok(Some(status))) = (exited, child.try_wait()) {
                if args.no_restart {
                    println!("\nreplica {id} exited ({status}); see its log");
                } else {
                    println!("\nreplica {id} exited ({status}); restarting it in 3 s");
                }
                restarts.push((*id, std::time::Instant::now() + Duration::from_secs(3)));
            }
        }
        if !args.no_restart {
            let due: Vec<u64> = restarts
                .iter()
                .filter(|(_, at)| *at <= std::time::Instant::now())
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                restarts.retain(|(waiting, _)| *waiting != id);
                match spawn(id) {
                    Ok(child) => {
                        println!(
                            "\nreplica {id} restarted: it recovers from its disk and catches up"
                        );
                        if let Some(slot) = children.iter_mut().find(|(slot, _)| *slot == id) {
                            slot.1 = child;
                        }
                    }
                    Err(error) => println!("\n{error}"),
                }
            }
        }
        let line = status_line(&client).await;
        if terminal {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
        } else if line != last_line {
            println!("{line}");
        }
        last_line = line;
    }
    println!("\nstopping the replicas");
    for (_, child) in &children {
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
    }
    for (id, child) in &mut children {
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("replica {id} did not stop in 10 s; killing it");
                let _ = child.kill().await;
            }
        }
    }
    Ok(())
}

async fn status_line(client: &ClientArgs) -> String {
    let results = statuses(client, false).await;
    let mut leader = None;
    let mut term = 0;
    let mut parts = Vec::new();
    for (endpoint, result) in &results {
        match result {
            Ok(status) => {
                if status.role == "leader" {
                    leader = Some(status.id);
                }
                term = term.max(status.term);
                parts.push(format!("{}:{}@{}", status.id, &status.role[..1], status.applied));
            }
            Err(_) => parts.push(format!("{endpoint} down")),
        }
    }
    let leader = leader.map_or("none".to_string(), |id| id.to_string());
    format!("leader {leader}  term {term}  applied {}", parts.join(" "))
}
