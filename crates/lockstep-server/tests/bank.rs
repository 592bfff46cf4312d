//! The bank ledger example as a test: a user-defined state machine on three in-process
//! servers, concurrent transfers through the typed client while the leader is stopped and a
//! new one elected; no money is made or lost and every acknowledged transfer is applied once.

#[path = "../examples/bank/ledger.rs"]
#[allow(dead_code, missing_docs)]
mod ledger;

#[path = "../examples/bank/members.rs"]
mod members;

use std::time::Duration;

use ledger::{Command, Ledger, Outcome, Query};
use lockstep_client::{Client, ClientOptions, ReadConsistency};
use lockstep_server::{BoundServer, ServerConfig};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_survive_a_leader_change_exactly_once() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bank-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let members = members::loopback_members(3).expect("free ports");
    let mut stops = Vec::new();
    let mut servers = Vec::new();
    for member in &members {
        let mut config =
            ServerConfig::new(member.id, 1, dir.join(member.id.to_string()), members.clone());
        config.tick_millis = 20;
        // Reads under the leader's lease: the totals below are read that way.
        config.lease_reads = true;
        let server = BoundServer::bind(config).await.expect("bind");
        let (stop, mut stopped) = watch::channel(false);
        stops.push(stop);
        servers.push(tokio::spawn(server.run(Ledger::default(), async move {
            let _ = stopped.changed().await;
        })));
    }
    let endpoints: Vec<String> = members.iter().map(|member| member.client.clone()).collect();
    let options = ClientOptions { timeout: Duration::from_secs(30), ..ClientOptions::default() };
    let bank: Client<Command, Query, Outcome> = Client::new(endpoints.clone(), options);
    let names = ["alice", "bob", "carol", "dave"];
    for account in names {
        let opened = bank.write(Command::Open { account: account.into(), balance: 1_000 }).await;
        assert!(matches!(opened, Ok(Outcome::Ok(_))), "{opened:?}");
    }

    let finished = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..16u64 {
        let bank = bank.clone();
        let finished = finished.clone();
        tasks.push(tokio::spawn(async move {
            let mut applied = 0u64;
            for round in 0..150u64 {
                let from = names[((worker + round) % 4) as usize].to_string();
                let to = names[((worker * 7 + round * 3 + 1) % 4) as usize].to_string();
                let amount = 1 + (worker * 13 + round) % 50;
                let outcome = bank.write(Command::Transfer { from, to, amount }).await;
                finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match outcome {
                    Ok(Outcome::Ok(_)) => applied += 1,
                    Ok(Outcome::Refused(_)) => {}
                    other => panic!("transfer failed: {other:?}"),
                }
            }
            applied
        }));
    }
    // Stop the leader while the transfers run.
    while finished.load(std::sync::atomic::Ordering::Relaxed) < 400 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut leader = None;
    for (index, endpoint) in endpoints.iter().enumerate() {
        let single: Client<Command, Query, Outcome> =
            Client::new(vec![endpoint.clone()], ClientOptions::default());
        if single.status().await.map(|status| status.role == "leader").unwrap_or(false) {
            leader = Some(index);
        }
    }
    let leader = leader.expect("a leader");
    let _ = stops[leader].send(true);
    let at_stop = finished.load(std::sync::atomic::Ordering::Relaxed);
    assert!(at_stop < 2_000, "the leader stopped too late to matter ({at_stop} done)");

    let mut acknowledged = 0;
    for task in tasks {
        acknowledged += task.await.expect("a transfer task");
    }
    let total = bank.read_with(Query::Total, ReadConsistency::Lease).await.expect("total");
    assert_eq!(total, Outcome::Amount(4_000), "money was made or lost");
    let applied = bank.read(Query::Transfers).await.expect("transfers");
    assert_eq!(applied, Outcome::Amount(acknowledged), "a transfer applied twice or lost");
    eprintln!("{acknowledged} transfers, each applied once, across a leader change");
    for stop in &stops {
        let _ = stop.send(true);
    }
    for server in servers {
        let outcome = tokio::time::timeout(Duration::from_secs(10), server).await;
        assert!(matches!(outcome, Ok(Ok(Ok(())))), "a server did not stop cleanly: {outcome:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
