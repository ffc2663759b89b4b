//! The crash log: every stored crash record (deflated JSON) in append-only segment files
//! under `DATA_DIR/crashes/`.
//!
//! Records are not sled values because sled keeps about 90 bytes of metadata in memory
//! for every page it has written, for as long as the page exists. With records inside
//! sled a page held about ten crashes, and the server's RSS grew by ~8 bytes per stored
//! crash without bound (benches/README.md). Here records cost page cache only, and
//! sled's blocks hold 18 bytes per crash saying where each record is.
//!
//! The log is also the crash store's write-ahead log. Inserts are durable once their
//! frames are synced; the sled writes that name them are collected in memory and
//! applied about twice a second, each application recording how far into the log sled
//! is ([`LogPosition`]). On open, the insert frames past that point are applied again
//! from their tags (see `Crashes::open`).
//!
//! A segment `{n:08x}.seg` is a run of frames `[len u32 BE][tag][record]`, the tag
//! being the frame's [`FrameKind`] (u8) and the crash's block (u64 BE) and slot (u16
//! BE). Only the writer
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
/// Length, kind, block and slot.
const FRAME_HEADER: u64 = 4 + 1 + 8 + 2;

/// Why a record was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameKind {
    /// A new crash: replayed on open when sled had not taken it yet.
    Insert = 1,
    /// A new version of a stored crash: never replayed, as updates reach sled before
    /// they return; one a kill interrupted is a record no block names.
    Update = 2,
}

/// What a frame says about its record, for replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameTag {
    pub kind: FrameKind,
    pub block: u64,
    pub slot: u16,
}

/// A whole frame read back: its tag, where its record is, and the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Frame {
    pub tag: FrameTag,
    pub record: RecordRef,
    pub bytes: Vec<u8>,
}

/// A point in the log: everything before it (in this segment and older ones) is in
/// sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LogPosition {
    pub segment: u32,
    pub offset: u64,
}

impl LogPosition {
    pub const ENCODED_LEN: usize = 12;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        out.extend_from_slice(&self.segment.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out
    }

    pub fn decode(raw: &[u8]) -> Option<Self> {
        let raw: &[u8; Self::ENCODED_LEN] = raw.try_into().ok()?;
        Some(LogPosition {
            segment: u32::from_be_bytes(raw[0..4].try_into().ok()?),
            offset: u64::from_be_bytes(raw[4..12].try_into().ok()?),
        })
    }
}

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

    pub fn push(&mut self, record: &[u8], tag: FrameTag) -> RecordRef {
        let len = u32::try_from(record.len()).expect("records are far below 4 GiB");
        let offset = self.base + self.frames.len() as u64 + FRAME_HEADER;
        self.frames.extend_from_slice(&len.to_be_bytes());
        self.frames.push(tag.kind as u8);
        self.frames.extend_from_slice(&tag.block.to_be_bytes());
        self.frames.extend_from_slice(&tag.slot.to_be_bytes());
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

    /// The frames from `from` on, in every segment before `until`, each segment up to
    /// its first frame that is torn (a kill mid-write) or not a frame at all. Only the tail past sled's position (about
    /// half a second of crashes) should lie beyond `from`, but a segment is streamed,
    /// not read whole.
    pub fn frames_after(&self, from: LogPosition, until: u32) -> io::Result<Vec<Frame>> {
        let mut frames = Vec::new();
        for segment in self.segments()? {
            if segment < from.segment || segment >= until {
                continue;
            }
            let file = File::open(self.dir.join(segment_name(segment)))?;
            let size = file.metadata()?.len();
            let mut at = if segment == from.segment {
                from.offset
            } else {
                0
            };
            let mut reader = io::BufReader::with_capacity(1 << 20, file);
            io::Seek::seek(&mut reader, io::SeekFrom::Start(at))?;
            let mut header = [0u8; FRAME_HEADER as usize];
            // The sizes are checked first, so a failed read is the disk's, not a tail.
            while size.saturating_sub(at) >= FRAME_HEADER {
                io::Read::read_exact(&mut reader, &mut header)?;
                let Some((tag, len)) = parse_header(&header) else {
                    break;
                };
                let offset = at + FRAME_HEADER;
                if size.saturating_sub(offset) < u64::from(len) {
                    break;
                }
                let mut bytes = vec![0u8; len as usize];
                io::Read::read_exact(&mut reader, &mut bytes)?;
                let record = RecordRef {
                    segment,
                    offset,
                    len,
                };
                frames.push(Frame { tag, record, bytes });
                at = offset + u64::from(len);
            }
        }
        Ok(frames)
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

    /// The end of what has been appended.
    pub fn position(&self) -> LogPosition {
        LogPosition {
            segment: self.segment,
            offset: self.len,
        }
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

    /// Writes a batch's frames and syncs them. A failed write leaves `len` alone and
    /// cuts the file back to it: replay reads whole frames past sled's position, and
    /// must not find the frames of a batch that was answered with an error.
    pub fn append(&mut self, appends: &Appends) -> io::Result<()> {
        if appends.frames.is_empty() {
            return Ok(());
        }
        if appends.segment != self.segment || appends.base != self.len {
            return Err(io::Error::other("crash log appends out of order"));
        }
        let written = self
            .file
            .write_all_at(&appends.frames, self.len)
            .and_then(|()| self.file.sync_data());
        if let Err(err) = written {
            // Best effort: a disk that failed the write may fail this too, and then
            // replay may store crashes whose upload failed (a retry finds them).
            let _ = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data());
            return Err(err);
        }
        self.len += appends.frames.len() as u64;
        Ok(())
    }
}

/// The tag and record length a frame header says.
fn parse_header(header: &[u8; FRAME_HEADER as usize]) -> Option<(FrameTag, u32)> {
    let kind = match header[4] {
        1 => FrameKind::Insert,
        2 => FrameKind::Update,
        _ => return None,
    };
    let tag = FrameTag {
        kind,
        block: u64::from_be_bytes(header[5..13].try_into().ok()?),
        slot: u16::from_be_bytes(header[13..15].try_into().ok()?),
    };
    Some((tag, u32::from_be_bytes(header[0..4].try_into().ok()?)))
}

/// The tag and record length of the whole frame `raw` starts with; `None` when `raw`
/// is shorter than the frame or does not start with one.
fn parse_frame(raw: &[u8]) -> Option<(FrameTag, u32)> {
    let header = raw.get(..FRAME_HEADER as usize)?.try_into().ok()?;
    let (tag, len) = parse_header(header)?;
    let end = (FRAME_HEADER as usize).checked_add(len as usize)?;
    (raw.len() >= end).then_some((tag, len))
}

/// The records in a segment file's bytes, skipping erased ones; for tools and tests
/// that read the store's files directly.
pub fn segment_records(raw: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some((_, len)) = parse_frame(rest) {
        let start = FRAME_HEADER as usize;
        let record = &rest[start..start + len as usize];
        if record.iter().any(|&b| b != 0) {
            out.push(record);
        }
        rest = &rest[start + len as usize..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(slot: u16) -> FrameTag {
        FrameTag {
            kind: FrameKind::Insert,
            block: 7,
            slot,
        }
    }

    #[test]
    fn appends_read_back_erase_and_roll() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut writer) = CrashLog::open(dir.path()).unwrap();
        let mut appends = Appends::new(&writer);
        let a = appends.push(b"first", tag(0));
        let b = appends.push(b"second", tag(1));
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
        let c = appends.push(b"third", tag(2));
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

    #[test]
    fn frames_after_a_position_stop_at_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut writer) = CrashLog::open(dir.path()).unwrap();
        let mut appends = Appends::new(&writer);
        appends.push(b"applied", tag(0));
        writer.append(&appends).unwrap();
        let applied = writer.position();
        let mut appends = Appends::new(&writer);
        let b = appends.push(b"pending", tag(1));
        let update = FrameTag {
            kind: FrameKind::Update,
            ..tag(0)
        };
        let c = appends.push(b"update", update);
        writer.append(&appends).unwrap();
        let end = writer.position();
        // A kill mid-write: half a frame after the last whole one.
        let path = dir.path().join(segment_name(writer.segment()));
        let mut raw = std::fs::read(&path).unwrap();
        raw.extend_from_slice(&[0, 0, 0, 9, 1, 0, 0]);
        std::fs::write(&path, raw).unwrap();

        let frames = log.frames_after(applied, u32::MAX).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame {
                    tag: tag(1),
                    record: b,
                    bytes: b"pending".to_vec()
                },
                Frame {
                    tag: update,
                    record: c,
                    bytes: b"update".to_vec()
                }
            ]
        );
        // The segment a process writes to is left out, and so is everything before
        // the position.
        assert!(log
            .frames_after(applied, writer.segment())
            .unwrap()
            .is_empty());
        // From the end of the whole frames, the torn tail is not a frame.
        assert!(log.frames_after(end, u32::MAX).unwrap().is_empty());
        let decoded = LogPosition::decode(&end.encode()).unwrap();
        assert_eq!(decoded, end);
    }
}
