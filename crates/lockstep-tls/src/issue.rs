//! Making a cluster's certificates: an authority, a certificate for each replica (which names
//! the replica, for its peers, and the hosts clients reach it by) and certificates for clients.
//!
//! [`write_cluster`] writes them into a directory an operator can copy from: `ca.pem` and
//! `ca-key.pem`, `replica-<id>.pem` and `replica-<id>-key.pem`, `client.pem` and
//! `client-key.pem`. The directory is made readable by its owner only, and so is every key.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::{replica_name, Error};

fn failed(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |error| Error::Rustls { what: what.to_string(), reason: error.to_string() }
}

/// When a certificate is valid.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// From.
    pub not_before: OffsetDateTime,
    /// Until.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (for clocks a little behind) for `days` days.
    pub fn days(days: i64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Duration::hours(1), not_after: now + Duration::days(days) }
    }
}

/// A certificate and its key, in PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// An authority that issues a cluster's certificates.
pub struct Authority {
    cert_pem: String,
    key: KeyPair,
}

impl Authority {
    /// A new self-signed authority named `name`.
    pub fn new(name: &str, validity: Validity) -> Result<Authority, Error> {
        let key = KeyPair::generate().map_err(failed("a key for the authority"))?;
        let mut params = CertificateParams::new(Vec::new()).map_err(failed("an authority"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key).map_err(failed("an authority"))?;
        Ok(Authority { cert_pem: cert.pem(), key })
    }

    /// The authority in `cert_file` with its key in `key_file`.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Authority, Error> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|source| Error::Read { path: path.to_path_buf(), source })
        };
        let cert_pem = read(cert_file)?;
        let key = KeyPair::from_pem(&read(key_file)?).map_err(|error| Error::Pem {
            path: key_file.to_path_buf(),
            reason: error.to_string(),
        })?;
        // Checks that the certificate parses as one.
        Issuer::from_ca_cert_pem(&cert_pem, &key).map_err(|error| Error::Pem {
            path: cert_file.to_path_buf(),
            reason: error.to_string(),
        })?;
        Ok(Authority { cert_pem, key })
    }

    /// The authority's certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The authority's key (PEM).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    fn issue(&self, mut params: CertificateParams, validity: Validity) -> Result<Issued, Error> {
        let key = KeyPair::generate().map_err(failed("a key"))?;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(failed("the authority's certificate"))?;
        let cert = params.signed_by(&key, &issuer).map_err(failed("a certificate"))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A certificate for replica `replica_id` of cluster `cluster_id`: it names the replica
    /// ([`replica_name`]) for its peers, and `hosts` (DNS names or IP addresses; loopback
    /// always) for clients; it serves and it dials (server and client usage).
    pub fn replica(
        &self,
        cluster_id: u64,
        replica_id: u64,
        hosts: &[String],
        validity: Validity,
    ) -> Result<Issued, Error> {
        if let Some(host) =
            hosts.iter().find(|host| host.contains('*') || host.ends_with(".lockstep"))
        {
            return Err(Error::Rustls {
                what: format!("host {host}"),
                reason: "a wildcard, or a name under .lockstep, could name replicas to their peers"
                    .to_string(),
            });
        }
        let mut names = vec![replica_name(cluster_id, replica_id)];
        for host in ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|h| h.to_string())
            .chain(hosts.iter().cloned())
        {
            if !names.contains(&host) {
                names.push(host);
            }
        }
        let mut params = CertificateParams::new(names).map_err(failed("a replica's names"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("lockstep replica {replica_id}"));
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, validity)
    }

    /// A certificate for a client named `name` (client usage only).
    pub fn client(&self, name: &str, validity: Validity) -> Result<Issued, Error> {
        let mut params = CertificateParams::new(Vec::new()).map_err(failed("a client"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, validity)
    }

    /// A certificate with exactly these names and usages (for tests of what is refused).
    pub fn custom(
        &self,
        names: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
        validity: Validity,
    ) -> Result<Issued, Error> {
        let mut params = CertificateParams::new(names).map_err(failed("a certificate's names"))?;
        params.extended_key_usages = usages;
        self.issue(params, validity)
    }
}

pub use rcgen::ExtendedKeyUsagePurpose as Usage;

/// Writes `contents` to `path` (replacing it), readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    let error = |source| Error::Read { path: path.to_path_buf(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    }
    file.write_all(contents.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)
}

/// Creates `dir` (and its parents) readable by their owner only; a directory that exists
/// already is left as it is.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let error = |source| Error::Read { path: dir.to_path_buf(), source };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(error)
}

/// The files of a cluster's certificates in a directory written by [`write_cluster`].
#[derive(Clone, Debug)]
pub struct ClusterFiles {
    /// The directory.
    pub dir: PathBuf,
}

impl ClusterFiles {
    /// The authority's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// The authority's key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }
    /// Replica `id`'s certificate.
    pub fn replica(&self, id: u64) -> PathBuf {
        self.dir.join(format!("replica-{id}.pem"))
    }
    /// Replica `id`'s key.
    pub fn replica_key(&self, id: u64) -> PathBuf {
        self.dir.join(format!("replica-{id}-key.pem"))
    }
    /// The client certificate.
    pub fn client(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    /// The client key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client-key.pem")
    }

    /// The `lockstep serve` flags that give replica `id` TLS on every port with these files
    /// (its certificate for clients and peers alike); with `--client-cert-auth`, clients must
    /// present a certificate too.
    pub fn server_flags(&self, id: u64) -> [(&'static str, PathBuf); 6] {
        [
            ("--cert-file", self.replica(id)),
            ("--key-file", self.replica_key(id)),
            ("--trusted-ca-file", self.ca()),
            ("--peer-cert-file", self.replica(id)),
            ("--peer-key-file", self.replica_key(id)),
            ("--peer-trusted-ca-file", self.ca()),
        ]
    }
}

/// Writes into `dir` an authority (or uses the one already there), a certificate for each of
/// `replicas` of cluster `cluster_id` (naming `hosts` besides loopback), and a client
/// certificate, each valid for `days` days (the authority for ten times as long).
pub fn write_cluster(
    dir: &Path,
    cluster_id: u64,
    replicas: &[u64],
    hosts: &[String],
    days: i64,
) -> Result<ClusterFiles, Error> {
    create_private_dir(dir)?;
    let files = ClusterFiles { dir: dir.to_path_buf() };
    let authority = if files.ca().exists() {
        Authority::load(&files.ca(), &files.ca_key())?
    } else {
        let authority =
            Authority::new(&format!("lockstep cluster {cluster_id:x}"), Validity::days(days * 10))?;
        write_private(&files.ca_key(), &authority.key_pem())?;
        write_private(&files.ca(), authority.cert_pem())?;
        authority
    };
    for &id in replicas {
        let issued = authority.replica(cluster_id, id, hosts, Validity::days(days))?;
        write_private(&files.replica_key(id), &issued.key_pem)?;
        write_private(&files.replica(id), &issued.cert_pem)?;
    }
    let client = authority.client("lockstep client", Validity::days(days))?;
    write_private(&files.client_key(), &client.key_pem)?;
    write_private(&files.client(), &client.cert_pem)?;
    Ok(files)
}
