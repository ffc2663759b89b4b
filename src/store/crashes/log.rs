//! The crash log: every stored crash record (deflated JSON) in append-only segment files
//! under `DATA_DIR/crashes/`.
//!
//! Records are not sled values because sled keeps about 90 bytes of metadata in memory
//! for every page it has written, for as long as the page exists. With records inside
//! sled a page held about ten crashes, and the server's RSS grew by ~8 bytes per stored
//! crash without bound (benches/README.md). Here records cost page cache only, and
//! sled's blocks hold 18 bytes per crash saying where each record is.
//!
//! A segment `{n:08x}.seg` is a run of frames `[len u32 BE][record]`. Only the writer
//! appends (under the crash writer lock), an insert batch starts a new segment once the
//! current one holds [`SEGMENT_MAX`] bytes, and every process starts a segment of its own, so a tail torn by a kill is
//! never written after. A batch's frames are written and synced before the sled batch
//! that names them is applied: sled never points at bytes a power cut could take. A
//! record that is deleted or replaced is overwritten with zeros, and a segment no block
//! names any more is deleted.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A new segment is started once the current one holds this much.
const SEGMENT_MAX: u64 = 64 << 20;
const FRAME_HEADER: u64 = 4;

/// Where one record is: its segment, the offset of its first byte (after the frame
/// header) and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordRef {
    pub segment: u32,
    pub offset: u64,
    pub len: u32,
}

impl RecordRef {
    pub const ENCODED_LEN: usize = 16;

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.segment.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
    }

    pub fn decode(raw: &[u8]) -> Option<Self> {
        let raw: &[u8; Self::ENCODED_LEN] = raw.get(..Self::ENCODED_LEN)?.try_into().ok()?;
        Some(RecordRef {
            segment: u32::from_be_bytes(raw[0..4].try_into().ok()?),
            offset: u64::from_be_bytes(raw[4..12].try_into().ok()?),
            len: u32::from_be_bytes(raw[12..16].try_into().ok()?),
        })
    }
}

pub(super) struct CrashLog {
    dir: PathBuf,
    /// Segments opened for reading, by number.
    readers: RwLock<HashMap<u32, Arc<File>>>,
}

/// The segment being appended to; owned by the crash writer lock.
pub(super) struct LogWriter {
    segment: u32,
    file: Arc<File>,
    len: u64,
}

/// Frames for the writer's segment, collected during one batch.
pub(super) struct Appends {
    segment: u32,
    base: u64,
    frames: Vec<u8>,
}

impl Appends {
    pub fn new(writer: &LogWriter) -> Self {
        Appends {
            segment: writer.segment,
            base: writer.len,
            frames: Vec::new(),
        }
    }

    /// An empty set, for transactions that only read.
    pub fn none() -> Self {
        Appends {
            segment: u32::MAX,
            base: u64::MAX,
            frames: Vec::new(),
        }
    }

    pub fn push(&mut self, record: &[u8]) -> RecordRef {
        let len = u32::try_from(record.len()).expect("records are far below 4 GiB");
        let offset = self.base + self.frames.len() as u64 + FRAME_HEADER;
        self.frames.extend_from_slice(&len.to_be_bytes());
        self.frames.extend_from_slice(record);
        RecordRef {
            segment: self.segment,
            offset,
            len,
        }
    }

    /// The bytes of a record pushed here, if it was.
    pub fn get(&self, at: RecordRef) -> Option<&[u8]> {
        if at.segment != self.segment || at.offset < self.base {
            return None;
        }
        let start = usize::try_from(at.offset - self.base).ok()?;
        self.frames.get(start..start.checked_add(at.len as usize)?)
    }
}

fn segment_name(segment: u32) -> String {
    format!("{segment:08x}.seg")
}

impl CrashLog {
    /// Opens the log under `dir` and starts a new segment to write to.
    pub fn open(dir: &Path) -> io::Result<(Self, LogWriter)> {
        fs::create_dir_all(dir)?;
        let log = CrashLog {
            dir: dir.to_owned(),
            readers: RwLock::new(HashMap::new()),
        };
        let next = match log.segments()?.last() {
            None => 0,
            Some(&last) => last
                .checked_add(1)
                .ok_or_else(|| io::Error::other("crash log segment numbers exhausted"))?,
        };
        let writer = log.create_segment(next)?;
        Ok((log, writer))
    }

    fn create_segment(&self, segment: u32) -> io::Result<LogWriter> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.dir.join(segment_name(segment)))?;
        // The new name must survive a power cut before sled points into the file.
        File::open(&self.dir)?.sync_all()?;
        let file = Arc::new(file);
        self.readers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(segment, file.clone());
        Ok(LogWriter {
            segment,
            file,
            len: 0,
        })
    }

    /// Segment numbers on disk, ascending.
    pub fn segments(&self) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(number) = name
                .strip_suffix(".seg")
                .filter(|hex| hex.len() == 8)
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            {
                out.push(number);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn reader(&self, segment: u32) -> io::Result<Arc<File>> {
        if let Some(file) = self
            .readers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&segment)
        {
            return Ok(file.clone());
        }
        // Opened under the write lock, which `remove_segment` holds while it unlinks:
        // a handle to a deleted segment never enters the map.
        let mut readers = self
            .readers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(file) = readers.get(&segment) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(self.dir.join(segment_name(segment)))?);
        readers.insert(segment, file.clone());
        Ok(file)
    }

    pub fn read(&self, at: RecordRef) -> io::Result<Vec<u8>> {
        let file = self.reader(at.segment)?;
        // A damaged block could name any length: check it before allocating.
        within(file.metadata()?.len(), at)?;
        let mut out = vec![0u8; at.len as usize];
        file.read_exact_at(&mut out, at.offset)?;
        Ok(out)
    }

    /// Overwrites records that no block names any more, opening each segment once.
    pub fn erase(&self, records: &[RecordRef]) -> io::Result<()> {
        let mut by_segment: HashMap<u32, Vec<RecordRef>> = HashMap::new();
        for record in records {
            by_segment.entry(record.segment).or_default().push(*record);
        }
        for (segment, records) in by_segment {
            let file = OpenOptions::new()
                .write(true)
                .open(self.dir.join(segment_name(segment)))?;
            let len = file.metadata()?.len();
            for at in records {
                within(len, at)?;
                file.write_all_at(&vec![0u8; at.len as usize], at.offset)?;
            }
        }
        Ok(())
    }

    pub fn remove_segment(&self, segment: u32) -> io::Result<()> {
        let mut readers = self
            .readers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        readers.remove(&segment);
        fs::remove_file(self.dir.join(segment_name(segment)))
    }
}

/// Whether `at` lies inside a segment of `len` bytes.
fn within(len: u64, at: RecordRef) -> io::Result<()> {
    let end = at.offset.checked_add(u64::from(at.len));
    if end.is_some_and(|end| end <= len) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "record reference past the end of its segment",
        ))
    }
}

impl LogWriter {
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// Moves to a new segment when this one is full; call it before collecting appends.
    pub fn roll_if_full(&mut self, log: &CrashLog) -> io::Result<()> {
        if self.len >= SEGMENT_MAX {
            let next = self
                .segment
                .checked_add(1)
                .ok_or_else(|| io::Error::other("crash log segment numbers exhausted"))?;
            *self = log.create_segment(next)?;
        }
        Ok(())
    }

    /// Writes a batch's frames and syncs them. A failed write leaves `len` alone, so
    /// the next batch writes over whatever part of it reached the file.
    pub fn append(&mut self, appends: &Appends) -> io::Result<()> {
        if appends.frames.is_empty() {
            return Ok(());
        }
        if appends.segment != self.segment || appends.base != self.len {
            return Err(io::Error::other("crash log appends out of order"));
        }
        self.file.write_all_at(&appends.frames, self.len)?;
        self.file.sync_data()?;
        self.len += appends.frames.len() as u64;
        Ok(())
    }
}

/// The records in a segment file's bytes, skipping erased ones; for tools and tests
/// that read the store's files directly.
pub fn segment_records(raw: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = raw;
    while rest.len() >= FRAME_HEADER as usize {
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let Some(record) = rest.get(4..4 + len) else {
            break;
        };
        if record.iter().any(|&b| b != 0) {
            out.push(record);
        }
        rest = &rest[4 + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_read_back_erase_and_roll() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut writer) = CrashLog::open(dir.path()).unwrap();
        let mut appends = Appends::new(&writer);
        let a = appends.push(b"first");
        let b = appends.push(b"second");
        assert_eq!(appends.get(b), Some(&b"second"[..]));
        writer.append(&appends).unwrap();
        assert_eq!(log.read(a).unwrap(), b"first");
        assert_eq!(log.read(b).unwrap(), b"second");
        // Out of order: refused.
        assert!(writer.append(&appends).is_err());

        log.erase(&[a]).unwrap();
        let raw = std::fs::read(dir.path().join(segment_name(writer.segment()))).unwrap();
        assert_eq!(segment_records(&raw), vec![&b"second"[..]]);

        writer.len = SEGMENT_MAX;
        writer.roll_if_full(&log).unwrap();
        assert_eq!(writer.segment(), 1);
        let mut appends = Appends::new(&writer);
        let c = appends.push(b"third");
        writer.append(&appends).unwrap();
        assert_eq!(log.read(c).unwrap(), b"third");

        // A new process never appends to an old segment.
        drop((log, writer));
        let (log, writer) = CrashLog::open(dir.path()).unwrap();
        assert_eq!(writer.segment(), 2);
        assert_eq!(log.segments().unwrap(), vec![0, 1, 2]);
        assert_eq!(log.read(b).unwrap(), b"second");
        let past_end = RecordRef {
            offset: 1 << 40,
            ..b
        };
        assert!(log.read(past_end).is_err());
        assert!(log.erase(&[past_end]).is_err());
        log.remove_segment(0).unwrap();
        assert!(log.read(b).is_err());

        let mut encoded = Vec::new();
        c.encode(&mut encoded);
        assert_eq!(RecordRef::decode(&encoded), Some(c));
        assert_eq!(RecordRef::decode(&encoded[1..]), None);
    }
}
