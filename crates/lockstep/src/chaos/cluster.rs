//! The servers under test: real `lockstep serve` (or `etcd`) processes, one in each network
//! namespace, that the harness kills, pauses and restarts.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::net::{run, Network, Port};

/// Which system runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// lockstep, driven through its native client.
    Lockstep,
    /// etcd (Debian's etcd-server), driven through its v3 API: the control.
    Etcd,
}

/// A deliberately broken lockstep that the harness must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sabotage {
    /// Every replica answers linearizable reads from its own state, leader or not.
    UnsafeReads,
    /// Writes are acknowledged before they are written, and synced only once a second.
    EarlyAck,
}

impl Sabotage {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Sabotage::UnsafeReads => "unsafe-reads",
            Sabotage::EarlyAck => "early-ack",
        }
    }
}

/// One server (a slot: a removed server's slot takes the server added in its place).
#[derive(Debug)]
struct Server {
    child: Option<Child>,
    paused: bool,
    data_dir: PathBuf,
    starts: u32,
    /// Its replica id (lockstep).
    id: u64,
    /// The members it is started with, as (id, slot).
    members: Vec<(u64, usize)>,
    /// Added to the running cluster (started with `--join`).
    joined: bool,
    /// Removed from the cluster, not yet replaced: not started.
    removed: bool,
}

/// The servers of one run.
#[derive(Debug)]
pub struct Cluster {
    pub system: System,
    binary: PathBuf,
    sabotage: Option<Sabotage>,
    dir: PathBuf,
    servers: Vec<Server>,
    /// The tmpfs mounted for the last server's data, for the full-disk fault.
    small_disk: Option<PathBuf>,
    cluster_id: u64,
    /// TLS on every port: the run's certificates, and the hosts replicas' certificates name.
    tls: Option<(lockstep_tls::issue::ClusterFiles, Vec<String>)>,
}

impl Cluster {
    /// Prepares `count` servers' directories under `dir`; the last one's data lives on a small
    /// tmpfs of `small_disk_mib` MiB (for the full-disk fault) if given.
    pub fn new(
        system: System,
        binary: PathBuf,
        sabotage: Option<Sabotage>,
        dir: &Path,
        count: usize,
        small_disk_mib: Option<u64>,
        seed: u64,
    ) -> Result<Cluster, String> {
        let mut servers = Vec::new();
        let mut small_disk = None;
        for index in 0..count {
            let mut data_dir = dir.join(format!("server-{}", index + 1));
            if index + 1 == count {
                if let Some(mib) = small_disk_mib {
                    let point = dir.join(format!("chaos-{}", std::process::id()));
                    std::fs::create_dir_all(&point).map_err(|error| error.to_string())?;
                    run(
                        "mount",
                        &[
                            "-t",
                            "tmpfs",
                            "-o",
                            &format!("size={mib}m"),
                            &format!("lockstep-chaos-{}", std::process::id()),
                            &point.display().to_string(),
                        ],
                    )?;
                    data_dir = point.join(format!("server-{}", index + 1));
                    small_disk = Some(point);
                }
            }
            let members = (0..count).map(|other| (other as u64 + 1, other)).collect();
            servers.push(Server {
                child: None,
                paused: false,
                data_dir,
                starts: 0,
                id: index as u64 + 1,
                members,
                joined: false,
                removed: false,
            });
        }
        Ok(Cluster {
            system,
            binary,
            sabotage,
            dir: dir.to_path_buf(),
            servers,
            small_disk,
            cluster_id: seed | 1,
            tls: None,
        })
    }

    /// Runs every server with TLS on every port (client certificates required), with
    /// certificates made under the run's folder for the replicas at `hosts`; returns the
    /// certificates, for the clients.
    pub fn use_tls(
        &mut self,
        hosts: Vec<String>,
    ) -> Result<lockstep_tls::issue::ClusterFiles, String> {
        let ids: Vec<u64> = self.servers.iter().map(|server| server.id).collect();
        let files = lockstep_tls::issue::write_cluster(
            &self.dir.join("tls"),
            self.cluster_id,
            &ids,
            &hosts,
            30,
        )
        .map_err(|error| error.to_string())?;
        self.tls = Some((files.clone(), hosts));
        Ok(files)
    }

    /// How many servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// The file the full-disk fault fills, if there is a small disk.
    pub fn filler(&self) -> Option<PathBuf> {
        self.small_disk.as_ref().map(|point| point.join("filler"))
    }

    /// The server whose data is on the small disk.
    pub fn small_disk_server(&self) -> Option<usize> {
        self.small_disk.as_ref().map(|_| self.servers.len() - 1)
    }

    /// Starts server `index` if it is not running.
    pub fn start(&mut self, network: &Network, index: usize) -> Result<(), String> {
        if self.running(index) || self.servers[index].removed {
            return Ok(());
        }
        let server = &self.servers[index];
        std::fs::create_dir_all(&server.data_dir).map_err(|error| error.to_string())?;
        let log = self.dir.join(format!("server-{}.log", index + 1));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|error| format!("{}: {error}", log.display()))?;
        let err = out.try_clone().map_err(|error| error.to_string())?;
        let prefix = network.exec_prefix(index);
        let program = match self.system {
            System::Lockstep => self.binary.display().to_string(),
            System::Etcd => "etcd".to_string(),
        };
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest);
                command
            }
            None => Command::new("setpriv"),
        };
        if !prefix.is_empty() {
            command.arg("setpriv");
        }
        // The server dies with the harness, however the harness ends.
        command.args(["--pdeathsig", "KILL", &program]);
        match self.system {
            System::Lockstep => {
                command.arg("serve");
                command.args(["--id", &server.id.to_string()]);
                command.args(["--cluster-id", &self.cluster_id.to_string()]);
                command.arg("--data-dir").arg(&server.data_dir);
                command.args(["--tick-millis", "20"]);
                if server.joined {
                    command.arg("--join");
                }
                for &(id, other) in &server.members {
                    command.arg("--member").arg(format!(
                        "{id}={},{},{}",
                        network.dial(index, other, Port::Peer),
                        network.listen(other, Port::Client),
                        network.listen(other, Port::Etcd),
                    ));
                }
                if let Some(sabotage) = self.sabotage {
                    command.args(["--sabotage", sabotage.name()]);
                }
                match &self.tls {
                    Some((files, hosts)) => {
                        // A replica added by a membership change gets its certificate now.
                        if !files.replica(server.id).exists() {
                            lockstep_tls::issue::write_cluster(
                                &files.dir,
                                self.cluster_id,
                                &[server.id],
                                hosts,
                                30,
                            )
                            .map_err(|error| error.to_string())?;
                        }
                        for (flag, path) in files.server_flags(server.id) {
                            command.arg(flag).arg(path);
                        }
                        command.arg("--client-cert-auth");
                    }
                    // The harness's own network namespaces (addresses off loopback, reachable
                    // from nowhere else).
                    None => {
                        command.arg("--insecure-plaintext");
                    }
                }
                command.env("RUST_LOG", "info");
            }
            System::Etcd => {
                let name = format!("n{}", index + 1);
                let client = format!("http://{}", network.listen(index, Port::Etcd));
                let peer = format!("http://{}", network.listen(index, Port::EtcdPeer));
                let initial: Vec<String> = (0..self.servers.len())
                    .map(|other| {
                        format!("n{}=http://{}", other + 1, network.listen(other, Port::EtcdPeer))
                    })
                    .collect();
                command.args(["--name", &name]);
                command.arg("--data-dir").arg(&server.data_dir);
                command.args(["--listen-client-urls", &client, "--advertise-client-urls", &client]);
                command.args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer]);
                command.args([
                    "--initial-cluster",
                    &initial.join(","),
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "chaos",
                ]);
            }
        }
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command.spawn().map_err(|error| format!("starting server: {error}"))?;
        let server = &mut self.servers[index];
        server.child = Some(child);
        server.paused = false;
        server.starts += 1;
        Ok(())
    }

    /// Whether server `index`'s process is running (a paused one is).
    pub fn running(&mut self, index: usize) -> bool {
        let server = &mut self.servers[index];
        match &mut server.child {
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                _ => {
                    server.child = None;
                    server.paused = false;
                    false
                }
            },
            None => false,
        }
    }

    fn signal(&mut self, index: usize, signal: &str) -> Result<(), String> {
        if let Some(child) = &self.servers[index].child {
            // `ip netns exec` execs the server: the child's pid is the server's (and without
            // namespaces the child is the server).
            run("kill", &[signal, &child.id().to_string()])?;
        }
        Ok(())
    }

    /// SIGKILLs server `index`.
    pub fn kill(&mut self, index: usize) -> Result<(), String> {
        if self.servers[index].paused {
            self.signal(index, "-CONT")?;
        }
        self.signal(index, "-KILL")?;
        if let Some(mut child) = self.servers[index].child.take() {
            let _ = child.wait();
        }
        self.servers[index].paused = false;
        Ok(())
    }

    /// SIGSTOPs server `index`.
    pub fn pause(&mut self, index: usize) -> Result<(), String> {
        if self.running(index) && !self.servers[index].paused {
            self.signal(index, "-STOP")?;
            self.servers[index].paused = true;
        }
        Ok(())
    }

    /// SIGCONTs every paused server and starts every stopped one.
    pub fn restore(&mut self, network: &Network) -> Result<Vec<usize>, String> {
        let mut restarted = Vec::new();
        for index in 0..self.servers.len() {
            if self.servers[index].paused {
                self.signal(index, "-CONT")?;
                self.servers[index].paused = false;
            }
            if !self.running(index) {
                self.start(network, index)?;
                restarted.push(index);
            }
        }
        Ok(restarted)
    }

    /// Server `index`'s replica id.
    pub fn id(&self, index: usize) -> u64 {
        self.servers[index].id
    }

    /// Servers removed from the cluster and not yet replaced.
    pub fn removed(&self) -> Vec<usize> {
        (0..self.servers.len()).filter(|&index| self.servers[index].removed).collect()
    }

    /// Server `index` was removed from the cluster: stops it and wipes its data.
    pub fn remove(&mut self, index: usize) -> Result<(), String> {
        self.kill(index)?;
        let server = &mut self.servers[index];
        server.removed = true;
        std::fs::remove_dir_all(&server.data_dir)
            .map_err(|error| format!("{}: {error}", server.data_dir.display()))
    }

    /// A replica id never used in this cluster.
    pub fn fresh_id(&self) -> u64 {
        self.servers.iter().map(|server| server.id).max().unwrap_or(0) + 1
    }

    /// Slot `index` now holds replica `id`, added to the cluster: it is started with `--join`
    /// and the members as they are plus itself.
    pub fn replace(&mut self, index: usize, id: u64) {
        let mut members: Vec<(u64, usize)> = (0..self.servers.len())
            .filter(|&other| other != index && !self.servers[other].removed)
            .map(|other| (self.servers[other].id, other))
            .collect();
        members.push((id, index));
        let server = &mut self.servers[index];
        server.id = id;
        server.members = members;
        server.joined = true;
        server.removed = false;
    }

    /// How many times each server was started.
    pub fn starts(&self) -> Vec<u32> {
        self.servers.iter().map(|server| server.starts).collect()
    }

    /// Stops every server and unmounts the small disk. Idempotent.
    pub fn stop(&mut self) {
        for index in 0..self.servers.len() {
            let _ = self.kill(index);
        }
        if let Some(point) = self.small_disk.take() {
            let point = point.display().to_string();
            if run("umount", &[&point]).is_err() {
                let _ = run("umount", &["-l", &point]);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
