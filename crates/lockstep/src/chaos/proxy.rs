//! The harness's userspace proxy, for delays (this kernel has no `netem`): a TCP relay that
//! holds every chunk it relays for the current delay before passing it on, in both
//! directions, without limiting throughput (chunks in flight are pipelined, as on a long
//! link).
//!
//! It runs as `lockstep chaos-proxy` inside a server's namespace, where an nft rule redirects
//! the peers' connections to the server's peer port to it; it relays them to the server. It
//! reads its delay from standard input (`delay MILLISECONDS` lines) and exits when that
//! closes, so it never outlives the harness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// `lockstep chaos-proxy` (used by `lockstep chaos`).
#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Accept connections here.
    #[arg(long)]
    listen: String,
    /// Relay them to here.
    #[arg(long)]
    to: String,
}

/// Runs the proxy until standard input closes.
pub async fn run(args: ProxyArgs) -> Result<(), String> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let delay = Arc::new(AtomicU64::new(0));
    let accepting = {
        let delay = delay.clone();
        async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                let (delay, to) = (delay.clone(), args.to.clone());
                tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(&to).await {
                        relay(inbound, outbound, delay).await;
                    }
                });
            }
        }
    };
    let control = async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut words = line.split_whitespace();
            if let (Some("delay"), Some(Ok(millis))) = (words.next(), words.next().map(str::parse))
            {
                delay.store(millis, Ordering::Relaxed);
            }
        }
    };
    tokio::select! {
        _ = accepting => {}
        _ = control => {}
    }
    Ok(())
}

/// Relays both directions until either side closes.
async fn relay(inbound: TcpStream, outbound: TcpStream, delay: Arc<AtomicU64>) {
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        _ = direction(in_read, out_write, delay.clone()) => {}
        _ = direction(out_read, in_write, delay) => {}
    }
}

/// One direction: chunks are read as they come, stamped, and written once the delay has
/// passed since they were read.
async fn direction(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    delay: Arc<AtomicU64>,
) {
    let (chunks, mut pending) = mpsc::channel::<(Instant, Bytes)>(1024);
    let reading = async move {
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(&buffer[..n]);
                    if chunks.send((Instant::now(), chunk)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writing = async move {
        while let Some((read_at, chunk)) = pending.recv().await {
            let wait = Duration::from_millis(delay.load(Ordering::Relaxed));
            tokio::time::sleep_until(read_at + wait).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reading, writing);
}
