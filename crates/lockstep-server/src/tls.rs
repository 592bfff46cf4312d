//! TLS on a replica's ports, from its configuration (see docs/SECURITY.md).
//!
//! The client ports (native, etcd, metrics) present `cert_file` and, with
//! `client_cert_auth`, require a client certificate from `trusted_ca_file`. The peer port is
//! mutual TLS with the peer files: a replica dials another asking for the name of the replica
//! it wants ([`lockstep_tls::replica_name`]), and a listener accepts only a dialler whose
//! certificate names the replica its hello claims to be (checked in the transport). Every
//! configuration is re-read when its files change (looked at every 2 s, and at once on
//! SIGHUP): connections made after a change use the new certificates; a change that does not
//! load (a certificate without its new key, say) is logged and the previous one stays.

use std::sync::Arc;
use std::time::Duration;

use lockstep_tls::rustls::{ClientConfig, ServerConfig as TlsServerConfig};
use lockstep_tls::{ClientTls, Reloading, ServerTls};
use tokio::sync::watch;

use crate::config::ServerConfig;

/// How often certificate files are looked at for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Re-reads one configuration's files: whether it changed.
type Reload = Box<dyn Fn() -> Result<bool, lockstep_tls::Error> + Send + Sync>;

/// The TLS configurations of one replica's ports, each re-read when its files change.
#[derive(Clone, Default)]
pub struct Security {
    /// The native client port and the metrics endpoint.
    pub clients: Option<Arc<Reloading<TlsServerConfig>>>,
    /// The etcd port (the same files, offering HTTP/2 by ALPN).
    pub etcd: Option<Arc<Reloading<TlsServerConfig>>>,
    /// The peer port: requires a peer certificate.
    pub peers_in: Option<Arc<Reloading<TlsServerConfig>>>,
    /// Dialling peers, with this replica's peer certificate.
    pub peers_out: Option<Arc<Reloading<ClientConfig>>>,
    /// Dialling other members' client ports (the etcd gateway forwards there), with this
    /// replica's certificate.
    pub members_out: Option<Arc<Reloading<ClientConfig>>>,
    /// The same files, for clients that read them themselves (the gateway's gRPC client to the
    /// leader's etcd port): trusted authority, certificate, key.
    pub member_files: Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)>,
}

impl Security {
    /// Loads every configuration `config` asks for; an error names the file and the flag.
    pub fn load(config: &ServerConfig) -> Result<Security, String> {
        let mut security = Security::default();
        let fail = |error: lockstep_tls::Error| format!("TLS: {error}");
        if let (Some(cert), Some(key), Some(ca)) =
            (&config.cert_file, &config.key_file, &config.trusted_ca_file)
        {
            let client_ca = config.client_cert_auth.then(|| ca.clone());
            let server = ServerTls {
                cert_file: cert.clone(),
                key_file: key.clone(),
                client_ca_file: client_ca,
                alpn: Vec::new(),
            };
            security.clients = Some(server.reloading().map_err(fail)?);
            // HTTP/2 for gRPC; HTTP/1.1 for the health, version and metrics paths.
            let etcd = ServerTls { alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()], ..server };
            security.etcd = Some(etcd.reloading().map_err(fail)?);
            let out = ClientTls {
                ca_file: ca.clone(),
                identity: Some((cert.clone(), key.clone())),
                alpn: Vec::new(),
            };
            security.members_out = Some(out.reloading().map_err(fail)?);
            security.member_files = Some((ca.clone(), cert.clone(), key.clone()));
        }
        if let (Some(cert), Some(key), Some(ca)) =
            (&config.peer_cert_file, &config.peer_key_file, &config.peer_trusted_ca_file)
        {
            let server = ServerTls {
                cert_file: cert.clone(),
                key_file: key.clone(),
                client_ca_file: Some(ca.clone()),
                alpn: Vec::new(),
            };
            // A rotated peer certificate that no longer names this replica is refused like
            // one that does not load: the previous one stays.
            let (cluster_id, id) = (config.cluster_id, config.id);
            let named = move |path: &std::path::Path| -> Result<(), lockstep_tls::Error> {
                let chain = lockstep_tls::load_certificates(path)?;
                if chain.first().is_some_and(|c| lockstep_tls::certifies_replica(c, cluster_id, id))
                {
                    return Ok(());
                }
                Err(lockstep_tls::Error::Rustls {
                    what: path.display().to_string(),
                    reason: format!(
                        "it does not name replica {id} of cluster {cluster_id} ({}) with server \
                         usage: peers would refuse it",
                        lockstep_tls::replica_name(cluster_id, id)
                    ),
                })
            };
            let checked = {
                let server = server.clone();
                Reloading::new(server.files(), move || {
                    named(&server.cert_file)?;
                    server.build()
                })
            };
            security.peers_in = Some(Arc::new(checked.map_err(|error| match error {
                lockstep_tls::Error::Rustls { what, reason } => {
                    format!("TLS: {what}: {reason}")
                }
                error => fail(error),
            })?));
            let out = ClientTls {
                ca_file: ca.clone(),
                identity: Some((cert.clone(), key.clone())),
                alpn: Vec::new(),
            };
            security.peers_out = Some(out.reloading().map_err(fail)?);
        }
        Ok(security)
    }

    /// Re-reads every configuration whose files changed, every 2 s and on SIGHUP, until
    /// `stopped`.
    pub fn watch(&self, mut stopped: watch::Receiver<bool>) {
        let mut all: Vec<(&'static str, Reload)> = Vec::new();
        macro_rules! add {
            ($name:expr, $field:expr) => {
                if let Some(reloading) = $field.clone() {
                    all.push(($name, Box::new(move || reloading.reload_if_changed())));
                }
            };
        }
        add!("client ports", self.clients);
        add!("etcd port", self.etcd);
        add!("peer port", self.peers_in);
        add!("peer connections", self.peers_out);
        add!("connections to members", self.members_out);
        if all.is_empty() {
            return;
        }
        tokio::spawn(async move {
            let mut hangups =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let hangup = async {
                    match hangups.as_mut() {
                        Some(signals) => signals.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(RELOAD_EVERY) => {}
                    _ = hangup => tracing::info!("SIGHUP: looking at the certificate files"),
                }
                for (name, reload) in &all {
                    match reload() {
                        Ok(true) => {
                            metrics::counter!("lockstep_tls_reloads_total").increment(1);
                            tracing::info!("TLS: new certificates for the {name}")
                        }
                        Ok(false) => {}
                        Err(error) => {
                            metrics::counter!("lockstep_tls_reload_failures_total").increment(1);
                            tracing::warn!(
                                "TLS: the {name} keep their certificates: the changed files do \
                                 not load: {error}"
                            )
                        }
                    }
                }
            }
        });
    }
}

pub use lockstep_tls::accept;
