//! The fault harness (`lockstep chaos`) against real servers in network namespaces (and on
//! loopback with relayed links): a correct lockstep passes under every kind of fault, and so
//! does etcd (the control); deliberately broken builds (reads served without a read index,
//! writes acknowledged before they are synced) are caught; an interrupted run removes
//! everything it made. Needs root, `ip netns` and `nft` (`scripts/test.sh` installs
//! nftables when missing). Each run prints its seed and how to run it again.

// Tests may read files, clocks and the environment.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// One run at a time: the runs share the machine's two cores with their servers.
static SERIAL: Mutex<()> = Mutex::new(());

fn chaos(args: &[&str]) -> (bool, String) {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = std::env::temp_dir().join(format!("lockstep-chaos-test-{}", std::process::id()));
    let output: Output = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .arg("chaos")
        .arg("--dir")
        .arg(&dir)
        .args(args)
        .output()
        .expect("run lockstep chaos");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    // What a run keeps (a failing run's history and logs) goes with the test: the output
    // above is its record.
    let _ = std::fs::remove_dir_all(&dir);
    (output.status.success(), text)
}

/// Nothing of a run whose process was `pid` is left: namespaces, bridge, mounts, processes.
fn assert_nothing_left(pid: u32) {
    let namespaces = Command::new("ip").args(["netns", "list"]).output().expect("ip netns");
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    let prefix = format!("lc{pid}n");
    assert!(!namespaces.contains(&prefix), "namespaces left: {namespaces}");
    let links = Command::new("ip").args(["-o", "link", "show"]).output().expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&format!("lcbr{pid}")), "bridge left: {links}");
    assert!(!links.contains(&format!("lc{pid}h")), "veth left: {links}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    assert!(!mounts.contains(&format!("chaos-{pid}")), "mount left: {mounts}");
    let processes = Command::new("pgrep").args(["-f", "lockstep serve --id"]).output();
    if let Ok(processes) = processes {
        for line in String::from_utf8_lossy(&processes.stdout).lines() {
            let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", line.trim()))
                .unwrap_or_default();
            assert!(
                !cmdline.contains(&format!("chaos-test-{}", std::process::id())),
                "server left"
            );
        }
    }
}

#[test]
fn lockstep_passes_under_every_kind_of_fault() {
    let (passed, text) =
        chaos(&["--duration", "60s", "--interval", "3s", "--nemesis", "all", "--seed", "11"]);
    assert!(passed, "a correct lockstep failed the harness:\n{text}");
    let faults = text.lines().find(|line| line.starts_with("faults:")).unwrap_or_default();
    let kinds = ["kill", "pause", "partition", "loss", "disk-full", "delay", "transfer", "member"];
    for kind in kinds {
        assert!(faults.contains(&format!("{kind} ")), "{kind} injected: {faults}");
    }
    assert!(text.contains("PASS linearizable"), "{text}");
    assert!(text.contains("PASS no acknowledged write lost"), "{text}");
}

/// Without namespaces (no root): every server on loopback, the harness relaying every link
/// between them, and the network faults applied in the relays.
#[test]
fn lockstep_passes_with_tls_on_every_port() {
    let (passed, text) = chaos(&[
        "--tls",
        "--duration",
        "30s",
        "--interval",
        "3s",
        "--nemesis",
        "kill,partition,member,loss",
        "--seed",
        "12",
    ]);
    assert!(passed, "lockstep with TLS failed the harness:\n{text}");
    assert!(text.contains("tls: on every port"), "{text}");
    assert!(text.contains("PASS linearizable"), "{text}");
    assert!(text.contains("PASS no acknowledged write lost"), "{text}");
}

#[test]
fn lockstep_passes_on_loopback_with_relayed_links() {
    let (passed, text) = chaos(&[
        "--network",
        "loopback",
        "--duration",
        "30s",
        "--interval",
        "3s",
        "--nemesis",
        "partition,loss,delay,pause,kill",
        "--seed",
        "31",
    ]);
    assert!(passed, "a correct lockstep failed the harness on loopback:\n{text}");
    assert!(text.contains("network: loopback"), "{text}");
    assert!(text.contains("partition:"), "{text}");
}

#[cfg(feature = "sabotage")]
#[test]
fn reads_served_without_a_read_index_are_caught() {
    let (passed, text) = chaos(&[
        "--duration",
        "25s",
        "--nemesis",
        "partition,pause",
        "--seed",
        "2",
        "--sabotage",
        "unsafe-reads",
    ]);
    assert!(!passed, "the harness passed a server that reads without a read index:\n{text}");
    assert!(text.contains("FAIL linearizable"), "{text}");
}

#[cfg(feature = "sabotage")]
#[test]
fn writes_acknowledged_before_they_are_synced_are_caught() {
    let (passed, text) = chaos(&[
        "--duration",
        "25s",
        "--nemesis",
        "kill",
        "--seed",
        "4",
        "--sabotage",
        "early-ack",
    ]);
    assert!(!passed, "the harness passed a server that acknowledges unsynced writes:\n{text}");
    // Acknowledged writes lost with the majority that held them only in memory: missing from
    // the store's history, or (when the history cannot be read back) reads that went back.
    assert!(
        text.contains("FAIL no acknowledged write lost") || text.contains("FAIL linearizable"),
        "{text}"
    );
}

#[test]
fn an_interrupted_run_removes_everything_it_made() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = std::env::temp_dir().join(format!("lockstep-chaos-test-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["chaos", "--duration", "60s", "--nemesis", "all", "--seed", "5", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run lockstep chaos");
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(12));
    // While it runs, its namespaces exist.
    let namespaces = Command::new("ip").args(["netns", "list"]).output().expect("ip netns");
    assert!(String::from_utf8_lossy(&namespaces.stdout).contains(&format!("lc{pid}n")));
    let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
    let status = child.wait().expect("wait");
    assert!(!status.success(), "an interrupted run does not pass");
    assert_nothing_left(pid);

    // A run killed outright cannot clean up: the next run removes what it left.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["chaos", "--duration", "60s", "--nemesis", "disk-full", "--seed", "6", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run lockstep chaos");
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    let next = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["chaos", "--duration", "1s", "--nemesis", "none", "--dir"])
        .arg(&dir)
        .output()
        .expect("run lockstep chaos");
    let text = String::from_utf8_lossy(&next.stderr);
    assert!(text.contains("removed a leftover"), "{text}");
    assert!(next.status.success(), "{text}{}", String::from_utf8_lossy(&next.stdout));
    assert_nothing_left(pid);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The control: the same harness and checks pass against a real 3-member etcd, so what they
/// report of lockstep is not an artefact of the harness.
#[test]
fn etcd_passes_the_same_harness() {
    let (passed, text) =
        chaos(&["--system", "etcd", "--duration", "30s", "--nemesis", "all", "--seed", "21"]);
    assert!(passed, "etcd failed the harness:\n{text}");
    assert!(text.contains("PASS linearizable"), "{text}");
    assert!(text.contains("PASS same state on every replica"), "{text}");
}
