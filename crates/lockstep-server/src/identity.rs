//! Which cluster and replica a data directory belongs to.
//!
//! A data directory holds one file, `identity`, written (and synced) before anything else:
//! `lockstep 1\ncluster_id = C\nreplica_id = R\n`. A server started on a directory of another
//! cluster or another replica refuses to start and changes nothing, since running there would
//! mix two replicas' promises.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

const FILE: &str = "identity";
const HEADER: &str = "lockstep 1";

/// Checks that `dir` belongs to replica `replica_id` of cluster `cluster_id`, or claims an
/// empty (or missing) directory for it; returns whether it was claimed just now.
pub fn claim(dir: &Path, cluster_id: u64, replica_id: u64) -> Result<bool, String> {
    let path = dir.join(FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let (stored_cluster, stored_replica) = parse(&text).ok_or_else(|| {
                format!("{} is damaged: it does not say which cluster owns it", path.display())
            })?;
            if stored_cluster != cluster_id {
                return Err(format!(
                    "{} belongs to cluster {stored_cluster}, not cluster {cluster_id}: give this \
                     replica its own data directory",
                    dir.display()
                ));
            }
            if stored_replica != replica_id {
                return Err(format!(
                    "{} belongs to replica {stored_replica}, not replica {replica_id}: give this \
                     replica its own data directory",
                    dir.display()
                ));
            }
            Ok(false)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // A temporary identity left by a crash before its rename does not count.
            let occupied = fs::read_dir(dir)
                .map(|entries| entries.flatten().any(|entry| entry.file_name() != "identity.tmp"))
                .unwrap_or(false);
            if occupied {
                return Err(format!(
                    "{} is not empty and holds no lockstep identity file: refusing to use it",
                    dir.display()
                ));
            }
            create_durably(dir)
                .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
            let temporary = dir.join("identity.tmp");
            let text = format!("{HEADER}\ncluster_id = {cluster_id}\nreplica_id = {replica_id}\n");
            let write = || -> std::io::Result<()> {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temporary)?;
                file.write_all(text.as_bytes())?;
                file.sync_all()?;
                fs::rename(&temporary, &path)?;
                fs::File::open(dir)?.sync_all()
            };
            write().map_err(|error| format!("cannot write {}: {error}", path.display()))?;
            Ok(true)
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

/// Creates `dir` and any missing parents, syncing each parent after creating a child in it,
/// so the directory survives a power loss once this returns.
fn create_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        create_durably(parent)?;
    }
    // Readable by its owner only: a data directory holds every key and value.
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::File::open(parent)?.sync_all()
}

fn parse(text: &str) -> Option<(u64, u64)> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut value = |name: &str| -> Option<u64> {
        let line = lines.next()?;
        let (key, value) = line.split_once(" = ")?;
        (key == name).then_some(())?;
        value.parse().ok()
    };
    let cluster = value("cluster_id")?;
    let replica = value("replica_id")?;
    Some((cluster, replica))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_claimed_once_and_checked_after() {
        let dir = std::env::temp_dir().join(format!("lockstep-identity-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        claim(&dir, 7, 1).expect("claims an empty directory");
        claim(&dir, 7, 1).expect("the same identity again");
        let other = claim(&dir, 8, 1).expect_err("another cluster");
        assert!(other.contains("belongs to cluster 7, not cluster 8"), "{other}");
        let other = claim(&dir, 7, 2).expect_err("another replica");
        assert!(other.contains("belongs to replica 1"), "{other}");
        fs::write(dir.join(FILE), "garbage").expect("write");
        assert!(claim(&dir, 7, 1).expect_err("damaged").contains("damaged"));
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_claimed_directory_and_its_files_are_its_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lockstep-private-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        claim(&dir.join("replica"), 7, 1).expect("claims an empty directory");
        let mode = |path: &Path| fs::metadata(path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("replica")), 0o700);
        assert_eq!(mode(&dir.join("replica").join(FILE)), 0o600);
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
