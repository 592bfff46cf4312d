//! `lockstep cert`: a cluster's authority and its replicas' and clients' certificates.

use std::path::PathBuf;

use clap::Args;

/// Make a cluster's certificates: an authority (kept if DIR has one), a certificate for each
/// replica that names it for its peers (`replica-<id>.cluster-<hex>.lockstep`) and the hosts
/// clients reach it by, and a client certificate. Files are written readable by their owner
/// only; copy each replica's to it, and the authority's certificate (never its key) to clients.
#[derive(Args, Debug, Clone)]
pub struct CertArgs {
    /// Where to write them.
    #[arg(long, default_value = "lockstep-certs")]
    dir: PathBuf,
    /// The cluster's id, as its servers are given it (--cluster-id).
    #[arg(long)]
    cluster_id: u64,
    /// The replicas to make certificates for, comma-separated ids.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    replicas: Vec<u64>,
    /// A DNS name or IP address clients reach the replicas by (repeat; loopback is always
    /// included).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Days the replica and client certificates are valid (the authority's: ten times as long).
    #[arg(long, default_value_t = 365)]
    days: i64,
}

/// Writes the certificates and says where.
pub fn run(args: CertArgs) -> Result<(), String> {
    if args.replicas.contains(&0) {
        return Err("--replicas: replica ids start at 1".to_string());
    }
    if args.days < 1 {
        return Err("--days: at least 1".to_string());
    }
    let files = lockstep_tls::issue::write_cluster(
        &args.dir,
        args.cluster_id,
        &args.replicas,
        &args.hosts,
        args.days,
    )
    .map_err(|error| error.to_string())?;
    println!("certificates for cluster {} in {}:", args.cluster_id, args.dir.display());
    println!("  authority  {} (its key: {})", files.ca().display(), files.ca_key().display());
    for id in &args.replicas {
        println!(
            "  replica {id}  {} {}",
            files.replica(*id).display(),
            files.replica_key(*id).display()
        );
    }
    println!("  client     {} {}", files.client().display(), files.client_key().display());
    println!("a replica runs with, for example:");
    let id = args.replicas.first().copied().unwrap_or(1);
    println!(
        "  lockstep serve ... --cert-file {r} --key-file {k} --trusted-ca-file {ca} \
         --client-cert-auth --peer-cert-file {r} --peer-key-file {k} --peer-trusted-ca-file {ca}",
        r = files.replica(id).display(),
        k = files.replica_key(id).display(),
        ca = files.ca().display()
    );
    Ok(())
}
