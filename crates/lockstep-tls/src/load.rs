//! Reading certificates, keys and authorities from PEM files.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use crate::Error;

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })
}

/// The certificates in `path` (PEM), in order.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Error::Pem { path: path.to_path_buf(), reason: error.to_string() })?;
    if certificates.is_empty() {
        return Err(Error::Empty { path: path.to_path_buf(), what: "CERTIFICATE" });
    }
    Ok(certificates)
}

/// The private key in `path` (PEM: PKCS#8, PKCS#1 or SEC1). Refused if users other than its
/// owner may read the file, as ssh refuses such keys.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    check_private(path)?;
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => {
            Error::Empty { path: path.to_path_buf(), what: "PRIVATE KEY" }
        }
        error => Error::Pem { path: path.to_path_buf(), reason: error.to_string() },
    })
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path)
        .map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyExposed { path: path.to_path_buf(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), Error> {
    Ok(())
}

/// The authorities in `path` (PEM), as a trust store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(path)? {
        roots.add(certificate).map_err(|error| Error::Rustls {
            what: format!("an authority in {}", path.display()),
            reason: error.to_string(),
        })?;
    }
    Ok(roots)
}
