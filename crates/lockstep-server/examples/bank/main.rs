//! A bank ledger replicated on three servers, served and queried with no RPC code.
//!
//! `cargo run --release -p lockstep-server --example bank` starts three replicas of the
//! ledger in this process (each with its own data directory, log thread and TCP ports, as
//! separate processes would have), opens accounts, runs concurrent transfers through the
//! typed client, and checks that money was neither made nor lost.

mod ledger;
mod members;

use std::time::{Duration, Instant};

use ledger::{Command, Ledger, Outcome, Query};
use lockstep_client::{Client, ClientOptions};
use lockstep_server::{BoundServer, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("lockstep-bank-{}", std::process::id()));
    let members = members::loopback_members(3)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for member in &members {
        let config =
            ServerConfig::new(member.id, 1, dir.join(member.id.to_string()), members.clone());
        let server = BoundServer::bind(config).await?;
        let mut stopped = stopped.clone();
        servers.push(tokio::spawn(server.run(Ledger::default(), async move {
            let _ = stopped.changed().await;
        })));
    }

    // The client is typed by the ledger's own command, query and outcome types.
    let endpoints = members.iter().map(|member| member.client.clone()).collect();
    let bank: Client<Command, Query, Outcome> = Client::new(endpoints, ClientOptions::default());
    for account in ["alice", "bob", "carol", "dave"] {
        let opened = bank.write(Command::Open { account: account.into(), balance: 1_000 }).await;
        println!("open {account}: {:?}", opened.map_err(|e| e.to_string())?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..32u64 {
        let bank = bank.clone();
        tasks.push(tokio::spawn(async move {
            let names = ["alice", "bob", "carol", "dave"];
            let mut done = 0u64;
            for round in 0..100u64 {
                let from = names[((worker + round) % 4) as usize].to_string();
                let to = names[((worker + round + 1 + worker % 3) % 4) as usize].to_string();
                if let Ok(Outcome::Ok(_)) =
                    bank.write(Command::Transfer { from, to, amount: 7 }).await
                {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut transfers = 0;
    for task in tasks {
        transfers += task.await.map_err(|error| error.to_string())?;
    }
    let elapsed = started.elapsed();
    let total = bank.read(Query::Total).await.map_err(|error| error.to_string())?;
    println!(
        "{transfers} transfers in {:.2} s; total {total:?} (4000 opened)",
        elapsed.as_secs_f64()
    );
    for account in ["alice", "bob", "carol", "dave"] {
        let balance = bank.read(Query::Balance(account.into())).await.map_err(|e| e.to_string())?;
        println!("  {account}: {balance:?}");
    }
    let _ = stop.send(true);
    for server in servers {
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    if total != Outcome::Amount(4_000) {
        return Err("money was made or lost".to_string());
    }
    Ok(())
}
