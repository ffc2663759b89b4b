//! The identity index: which crash holds each report identity, so that a retried upload
//! answers with the crash it already made.
//!
//! It lives outside sled on purpose. sled keeps metadata in memory for every page it has
//! written, and identities are random keys, so in sled this index alone made the
//! server's RSS grow by about 20 bytes per stored crash (benches/README.md). Here it is
//! a set of open-addressing hash tables in plain files, read and written with
//! `pread`/`pwrite`: the kernel's page cache holds the hot parts, and that is not the
//! server's memory.
//!
//! sled stays the source of truth, and this index can always be rebuilt from the crash
//! blocks. Writes go to the files after their sled batch is applied, and are not synced
//! one by one. A **checkpoint** file says "every crash in a block below B is in the
//! files, durably"; it is written only after the files were synced. On open, the
//! blocks from B on are indexed again; without a valid checkpoint, all of them are.
//! An entry may therefore name a crash that is gone (a batch lost to a kill before its
//! flush, a delete after the last checkpoint): callers check that the crash found still
//! has the identity they asked for.
//!
//! Layout: `dir/{shard:02x}.idx` for 256 shards, chosen by the digest's first byte, so
//! that growing one table rewrites 1/256 of the index. A shard is a 32-byte header
//! ([`SHARD_MAGIC`], capacity u64 BE) then `capacity` entries of [`ENTRY_LEN`] bytes:
//! digest (16), block (u64 BE), slot (u16 BE), state (empty, live or dead), padding.
//! Lookups probe linearly from the slot the digest's bytes 8..16 name.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Location;

/// 16 bytes of sha256(identity).
pub(super) type Digest = [u8; 16];

const SHARDS: usize = 256;
const SHARD_MAGIC: &[u8; 8] = b"CBIDX001";
const CHECKPOINT_MAGIC: &[u8; 8] = b"CBIDCK01";
const CHECKPOINT_FILE: &str = "checkpoint";
const HEADER_LEN: u64 = 32;
const ENTRY_LEN: usize = 32;
/// Slots of a new shard; the files start sparse, so an empty index takes no disk.
const FIRST_CAPACITY: u64 = 1024;
/// Entries read per `pread` while probing: most probes end in the first read.
const READ_ENTRIES: u64 = 16;

const EMPTY: u8 = 0;
const LIVE: u8 = 1;
const DEAD: u8 = 2;

/// Byte 26 of an entry.
const STATE_AT: usize = 26;

struct Shard {
    path: PathBuf,
    file: Arc<File>,
    /// A power of two.
    capacity: u64,
    live: u64,
    dead: u64,
}

enum Probe {
    Found { position: u64, at: Location },
    Vacant { position: u64, was_dead: bool },
}

pub(super) struct IdentityIndex {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Written since the last [`IdentityIndex::take_dirty`].
    dirty: bool,
    /// A write failed: the files may lack entries, so no checkpoint may claim them.
    failed: bool,
}

impl IdentityIndex {
    /// Opens the index under `dir`, creating it when it is missing or unusable. Returns
    /// the index and the first block whose crashes may be missing from it: every crash
    /// in a block from there on must be indexed again.
    pub(super) fn open(dir: &Path) -> io::Result<(Self, u64)> {
        fs::create_dir_all(dir)?;
        let checkpoint = read_checkpoint(dir);
        let mut shards = Vec::with_capacity(SHARDS);
        if checkpoint.is_some() {
            for number in 0..SHARDS {
                match Shard::open(&shard_path(dir, number)) {
                    Ok(shard) => shards.push(shard),
                    Err(err) => {
                        tracing::warn!(shard = number, error = %err,
                            "identity index unreadable; rebuilding it from the crash blocks");
                        shards.clear();
                        break;
                    }
                }
            }
        }
        let from = match checkpoint {
            Some(bound) if shards.len() == SHARDS => bound,
            _ => {
                // Until the rebuilt index is synced, a kill must lead to another rebuild.
                remove_if_present(&dir.join(CHECKPOINT_FILE))?;
                shards = (0..SHARDS)
                    .map(|number| Shard::create(&shard_path(dir, number), FIRST_CAPACITY))
                    .collect::<io::Result<_>>()?;
                0
            }
        };
        Ok((
            IdentityIndex {
                dir: dir.to_owned(),
                shards,
                dirty: true,
                failed: false,
            },
            from,
        ))
    }

    pub(super) fn find(&self, digest: &Digest) -> io::Result<Option<Location>> {
        Ok(match self.shard(digest).probe(digest)? {
            Probe::Found { at, .. } => Some(at),
            Probe::Vacant { .. } => None,
        })
    }

    /// Points `digest` at `at`, replacing what it pointed at.
    pub(super) fn insert(&mut self, digest: &Digest, at: Location) -> io::Result<()> {
        self.dirty = true;
        let shard = &mut self.shards[usize::from(digest[0])];
        shard.make_room()?;
        match shard.probe(digest)? {
            Probe::Found { position, .. } => shard.write(position, &entry(digest, at, LIVE)),
            Probe::Vacant { position, was_dead } => {
                shard.write(position, &entry(digest, at, LIVE))?;
                shard.live += 1;
                if was_dead {
                    shard.dead = shard.dead.saturating_sub(1);
                }
                Ok(())
            }
        }
    }

    /// Removes `digest` if it points at `at` (and not at a crash that took it over).
    pub(super) fn remove(&mut self, digest: &Digest, at: Location) -> io::Result<()> {
        self.dirty = true;
        let shard = &mut self.shards[usize::from(digest[0])];
        if let Probe::Found {
            position,
            at: stored,
        } = shard.probe(digest)?
        {
            if stored == at {
                shard.write(position, &entry(digest, at, DEAD))?;
                shard.live = shard.live.saturating_sub(1);
                shard.dead += 1;
            }
        }
        Ok(())
    }

    /// Whether anything was written since the last call; the files to sync before a
    /// checkpoint can claim those writes.
    pub(super) fn take_dirty(&mut self) -> Option<Vec<Arc<File>>> {
        if self.failed {
            return None;
        }
        std::mem::take(&mut self.dirty)
            .then(|| self.shards.iter().map(|shard| shard.file.clone()).collect())
    }

    pub(super) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Records that every crash in a block below `bound` is in the files. Call it only
    /// after the files and the crash blocks were synced.
    pub(super) fn write_checkpoint(dir: &Path, bound: u64) -> io::Result<()> {
        let mut raw = CHECKPOINT_MAGIC.to_vec();
        raw.extend_from_slice(&bound.to_be_bytes());
        let temp = dir.join("checkpoint.tmp");
        let mut file = File::create(&temp)?;
        io::Write::write_all(&mut file, &raw)?;
        file.sync_all()?;
        fs::rename(&temp, dir.join(CHECKPOINT_FILE))?;
        File::open(dir)?.sync_all()
    }

    /// After a write to the files failed: no more checkpoints, and the next open
    /// rebuilds the files.
    pub(super) fn invalidate(&mut self) {
        self.failed = true;
        if let Err(err) = remove_if_present(&self.dir.join(CHECKPOINT_FILE)) {
            tracing::error!(error = %err, "cannot invalidate the identity index checkpoint");
        }
    }

    pub(super) fn failed(&self) -> bool {
        self.failed
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    fn shard(&self, digest: &Digest) -> &Shard {
        &self.shards[usize::from(digest[0])]
    }
}

fn shard_path(dir: &Path, number: usize) -> PathBuf {
    dir.join(format!("{number:02x}.idx"))
}

/// Removes a file and syncs its directory, so that a power cut cannot bring it back.
fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        Err(_) => Ok(()),
        Ok(()) => match path.parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        },
    }
}

fn read_checkpoint(dir: &Path) -> Option<u64> {
    let raw = fs::read(dir.join(CHECKPOINT_FILE)).ok()?;
    let bound = raw.strip_prefix(&CHECKPOINT_MAGIC[..])?;
    Some(u64::from_be_bytes(bound.try_into().ok()?))
}

fn entry(digest: &Digest, at: Location, state: u8) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    out[..16].copy_from_slice(digest);
    out[16..24].copy_from_slice(&at.block.to_be_bytes());
    out[24..26].copy_from_slice(&at.slot.to_be_bytes());
    out[STATE_AT] = state;
    out
}

fn entry_location(raw: &[u8]) -> Location {
    Location {
        block: u64::from_be_bytes(raw[16..24].try_into().expect("8 bytes")),
        slot: u16::from_be_bytes([raw[24], raw[25]]),
    }
}

/// The slot a digest's probe starts at. Bytes 8..16: byte 0 chose the shard.
fn home(digest: &Digest, capacity: u64) -> u64 {
    u64::from_be_bytes(digest[8..16].try_into().expect("8 bytes")) & (capacity - 1)
}

fn header(capacity: u64) -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    out[..8].copy_from_slice(SHARD_MAGIC);
    out[8..16].copy_from_slice(&capacity.to_be_bytes());
    out
}

impl Shard {
    fn create(path: &Path, capacity: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.write_all_at(&header(capacity), 0)?;
        file.set_len(HEADER_LEN + capacity * ENTRY_LEN as u64)?;
        Ok(Shard {
            path: path.to_owned(),
            file: Arc::new(file),
            capacity,
            live: 0,
            dead: 0,
        })
    }

    /// Opens a shard and counts its entries; any doubt about its shape is an error.
    fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut head = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut head, 0)?;
        let capacity = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
        let damaged = |problem: &str| io::Error::new(io::ErrorKind::InvalidData, problem);
        if &head[..8] != SHARD_MAGIC || !capacity.is_power_of_two() || capacity > 1 << 40 {
            return Err(damaged("bad header"));
        }
        if file.metadata()?.len() != HEADER_LEN + capacity * ENTRY_LEN as u64 {
            return Err(damaged("wrong length"));
        }
        let (mut live, mut dead) = (0, 0);
        let mut buffer = vec![0u8; 4096 * ENTRY_LEN];
        let mut position = 0;
        while position < capacity {
            let n = (capacity - position).min(4096);
            let chunk = &mut buffer[..n as usize * ENTRY_LEN];
            file.read_exact_at(chunk, HEADER_LEN + position * ENTRY_LEN as u64)?;
            for raw in chunk.chunks_exact(ENTRY_LEN) {
                match raw[STATE_AT] {
                    EMPTY => {}
                    LIVE => live += 1,
                    _ => dead += 1,
                }
            }
            position += n;
        }
        Ok(Shard {
            path: path.to_owned(),
            file: Arc::new(file),
            capacity,
            live,
            dead,
        })
    }

    fn write(&self, position: u64, raw: &[u8; ENTRY_LEN]) -> io::Result<()> {
        self.file
            .write_all_at(raw, HEADER_LEN + position * ENTRY_LEN as u64)
    }

    /// Walks the probe sequence of `digest` to its entry or to the first free slot
    /// (a dead one before an empty one).
    fn probe(&self, digest: &Digest) -> io::Result<Probe> {
        let mask = self.capacity - 1;
        let mut position = home(digest, self.capacity);
        let mut first_dead = None;
        let mut seen = 0;
        let mut buffer = [0u8; READ_ENTRIES as usize * ENTRY_LEN];
        while seen < self.capacity {
            // Reads stop at the end of the table and go on from its start.
            let n = READ_ENTRIES
                .min(self.capacity - position)
                .min(self.capacity - seen);
            let chunk = &mut buffer[..n as usize * ENTRY_LEN];
            self.file
                .read_exact_at(chunk, HEADER_LEN + position * ENTRY_LEN as u64)?;
            for (i, raw) in chunk.chunks_exact(ENTRY_LEN).enumerate() {
                let here = position + i as u64;
                match raw[STATE_AT] {
                    EMPTY => {
                        return Ok(Probe::Vacant {
                            position: first_dead.unwrap_or(here),
                            was_dead: first_dead.is_some(),
                        })
                    }
                    LIVE if raw[..16] == digest[..] => {
                        return Ok(Probe::Found {
                            position: here,
                            at: entry_location(raw),
                        })
                    }
                    LIVE => {}
                    // Dead, or a damaged state byte: skipped, and reusable.
                    _ => {
                        first_dead.get_or_insert(here);
                    }
                }
            }
            seen += n;
            position = (position + n) & mask;
        }
        match first_dead {
            Some(position) => Ok(Probe::Vacant {
                position,
                was_dead: true,
            }),
            None => Err(io::Error::other("identity index shard is full")),
        }
    }

    /// Rewrites the table bigger (or just without dead entries) before it is 70% used,
    /// so probes stay short.
    fn make_room(&mut self) -> io::Result<()> {
        if (self.live + self.dead + 1) * 10 <= self.capacity * 7 {
            return Ok(());
        }
        let mut capacity = FIRST_CAPACITY;
        while (self.live + 1) * 10 > capacity * 4 {
            capacity *= 2;
        }
        let mut old = vec![0u8; self.capacity as usize * ENTRY_LEN];
        self.file.read_exact_at(&mut old, HEADER_LEN)?;
        let mut table = vec![0u8; capacity as usize * ENTRY_LEN];
        let mask = capacity - 1;
        let mut live = 0;
        for raw in old.chunks_exact(ENTRY_LEN) {
            if raw[STATE_AT] != LIVE {
                continue;
            }
            let digest: &Digest = raw[..16].try_into().expect("16 bytes");
            let mut position = home(digest, capacity);
            while table[position as usize * ENTRY_LEN + STATE_AT] != EMPTY {
                position = (position + 1) & mask;
            }
            let at = position as usize * ENTRY_LEN;
            table[at..at + ENTRY_LEN].copy_from_slice(raw);
            live += 1;
        }
        // A new file, synced, then renamed over the old one: a kill at any point leaves
        // one whole table or the other, each holding everything the checkpoint claims.
        let temp = self.path.with_extension("idx.tmp");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all_at(&header(capacity), 0)?;
        file.write_all_at(&table, HEADER_LEN)?;
        file.sync_all()?;
        fs::rename(&temp, &self.path)?;
        self.file = Arc::new(file);
        self.capacity = capacity;
        self.live = live;
        self.dead = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u64) -> Digest {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(n.to_be_bytes());
        hash[..16].try_into().unwrap()
    }

    fn at(n: u64) -> Location {
        Location {
            block: n << 16,
            slot: (n % 7) as u16,
        }
    }

    #[test]
    fn entries_survive_growth_removal_and_a_checkpointed_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut index, from) = IdentityIndex::open(dir.path()).unwrap();
        assert_eq!(from, 0);
        // Enough for every shard to grow a few times.
        const N: u64 = 1_500_000 / 8;
        for n in 0..N {
            index.insert(&digest(n), at(n)).unwrap();
        }
        for n in (0..N).step_by(3) {
            index.remove(&digest(n), at(n)).unwrap();
        }
        // Not its location: stays.
        index.remove(&digest(1), at(2)).unwrap();
        // A new location replaces the old one.
        index.insert(&digest(4), at(40)).unwrap();
        let check = |index: &IdentityIndex| {
            for n in 0..N {
                let expected = match n {
                    4 => Some(at(40)),
                    n if n % 3 == 0 => None,
                    n => Some(at(n)),
                };
                assert_eq!(index.find(&digest(n)).unwrap(), expected, "digest {n}");
            }
        };
        check(&index);
        let live: u64 = index.shards.iter().map(|s| s.live).sum();
        assert_eq!(live, N - N.div_ceil(3));

        for file in index.take_dirty().unwrap() {
            file.sync_all().unwrap();
        }
        assert!(index.take_dirty().is_none(), "nothing written since");
        IdentityIndex::write_checkpoint(dir.path(), 77).unwrap();
        drop(index);
        let (index, from) = IdentityIndex::open(dir.path()).unwrap();
        assert_eq!(from, 77);
        check(&index);
        let live: u64 = index.shards.iter().map(|s| s.live).sum();
        assert_eq!(live, N - N.div_ceil(3), "counted again on open");
    }

    #[test]
    fn no_checkpoint_or_a_damaged_shard_means_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let (mut index, _) = IdentityIndex::open(dir.path()).unwrap();
        index.insert(&digest(1), at(1)).unwrap();
        drop(index);
        // Killed before any checkpoint: everything is indexed again from block 0.
        let (index, from) = IdentityIndex::open(dir.path()).unwrap();
        assert_eq!(from, 0);
        assert_eq!(index.find(&digest(1)).unwrap(), None, "files start over");

        IdentityIndex::write_checkpoint(dir.path(), 5).unwrap();
        drop(index);
        std::fs::write(shard_path(dir.path(), 3), b"CBIDX001 and then nonsense").unwrap();
        let (mut index, from) = IdentityIndex::open(dir.path()).unwrap();
        assert_eq!(from, 0);
        assert!(index.shards.iter().all(|s| s.live == 0));
        IdentityIndex::write_checkpoint(dir.path(), 5).unwrap();
        index.invalidate();
        assert!(read_checkpoint(dir.path()).is_none());
        index.insert(&digest(2), at(2)).unwrap();
        assert!(
            index.take_dirty().is_none(),
            "no checkpoint after a failed write"
        );
    }

    #[test]
    fn damaged_entries_read_as_free_slots() {
        let dir = tempfile::tempdir().unwrap();
        let (mut index, _) = IdentityIndex::open(dir.path()).unwrap();
        let d = digest(9);
        index.insert(&d, at(9)).unwrap();
        let shard = &index.shards[usize::from(d[0])];
        let position = home(&d, shard.capacity);
        let mut raw = entry(&d, at(9), LIVE);
        raw[STATE_AT] = 0xee;
        shard.write(position, &raw).unwrap();
        assert_eq!(index.find(&d).unwrap(), None);
        index.insert(&d, at(10)).unwrap();
        assert_eq!(index.find(&d).unwrap(), Some(at(10)));
    }
}
