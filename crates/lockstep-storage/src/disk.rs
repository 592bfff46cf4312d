//! The small disk interface storage is written against, a real implementation over the file
//! system, and a simulated one that loses what was not synced and injects faults from a seed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use lockstep_core::rng::SeededRng;

/// A directory tree of files, as storage needs it.
pub trait Disk: Send + Sync {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for reading and writing, creating it (empty) if `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>>;
    /// The names of the files in `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file.
pub trait DiskFile: Send + std::fmt::Debug {
    /// Fills `buf` from `offset`; an error if the file ends first.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Sets the file's length (extending with zeros).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

// ----- the real file system -------------------------------------------------------------

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealDisk;

#[derive(Debug)]
struct RealFile(File);

impl Disk for RealDisk {
    /// Directories are made readable by their owner only (0700), whatever the umask: they
    /// hold every key and value.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
    }

    /// Files are created readable by their owner only (0600).
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let file =
            OpenOptions::new().read(true).write(true).create(create).mode(0o600).open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl DiskFile for RealFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

// ----- the simulated disk ---------------------------------------------------------------

/// Faults a [`SimDisk`] injects, as chances per million operations.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// A write fails with an I/O error (and writes nothing).
    pub write_error_per_million: u32,
    /// A sync fails with an I/O error (and makes nothing durable).
    pub sync_error_per_million: u32,
    /// The disk holds at most this many bytes across all files (`None`: unbounded).
    pub capacity_bytes: Option<u64>,
    /// At each crash, each file has this chance of one silently flipped bit in what it holds
    /// (a disk that lies).
    pub bit_flip_per_million: u32,
    /// At each crash, each file has this chance of a sector that fails every later read.
    pub bad_sector_per_million: u32,
}

const SECTOR_BYTES: u64 = 512;

#[derive(Clone, Debug, Default)]
struct Inode {
    /// What a reader sees now.
    current: Vec<u8>,
    /// What survives a crash.
    synced: Vec<u8>,
    /// Writes since the last sync, oldest first: (offset, bytes). A length change is recorded
    /// as a write of nothing at the new length.
    unsynced: Vec<(u64, Vec<u8>)>,
    /// Sectors whose reads fail.
    bad_sectors: BTreeSet<u64>,
    /// Bits flipped by injected faults.
    flips: u64,
}

#[derive(Debug)]
struct SimState {
    rng: SeededRng,
    faults: Faults,
    /// Bumped at every crash: handles opened before it fail.
    generation: u64,
    next_inode: u64,
    inodes: BTreeMap<u64, Inode>,
    /// The namespace as processes see it.
    names: BTreeMap<PathBuf, u64>,
    /// The namespace as it survives a crash (as of each directory's last sync).
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
}

/// An in-memory disk for tests: it keeps what was synced apart from what was only written, so
/// [`SimDisk::crash`] loses (or tears) unsynced writes and undoes unsynced renames, creations
/// and removals; it injects I/O errors, a full disk, bad sectors and bit flips. Everything
/// random comes from one seed.
#[derive(Clone, Debug)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    generation: u64,
}

fn io_error(message: &str) -> io::Error {
    io::Error::other(message.to_string())
}

impl SimDisk {
    /// An empty disk whose faults and crash outcomes follow `seed`.
    pub fn new(seed: u64, faults: Faults) -> SimDisk {
        let state = SimState {
            rng: SeededRng::new(seed),
            faults,
            generation: 0,
            next_inode: 1,
            inodes: BTreeMap::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dirs: BTreeSet::new(),
        };
        SimDisk { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        lock(&self.state)
    }

    /// Crashes the machine: every unsynced write is lost, kept, or torn (a prefix of it kept,
    /// sector by sector), as the seed decides; the namespace returns to what the last
    /// directory syncs made durable; open files stop working.
    pub fn crash(&self) {
        let mut state = self.lock();
        state.generation += 1;
        let inode_ids: Vec<u64> = state.inodes.keys().copied().collect();
        for id in inode_ids {
            let Some(mut inode) = state.inodes.remove(&id) else { continue };
            let mut image = inode.synced.clone();
            for (offset, bytes) in std::mem::take(&mut inode.unsynced) {
                let kept = match state.rng.range(0, 10) {
                    0..=3 => 0,
                    4..=7 => bytes.len(),
                    _ => {
                        let sectors = (bytes.len() as u64).div_ceil(SECTOR_BYTES);
                        (state.rng.range(0, sectors + 1) * SECTOR_BYTES).min(bytes.len() as u64)
                            as usize
                    }
                };
                if bytes.is_empty() {
                    // A length change: kept or not.
                    if kept == 0 && state.rng.range(0, 2) == 0 {
                        continue;
                    }
                    image.resize(offset as usize, 0);
                    continue;
                }
                write_into(&mut image, offset, &bytes[..kept]);
            }
            inode.current = image.clone();
            inode.synced = image;
            state.inodes.insert(id, inode);
        }
        state.names = state.durable_names.clone();
        let live: BTreeSet<u64> = state.names.values().copied().collect();
        state.inodes.retain(|id, _| live.contains(id));
        // Latent faults surface at a crash, as if found by the restart.
        let faults = state.faults;
        let ids: Vec<u64> = state.inodes.keys().copied().collect();
        for id in ids {
            let flip = state.chance(faults.bit_flip_per_million);
            let bad = state.chance(faults.bad_sector_per_million);
            let len = state.inodes.get(&id).map_or(0, |inode| inode.current.len() as u64);
            if len == 0 {
                continue;
            }
            let offset = state.rng.range(0, len);
            let bit = state.rng.range(0, 8) as u8;
            if let Some(inode) = state.inodes.get_mut(&id) {
                if flip {
                    inode.current[offset as usize] ^= 1 << bit;
                    inode.synced = inode.current.clone();
                    inode.flips += 1;
                }
                if bad {
                    inode.bad_sectors.insert(offset / SECTOR_BYTES);
                }
            }
        }
    }

    /// How many bits the disk has flipped on its own so far.
    pub fn bits_flipped(&self) -> u64 {
        self.lock().inodes.values().map(|inode| inode.flips).sum()
    }

    /// Flips one bit of what `path` holds durably at `offset` (a disk that lies).
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut state = self.lock();
        let id = *state.names.get(path).ok_or_else(|| io_error("no such file"))?;
        let inode = state.inodes.get_mut(&id).ok_or_else(|| io_error("no such file"))?;
        for image in [&mut inode.current, &mut inode.synced] {
            if let Some(byte) = image.get_mut(offset as usize) {
                *byte ^= 1 << (bit % 8);
            }
        }
        Ok(())
    }

    /// Makes reads of the sector holding `offset` in `path` fail from now on.
    pub fn add_bad_sector(&self, path: &Path, offset: u64) -> io::Result<()> {
        let mut state = self.lock();
        let id = *state.names.get(path).ok_or_else(|| io_error("no such file"))?;
        let inode = state.inodes.get_mut(&id).ok_or_else(|| io_error("no such file"))?;
        inode.bad_sectors.insert(offset / SECTOR_BYTES);
        Ok(())
    }

    /// Replaces the fault settings.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// What `path` holds now, for tests.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let id = state.names.get(path)?;
        state.inodes.get(id).map(|inode| inode.current.clone())
    }

    /// Overwrites what `path` holds (durably), for tests that plant bad files.
    pub fn put(&self, path: &Path, bytes: &[u8]) {
        let mut state = self.lock();
        let id = match state.names.get(path) {
            Some(id) => *id,
            None => {
                let id = state.next_inode;
                state.next_inode += 1;
                state.names.insert(path.to_path_buf(), id);
                state.durable_names.insert(path.to_path_buf(), id);
                id
            }
        };
        let inode = Inode { current: bytes.to_vec(), synced: bytes.to_vec(), ..Inode::default() };
        state.inodes.insert(id, inode);
    }
}

fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_into(image: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset as usize..end].copy_from_slice(bytes);
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl SimState {
    fn chance(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.rng.range(0, 1_000_000) < u64::from(per_million)
    }

    fn bytes_used(&self) -> u64 {
        self.inodes.values().map(|inode| inode.current.len() as u64).sum()
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let mut current = PathBuf::new();
        for component in dir.components() {
            current.push(component);
            state.dirs.insert(current.clone());
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn DiskFile>> {
        let mut state = self.lock();
        if !state.dirs.contains(&parent(path)) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let id = match state.names.get(path) {
            Some(id) => *id,
            None if create => {
                let id = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(id, Inode::default());
                state.names.insert(path.to_path_buf(), id);
                id
            }
            None => return Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        };
        let generation = state.generation;
        Ok(Box::new(SimFile { state: Arc::clone(&self.state), inode: id, generation }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        if !state.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(state
            .names
            .keys()
            .filter(|path| parent(path) == dir)
            .filter_map(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let id = state
            .names
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        state.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state
            .names
            .remove(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let faults = state.faults;
        if state.chance(faults.sync_error_per_million) {
            return Err(io_error("simulated sync failure"));
        }
        let in_dir = |path: &PathBuf| parent(path) == dir;
        let kept: BTreeMap<PathBuf, u64> = state
            .durable_names
            .iter()
            .filter(|(path, _)| !in_dir(path))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        let current: Vec<(PathBuf, u64)> = state
            .names
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        state.durable_names = kept;
        state.durable_names.extend(current);
        let referenced: BTreeSet<u64> =
            state.names.values().chain(state.durable_names.values()).copied().collect();
        state.inodes.retain(|id, _| referenced.contains(id));
        Ok(())
    }
}

impl SimFile {
    fn state(&self) -> io::Result<MutexGuard<'_, SimState>> {
        let state = lock(&self.state);
        if state.generation != self.generation {
            return Err(io_error("file handle from before a crash"));
        }
        Ok(state)
    }
}

impl DiskFile for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let state = self.state()?;
        let inode = state.inodes.get(&self.inode).ok_or_else(|| io_error("file removed"))?;
        let end = offset as usize + buf.len();
        if end > inode.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            ));
        }
        let first_sector = offset / SECTOR_BYTES;
        let last_sector = (end as u64).saturating_sub(1) / SECTOR_BYTES;
        if inode.bad_sectors.range(first_sector..=last_sector).next().is_some() {
            return Err(io_error("simulated bad sector"));
        }
        buf.copy_from_slice(&inode.current[offset as usize..end]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state()?;
        let faults = state.faults;
        if state.chance(faults.write_error_per_million) {
            return Err(io_error("simulated write failure"));
        }
        if let Some(capacity) = faults.capacity_bytes {
            let current =
                state.inodes.get(&self.inode).map_or(0, |inode| inode.current.len() as u64);
            let growth = (offset + data.len() as u64).saturating_sub(current);
            if state.bytes_used() + growth > capacity {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device"));
            }
        }
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| io_error("file removed"))?;
        write_into(&mut inode.current, offset, data);
        inode.unsynced.push((offset, data.to_vec()));
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.state()?;
        let faults = state.faults;
        if state.chance(faults.sync_error_per_million) {
            return Err(io_error("simulated sync failure"));
        }
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| io_error("file removed"))?;
        inode.synced = inode.current.clone();
        inode.unsynced.clear();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let state = self.state()?;
        let inode = state.inodes.get(&self.inode).ok_or_else(|| io_error("file removed"))?;
        Ok(inode.current.len() as u64)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut state = self.state()?;
        let faults = state.faults;
        if let Some(capacity) = faults.capacity_bytes {
            let current =
                state.inodes.get(&self.inode).map_or(0, |inode| inode.current.len() as u64);
            if state.bytes_used() + len.saturating_sub(current) > capacity {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device"));
            }
        }
        let inode = state.inodes.get_mut(&self.inode).ok_or_else(|| io_error("file removed"))?;
        inode.current.resize(len as usize, 0);
        inode.unsynced.push((len, Vec::new()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_synced_bytes_and_the_synced_namespace() {
        let disk = SimDisk::new(1, Faults::default());
        let dir = Path::new("/data");
        disk.create_dir_all(dir).expect("dir");
        let path = dir.join("a");
        let mut file = disk.open(&path, true).expect("open");
        file.write_at(0, b"hello").expect("write");
        file.sync_data().expect("sync");
        disk.sync_dir(dir).expect("sync dir");
        file.write_at(5, b" world, not synced").expect("write");
        let unsynced = dir.join("b");
        disk.open(&unsynced, true).expect("create");
        disk.crash();
        let contents = disk.contents(&path).expect("a survives");
        assert!(contents.starts_with(b"hello"));
        assert!(disk.contents(&unsynced).is_none(), "an unsynced creation is undone");
        assert!(file.write_at(0, b"x").is_err(), "old handles fail after a crash");
    }

    #[test]
    fn a_full_disk_refuses_writes() {
        let disk = SimDisk::new(1, Faults { capacity_bytes: Some(10), ..Faults::default() });
        disk.create_dir_all(Path::new("/d")).expect("dir");
        let mut file = disk.open(Path::new("/d/f"), true).expect("open");
        file.write_at(0, b"12345").expect("fits");
        let error = file.write_at(5, b"too many bytes").expect_err("full");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn bad_sectors_fail_reads() {
        let disk = SimDisk::new(1, Faults::default());
        disk.create_dir_all(Path::new("/d")).expect("dir");
        let path = Path::new("/d/f");
        let mut file = disk.open(path, true).expect("open");
        file.write_at(0, &[7u8; 2048]).expect("write");
        disk.add_bad_sector(path, 1000).expect("bad sector");
        let mut buf = [0u8; 16];
        file.read_at(0, &mut buf).expect("first sector reads");
        assert!(file.read_at(1020, &mut buf).is_err());
    }
}
