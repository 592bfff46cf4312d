//! The harness's userspace proxy, for delays (this kernel has no `netem`): a TCP relay that
//! holds every chunk it relays for the current delay before passing it on, in both
//! directions, without limiting throughput (chunks in flight are pipelined, as on a long
//! link).
//!
//! It runs as `lockstep chaos-proxy` inside a server's namespace, where an nft rule redirects
//! the peers' connections to the server's peer port to it; it relays them to the server. It
//! reads its delay from standard input (`delay MILLISECONDS` lines) and exits when that
//! closes, so it never outlives the harness.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// What a relayed link does to what it carries, changed while it runs.
#[derive(Debug, Default)]
pub struct Link {
    /// Hold each chunk this long (milliseconds) before passing it on.
    pub delay_millis: AtomicU64,
    /// Hold this share of the chunks (percent) 200 ms more, as a lost packet's retransmission
    /// would (a stream relay cannot lose bytes without breaking the stream).
    pub loss_percent: AtomicU64,
    /// Hold back what goes from the connecting side to the accepting side ([0]) or back
    /// ([1]), as a network that drops every packet does: nothing arrives, nothing is lost
    /// from the stream, and it flows again after the heal unless a side gave up on it. New
    /// connections are refused while [0] is set.
    pub cut: [AtomicBool; 2],
}

impl Link {
    /// Back to a plain relay.
    pub fn heal(&self) {
        self.delay_millis.store(0, Ordering::Relaxed);
        self.loss_percent.store(0, Ordering::Relaxed);
        for cut in &self.cut {
            cut.store(false, Ordering::Relaxed);
        }
    }
}

/// Accepts connections on `listener` and relays each to `to` through `link`, until dropped.
pub async fn serve(listener: TcpListener, to: String, link: Arc<Link>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        if link.cut[0].load(Ordering::Relaxed) {
            // No connection gets through a partition.
            drop(inbound);
            continue;
        }
        let (link, to) = (link.clone(), to.clone());
        tokio::spawn(async move {
            if let Ok(outbound) = TcpStream::connect(&to).await {
                relay(inbound, outbound, link).await;
            }
        });
    }
}

/// Runs the proxy until standard input closes.
pub async fn run(args: ProxyArgs) -> Result<(), String> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let link = Arc::new(Link::default());
    let control = {
        let link = link.clone();
        async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut words = line.split_whitespace();
                if let (Some("delay"), Some(Ok(millis))) =
                    (words.next(), words.next().map(str::parse))
                {
                    link.delay_millis.store(millis, Ordering::Relaxed);
                }
            }
        }
    };
    tokio::select! {
        _ = serve(listener, args.to, link) => {}
        _ = control => {}
    }
    Ok(())
}

/// Relays both directions until either side closes.
async fn relay(inbound: TcpStream, outbound: TcpStream, link: Arc<Link>) {
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        _ = direction(in_read, out_write, link.clone(), 0) => {}
        _ = direction(out_read, in_write, link, 1) => {}
    }
}

/// One direction: chunks are read as they come, stamped, and written once the delay has
/// passed since they were read (and not while the direction is cut: then they wait, and the
/// bounded queue stops the reading, so the sender's writes stall as on a dead link).
async fn direction(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    link: Arc<Link>,
    which: usize,
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
        let mut random = super::Random::new(u64::from(std::process::id()) << 8 | which as u64);
        while let Some((read_at, chunk)) = pending.recv().await {
            while link.cut[which].load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut wait = Duration::from_millis(link.delay_millis.load(Ordering::Relaxed));
            if random.below(100) < link.loss_percent.load(Ordering::Relaxed) {
                wait += Duration::from_millis(200);
            }
            tokio::time::sleep_until(read_at + wait).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reading, writing);
}
