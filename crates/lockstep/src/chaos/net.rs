//! The harness's network: each server in a network namespace of its own, joined by a bridge,
//! and faults as nftables rules inside those namespaces.
//!
//! Everything is named after the harness's process id (`lc<pid>n<i>` namespaces, the
//! `lcbr<pid>` bridge), so a later run can tell leftovers of a run that died (its process is
//! gone) from another run's, and remove them. The servers' addresses are inside the
//! namespaces; the bridge's own address, in the harness's namespace, is where its clients
//! connect from.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

/// Runs a command, failing with what it printed.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output =
        Command::new(program).args(args).output().map_err(|error| format!("{program}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `nft` inside a namespace with a script on standard input.
fn nft(namespace: &str, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("nft: {error}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|error| format!("nft: {error}"))?;
    }
    let output = child.wait_with_output().map_err(|error| format!("nft: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "nft in {namespace}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// Whether this machine can run the harness's network: root, `ip netns` and `nft`.
pub fn available() -> Result<(), String> {
    let uid = run("id", &["-u"])?;
    if uid.trim() != "0" {
        return Err("the chaos harness needs root (network namespaces and nftables)".into());
    }
    run("ip", &["netns", "list"]).map_err(|error| format!("ip netns: {error}"))?;
    run("nft", &["--version"])
        .map_err(|error| format!("nft (Debian's nftables) is needed: {error}"))?;
    Ok(())
}

/// The namespaces, bridge and rules of one run.
#[derive(Debug)]
pub struct Namespaces {
    tag: String,
    /// The third byte of the run's 10.x.y.0/24 subnet.
    subnet: (u8, u8),
    servers: usize,
    up: bool,
    /// Each server's delay proxy and the pipe that sets its delay.
    proxies: Vec<(Child, ChildStdin)>,
}

impl Namespaces {
    /// Creates `servers` namespaces joined by a bridge. On failure, whatever was made is
    /// removed again.
    pub fn create(servers: usize) -> Result<Namespaces, String> {
        let pid = std::process::id();
        let subnet = (200 + (pid % 50) as u8, ((pid / 50) % 250) as u8);
        let mut network =
            Namespaces { tag: format!("lc{pid}"), subnet, servers, up: true, proxies: Vec::new() };
        if let Err(error) = network.build() {
            network.remove();
            return Err(error);
        }
        Ok(network)
    }

    fn build(&self) -> Result<(), String> {
        let bridge = self.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run("ip", &["addr", "add", &format!("{}/24", self.host_address()), "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for index in 0..self.servers {
            let namespace = self.namespace(index);
            let host_side = format!("{}h{index}", self.tag);
            let inside = format!("{}p{index}", self.tag);
            run("ip", &["netns", "add", &namespace])?;
            run("ip", &["link", "add", &host_side, "type", "veth", "peer", "name", &inside])?;
            run("ip", &["link", "set", &host_side, "master", &bridge])?;
            run("ip", &["link", "set", &host_side, "up"])?;
            run("ip", &["link", "set", &inside, "netns", &namespace])?;
            let exec = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &namespace];
                all.extend_from_slice(args);
                run("ip", &all)
            };
            exec(&["ip", "link", "set", "lo", "up"])?;
            exec(&["ip", "link", "set", &inside, "name", "eth0"])?;
            exec(&["ip", "addr", "add", &format!("{}/24", self.address(index)), "dev", "eth0"])?;
            exec(&["ip", "link", "set", "eth0", "up"])?;
            nft(&namespace, "table inet chaos {\n chain input { type filter hook input priority 0; }\n chain output { type filter hook output priority 0; }\n}\n")?;
        }
        Ok(())
    }

    /// The namespace of server `index` (from 0).
    pub fn namespace(&self, index: usize) -> String {
        format!("{}n{index}", self.tag)
    }

    fn bridge(&self) -> String {
        format!("lcbr{}", &self.tag[2..])
    }

    /// Server `index`'s address.
    pub fn address(&self, index: usize) -> String {
        format!("10.{}.{}.{}", self.subnet.0, self.subnet.1, index + 1)
    }

    /// The harness's own address on the bridge (its clients' source).
    pub fn host_address(&self) -> String {
        format!("10.{}.{}.254", self.subnet.0, self.subnet.1)
    }

    /// Drops traffic from each server in `from` to each in `to` (both at the sender's output
    /// and the receiver's input, so neither side's connection sees the other).
    pub fn cut(&self, from: &BTreeSet<usize>, to: &BTreeSet<usize>) -> Result<(), String> {
        for &a in from {
            for &b in to {
                if a == b {
                    continue;
                }
                let rule = |chain: &str, field: &str, other: usize| {
                    format!("add rule inet chaos {chain} ip {field} {} drop\n", self.address(other))
                };
                nft(&self.namespace(a), &rule("output", "daddr", b))?;
                nft(&self.namespace(b), &rule("input", "saddr", a))?;
            }
        }
        Ok(())
    }

    /// Drops `percent`% of the packets between servers, at random, in both directions.
    pub fn lose(&self, percent: u32) -> Result<(), String> {
        for index in 0..self.servers {
            let peers: Vec<String> =
                (0..self.servers).filter(|&i| i != index).map(|i| self.address(i)).collect();
            let set = peers.join(", ");
            nft(
                &self.namespace(index),
                &format!(
                    "add rule inet chaos input ip saddr {{ {set} }} numgen random mod 100 < {percent} drop\n"
                ),
            )?;
        }
        Ok(())
    }

    /// Starts a delay proxy in each server's namespace (`binary chaos-proxy`), and redirects
    /// the connections peers make to `peer_port` through it.
    pub fn start_proxies(&mut self, binary: &Path, peer_port: u16) -> Result<(), String> {
        let proxy_port = peer_port + 10_000;
        for index in 0..self.servers {
            let namespace = self.namespace(index);
            let mut child = Command::new("ip")
                .args(["netns", "exec", &namespace, "setpriv", "--pdeathsig", "KILL"])
                .arg(binary)
                .args(["chaos-proxy", "--listen", &format!("0.0.0.0:{proxy_port}")])
                .args(["--to", &format!("{}:{peer_port}", self.address(index))])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|error| format!("starting the delay proxy: {error}"))?;
            let Some(stdin) = child.stdin.take() else {
                let _ = child.kill();
                return Err("the delay proxy has no standard input".into());
            };
            self.proxies.push((child, stdin));
            nft(
                &namespace,
                &format!(
                    "table ip chaosnat {{\n chain prerouting {{ type nat hook prerouting priority -100; tcp dport {peer_port} redirect to :{proxy_port}; }}\n}}\n"
                ),
            )?;
        }
        Ok(())
    }

    /// Delays everything the peers of each server in `servers` send it, and its answers, by
    /// `millis` (each way).
    pub fn delay(&mut self, servers: &BTreeSet<usize>, millis: u64) -> Result<(), String> {
        for (index, (_, stdin)) in self.proxies.iter_mut().enumerate() {
            if servers.contains(&index) {
                writeln!(stdin, "delay {millis}")
                    .and_then(|()| stdin.flush())
                    .map_err(|error| format!("the delay proxy of server {}: {error}", index + 1))?;
            }
        }
        Ok(())
    }

    /// Removes every fault rule and delay.
    pub fn heal(&mut self) -> Result<(), String> {
        for index in 0..self.servers {
            let namespace = self.namespace(index);
            nft(&namespace, "flush chain inet chaos input\nflush chain inet chaos output\n")?;
        }
        let all = (0..self.proxies.len()).collect();
        self.delay(&all, 0)
    }

    /// Removes the namespaces (with their rules and interfaces) and the bridge. Idempotent.
    pub fn remove(&mut self) {
        if !self.up {
            return;
        }
        self.up = false;
        for (mut child, stdin) in self.proxies.drain(..) {
            drop(stdin);
            let _ = child.kill();
            let _ = child.wait();
        }
        for index in 0..self.servers {
            let namespace = self.namespace(index);
            kill_inside(&namespace);
            // Deleting the host side removes the pair now (a namespace's are removed later,
            // by the kernel, after the namespace goes).
            let _ = run("ip", &["link", "del", &format!("{}h{index}", self.tag)]);
            let _ = run("ip", &["netns", "del", &namespace]);
        }
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.remove();
    }
}

/// SIGKILLs every process left in a namespace.
fn kill_inside(namespace: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", namespace]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-9", pid]);
        }
    }
}

/// Whether a process is alive.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes what runs that died left behind: their namespaces (and the processes in them),
/// bridges and mounts. Returns what it removed.
pub fn sweep() -> Vec<String> {
    let mut removed = Vec::new();
    // `<prefix><pid><separator><digits>` exactly (or `<prefix><pid>` with no separator).
    let owner = |name: &str, prefix: &str, separator: Option<char>| -> Option<u32> {
        let rest = name.strip_prefix(prefix)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let tail = &rest[digits.len()..];
        let shaped = match separator {
            None => tail.is_empty(),
            Some(separator) => tail.strip_prefix(separator).is_some_and(|index| {
                !index.is_empty() && index.chars().all(|c| c.is_ascii_digit())
            }),
        };
        if shaped && !digits.is_empty() {
            digits.parse().ok()
        } else {
            None
        }
    };
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for line in list.lines() {
            let Some(name) = line.split_whitespace().next() else { continue };
            if let Some(pid) = owner(name, "lc", Some('n')) {
                if !alive(pid) {
                    kill_inside(name);
                    let _ = run("ip", &["netns", "del", name]);
                    removed.push(format!("namespace {name}"));
                }
            }
        }
    }
    if let Ok(links) = run("ip", &["-o", "link", "show"]) {
        for line in links.lines() {
            let Some(name) = line.split(':').nth(1).map(str::trim) else { continue };
            let name = name.split('@').next().unwrap_or(name);
            let pid = owner(name, "lcbr", None).or_else(|| owner(name, "lc", Some('h')));
            if let Some(pid) = pid {
                if !alive(pid) {
                    let _ = run("ip", &["link", "del", name]);
                    removed.push(format!("interface {name}"));
                }
            }
        }
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
        for line in mounts.lines() {
            // Only the harness's own: a tmpfs named lockstep-chaos-<pid> on .../chaos-<pid>.
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [source, point, kind, ..] = fields[..] else { continue };
            let Some(pid) = source.strip_prefix("lockstep-chaos-").and_then(|pid| pid.parse().ok())
            else {
                continue;
            };
            let last = point.rsplit('/').next().unwrap_or_default();
            if kind == "tmpfs" && last == format!("chaos-{pid}") && !alive(pid) {
                let _ = run("umount", &["-l", point]);
                removed.push(format!("mount {point}"));
            }
        }
    }
    removed
}

/// The servers' ports, by what they serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// lockstep's peer port.
    Peer,
    /// lockstep's native client port.
    Client,
    /// etcd's client port (lockstep serves etcd's API there too).
    Etcd,
    /// etcd's peer port.
    EtcdPeer,
}

impl Port {
    /// The port in a namespace (each server has its own address there).
    pub fn number(self) -> u16 {
        match self {
            Port::Peer => 7201,
            Port::Client => 7101,
            Port::Etcd => 2379,
            Port::EtcdPeer => 2380,
        }
    }

    fn offset(self) -> u16 {
        match self {
            Port::Peer => 0,
            Port::Client => 10,
            Port::Etcd => 20,
            Port::EtcdPeer => 30,
        }
    }
}

/// Without root: every server on loopback, on ports of its own, and every link between two
/// servers through a relay in the harness (`proxy::Link`) that cuts, delays and holds back
/// what it carries. Server `i` dials server `j` at the relay for `(i, j)`, which passes the
/// connection to `j`.
pub struct Loopback {
    base: u16,
    servers: usize,
    links: std::collections::BTreeMap<(usize, usize), std::sync::Arc<super::proxy::Link>>,
    relays: Vec<tokio::task::JoinHandle<()>>,
}

impl Loopback {
    /// Finds `servers`' worth of free ports and starts the relays between lockstep's peers.
    pub async fn create(servers: usize, relay_peers: bool) -> Result<Loopback, String> {
        let base = free_base().ok_or("no free block of loopback ports found")?;
        let mut network = Loopback { base, servers, links: Default::default(), relays: Vec::new() };
        if relay_peers {
            for from in 0..servers {
                for to in 0..servers {
                    if from == to {
                        continue;
                    }
                    let address = network.relay(from, to);
                    let listener = tokio::net::TcpListener::bind(&address)
                        .await
                        .map_err(|error| format!("relay on {address}: {error}"))?;
                    let link = std::sync::Arc::new(super::proxy::Link::default());
                    network.links.insert((from, to), link.clone());
                    let target = network.listen(to, Port::Peer);
                    network.relays.push(tokio::spawn(super::proxy::serve(listener, target, link)));
                }
            }
        }
        Ok(network)
    }

    fn relay(&self, from: usize, to: usize) -> String {
        format!("127.0.0.1:{}", self.base + 40 + (from * self.servers + to) as u16)
    }

    fn listen(&self, index: usize, port: Port) -> String {
        format!("127.0.0.1:{}", self.base + port.offset() + index as u16)
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        for relay in &self.relays {
            relay.abort();
        }
    }
}

/// A block of 60 ports below the ephemeral range, all free now.
fn free_base() -> Option<u16> {
    let pid = std::process::id() as u16;
    (0..250u16).map(|k| 20_000 + ((pid.wrapping_add(k)) % 250) * 50).find(|&base| {
        (0..60).all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok())
    })
}

/// The run's network: namespaces when the machine allows (root, `ip netns`, `nft`), loopback
/// with relays otherwise.
pub enum Network {
    Namespaces(Namespaces),
    Loopback(Loopback),
}

impl Network {
    /// Its name, for the summary.
    pub fn name(&self) -> &'static str {
        match self {
            Network::Namespaces(_) => "namespaces",
            Network::Loopback(_) => "loopback",
        }
    }

    /// What precedes the server's command line (`ip netns exec NAMESPACE`, or nothing).
    pub fn exec_prefix(&self, index: usize) -> Vec<String> {
        match self {
            Network::Namespaces(network) => {
                vec!["ip".into(), "netns".into(), "exec".into(), network.namespace(index)]
            }
            Network::Loopback(_) => Vec::new(),
        }
    }

    /// Where server `index` listens for `port`'s traffic (and where clients reach it).
    pub fn listen(&self, index: usize, port: Port) -> String {
        match self {
            Network::Namespaces(network) => format!("{}:{}", network.address(index), port.number()),
            Network::Loopback(network) => network.listen(index, port),
        }
    }

    /// The address server `from` dials to reach server `to`'s `port`.
    pub fn dial(&self, from: usize, to: usize, port: Port) -> String {
        match self {
            Network::Loopback(network)
                if port == Port::Peer && from != to && network.links.contains_key(&(from, to)) =>
            {
                network.relay(from, to)
            }
            _ => self.listen(to, port),
        }
    }

    /// Drops what each server in `from` sends each in `to`.
    pub fn cut(&mut self, from: &BTreeSet<usize>, to: &BTreeSet<usize>) -> Result<(), String> {
        match self {
            Network::Namespaces(network) => network.cut(from, to),
            Network::Loopback(network) => {
                use std::sync::atomic::Ordering;
                for &a in from {
                    for &b in to {
                        if let Some(link) = network.links.get(&(a, b)) {
                            link.cut[0].store(true, Ordering::Relaxed);
                        }
                        if let Some(link) = network.links.get(&(b, a)) {
                            link.cut[1].store(true, Ordering::Relaxed);
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Loses `percent`% of the packets between servers (on loopback: holds that share of the
    /// chunks back 200 ms, as retransmissions would).
    pub fn lose(&mut self, percent: u32) -> Result<(), String> {
        match self {
            Network::Namespaces(network) => network.lose(percent),
            Network::Loopback(network) => {
                for link in network.links.values() {
                    link.loss_percent
                        .store(u64::from(percent), std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            }
        }
    }

    /// Delays every link into each server in `servers` by `millis` each way.
    pub fn delay(&mut self, servers: &BTreeSet<usize>, millis: u64) -> Result<(), String> {
        match self {
            Network::Namespaces(network) => network.delay(servers, millis),
            Network::Loopback(network) => {
                for ((_, to), link) in &network.links {
                    if servers.contains(to) {
                        link.delay_millis.store(millis, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Ok(())
            }
        }
    }

    /// Removes every fault.
    pub fn heal(&mut self) -> Result<(), String> {
        match self {
            Network::Namespaces(network) => network.heal(),
            Network::Loopback(network) => {
                for link in network.links.values() {
                    link.heal();
                }
                Ok(())
            }
        }
    }
}
