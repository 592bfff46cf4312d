//! TLS for lockstep's ports: certificates and keys loaded with clear errors and re-read when
//! they change, the name a replica's certificate carries, and a cluster's certificates made.
//!
//! - [`ServerTls`] and [`ClientTls`] build rustls configurations from PEM files (TLS 1.3 only,
//!   the ring provider: nothing to build but Rust and the C compiler Rust links with).
//! - [`Reloading`] holds a configuration and rebuilds it when its files change, so that
//!   certificates are rotated without a restart: a connection made after the change uses the
//!   new ones, and one that fails to load keeps the old ones (and says why).
//! - A replica proves who it is to its peers with a certificate that names it:
//!   [`replica_name`] is a DNS name `replica-<id>.cluster-<hex>.lockstep` in the certificate's
//!   subject alternative names. The dialler asks for that name as the server name (rustls
//!   checks it), and the listener checks the dialler's certificate for the name of the replica
//!   its hello claims ([`certifies_replica`]).
//! - [`Conn`] is a connection with or without TLS, for servers that serve both.
//! - [`issue`] makes a cluster's authority and its replicas' and clients' certificates.

mod conn;
pub mod issue;
mod load;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use conn::{accept, looks_like_tls, Conn};
pub use load::{load_certificates, load_key, load_roots};
pub use reload::Reloading;
pub use rustls;
pub use tokio_rustls;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;

/// What can go wrong loading TLS material. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind expected.
    #[error("{path} holds no {what} (expected PEM: -----BEGIN {what}-----)")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
    },
    /// A file's PEM does not parse.
    #[error("{path} is not valid PEM: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A private key that users other than its owner may read.
    #[error(
        "{path} is readable by other users (mode {mode:o}): a private key must be readable by \
         its owner only (chmod 600 {path})"
    )]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// rustls refused the material (a key that does not match its certificate, say).
    #[error("{what}: {reason}")]
    Rustls {
        /// What was being built, naming the files.
        what: String,
        /// rustls's reason.
        reason: String,
    },
}

/// The DNS name that a replica's certificate carries to prove it is replica `replica_id` of
/// cluster `cluster_id`.
pub fn replica_name(cluster_id: u64, replica_id: u64) -> String {
    format!("replica-{replica_id}.cluster-{cluster_id:x}.lockstep")
}

/// Whether `certificate` names replica `replica_id` of cluster `cluster_id`: one of its subject
/// alternative names is exactly [`replica_name`] (a wildcard does not count), and it may serve
/// (server usage), as every replica's certificate does and a client's does not. Its chain is
/// checked by the TLS handshake; this checks what it claims.
pub fn certifies_replica(
    certificate: &CertificateDer<'_>,
    cluster_id: u64,
    replica_id: u64,
) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return false;
    };
    let wanted = replica_name(cluster_id, replica_id);
    let named = match parsed.subject_alternative_name() {
        Ok(Some(names)) => names.value.general_names.iter().any(
            |name| matches!(name, GeneralName::DNSName(dns) if dns.eq_ignore_ascii_case(&wanted)),
        ),
        _ => false,
    };
    let serves = match parsed.extended_key_usage() {
        Ok(Some(usage)) => usage.value.server_auth,
        _ => false,
    };
    named && serves
}

/// The common name of `certificate`'s subject, if it has one (etcd takes it for the user a
/// client certificate names).
pub fn common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}

/// ring's provider: it builds with a C compiler alone (aws-lc-rs, which adds post-quantum key
/// exchange, needs more on some platforms).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rustls_error(what: impl Into<String>) -> impl FnOnce(rustls::Error) -> Error {
    let what = what.into();
    move |error| Error::Rustls { what, reason: error.to_string() }
}

/// The files a TLS server reads: its certificate chain and key, and, to require client
/// certificates, the authority they must come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate chain (PEM), the server's own first.
    pub cert_file: PathBuf,
    /// Its private key (PEM; readable by its owner only).
    pub key_file: PathBuf,
    /// Require clients to present a certificate issued by an authority in this file (PEM).
    pub client_ca_file: Option<PathBuf>,
    /// Protocols offered by ALPN (`h2` for gRPC), most preferred first.
    pub alpn: Vec<Vec<u8>>,
}

impl ServerTls {
    /// The rustls configuration, read from the files now.
    pub fn build(&self) -> Result<rustls::ServerConfig, Error> {
        let chain = load_certificates(&self.cert_file)?;
        let key = load_key(&self.key_file)?;
        let what = format!("{} with {}", self.cert_file.display(), self.key_file.display());
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rustls_error(what.clone()))?;
        let builder = match &self.client_ca_file {
            Some(path) => {
                let roots = Arc::new(load_roots(path)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|error| Error::Rustls {
                        what: format!("client authorities in {}", path.display()),
                        reason: error.to_string(),
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(rustls_error(what))?;
        config.alpn_protocols = self.alpn.clone();
        Ok(config)
    }

    /// The files to watch for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cert_file.clone(), self.key_file.clone()];
        files.extend(self.client_ca_file.clone());
        files
    }

    /// A [`Reloading`] configuration over these files.
    pub fn reloading(&self) -> Result<Arc<Reloading<rustls::ServerConfig>>, Error> {
        let tls = self.clone();
        Reloading::new(self.files(), move || tls.build()).map(Arc::new)
    }
}

/// The files a TLS client reads: the authority that the server's certificate must come from,
/// and the client's own certificate and key if the server asks for one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// Authorities trusted for the server's certificate (PEM).
    pub ca_file: PathBuf,
    /// The client's certificate chain and key (PEM), for servers that require one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Protocols offered by ALPN (`h2` for gRPC).
    pub alpn: Vec<Vec<u8>>,
}

impl ClientTls {
    /// The rustls configuration, read from the files now.
    pub fn build(&self) -> Result<rustls::ClientConfig, Error> {
        let roots = load_roots(&self.ca_file)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rustls_error(format!("authorities in {}", self.ca_file.display())))?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((cert, key)) => {
                let chain = load_certificates(cert)?;
                let key_der = load_key(key)?;
                builder.with_client_auth_cert(chain, key_der).map_err(rustls_error(format!(
                    "{} with {}",
                    cert.display(),
                    key.display()
                )))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(config)
    }

    /// The files to watch for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.ca_file.clone()];
        if let Some((cert, key)) = &self.identity {
            files.push(cert.clone());
            files.push(key.clone());
        }
        files
    }

    /// A [`Reloading`] configuration over these files.
    pub fn reloading(&self) -> Result<Arc<Reloading<rustls::ClientConfig>>, Error> {
        let tls = self.clone();
        Reloading::new(self.files(), move || tls.build()).map(Arc::new)
    }
}

/// The server name to ask for when dialling `endpoint` (`host:port`): its host, as an IP
/// address or a DNS name.
pub fn server_name(endpoint: &str) -> Result<ServerName<'static>, String> {
    let host = match endpoint.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => endpoint,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("{endpoint}: {host} is neither an IP address nor a DNS name"))
}

/// Where `lockstep cert` and `lockstep up --tls` keep a cluster's certificates under a data
/// directory, and where the command-line client looks for them.
pub fn cluster_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

#[cfg(test)]
mod tests;
