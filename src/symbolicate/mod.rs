//! Turning a report's raw addresses into functions, files, lines and inlined frames.
//!
//! For each frame: find its image by address (binary search over the images sorted by
//! load address), take the address relative to the image, and look it up in the
//! image's SymCache. Caller frames hold return addresses, which point just past the
//! call; they are looked up at `pc − 1` so that a call that is the last instruction of
//! a function (a `noreturn` call to `abort`, say) resolves to its caller and not to
//! whatever function comes next. The first frame of each thread is the exact pc.
//!
//! The lookup yields the inline chain innermost first; each inlined function becomes a
//! frame of its own with `inlined: true`, before the frame it was inlined into, as
//! llvm-symbolizer `--inlines` and Xcode show them.
//!
//! Where no debug file is known, a symbol the report already carried (system frames in
//! Apple reports) is kept with status `os_symbol`, as Apple does.

mod cache;
mod swift3;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::report::{CrashReport, Image, RawFrame};

pub use cache::{demangle, LoadedSymCache, SymCacheCache};

/// Where SymCaches come from: the server's debug-file store, or the offline CLI's
/// `--dsyms` paths.
pub trait DebugFileSource: Send + Sync {
    /// The SymCache of a debug id, preferring `arch` when several are stored.
    fn by_debug_id(&self, debug_id: &str, arch: Option<&str>) -> Option<Arc<LoadedSymCache>>;
    /// For images a report names without a debug id (`callStackSymbols`): the debug
    /// file of that name, within `release` when the source knows releases. Returns the
    /// debug id found with it.
    fn by_name(&self, name: &str, release: Option<&str>) -> Option<(String, Arc<LoadedSymCache>)>;
}

/// No debug files at all: symbolication then only sorts frames into images and keeps
/// the symbols reports carry. For tests, and for reading a report before any upload.
pub struct NoDebugFiles;

impl DebugFileSource for NoDebugFiles {
    fn by_debug_id(&self, _: &str, _: Option<&str>) -> Option<Arc<LoadedSymCache>> {
        None
    }

    fn by_name(&self, _: &str, _: Option<&str>) -> Option<(String, Arc<LoadedSymCache>)> {
        None
    }
}

/// How far symbolication got for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameStatus {
    /// Function (and file and line, when the debug file has them) came from a debug file.
    Symbolicated,
    /// The image is known but nobody uploaded its debug file.
    MissingDebugFile,
    /// No image of the report contains the address.
    UnknownImage,
    /// No debug file, but the report carried a symbol name, which is kept.
    OsSymbol,
    /// The address cannot be right: zero, or not covered by its image's debug file.
    Malformed,
}

/// One symbolicated frame. An inlined call is a frame of its own.
///
/// Names are shared strings: a function's demangled name comes from its debug file's
/// demangle table, and image and debug id from the image, so a frame (and each inline
/// level of it) copies pointers rather than text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub instruction_addr: u64,
    /// Address relative to the image's load address, when the image is known.
    pub relative_addr: Option<u64>,
    pub image: Option<Arc<str>>,
    pub debug_id: Option<Arc<str>>,
    pub status: FrameStatus,
    /// Demangled function name.
    pub function: Option<Arc<str>>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    /// The function's start, relative to the image, to print `symbol + offset`.
    pub function_addr: Option<u64>,
    /// In the app's own code: the main binary or a framework inside its bundle.
    pub in_app: bool,
    /// Inlined into the next frame.
    pub inlined: bool,
}

/// A thread after symbolication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolicatedThread {
    pub index: usize,
    pub name: Option<String>,
    pub queue: Option<String>,
    pub crashed: bool,
    pub frames: Vec<Frame>,
}

/// An image after symbolication: whether its debug file was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageStatus {
    pub name: String,
    pub path: Option<String>,
    /// The report's debug id, or the one found by name.
    pub debug_id: Option<String>,
    pub load_address: u64,
    pub size: Option<u64>,
    pub arch: Option<String>,
    pub in_app: bool,
    /// A frame needed this image's debug file.
    pub referenced: bool,
    /// Its debug file was found.
    pub debug_file_found: bool,
}

/// A report's threads and images, symbolicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolicatedCrash {
    pub threads: Vec<SymbolicatedThread>,
    pub last_exception_backtrace: Option<Vec<Frame>>,
    pub images: Vec<ImageStatus>,
}

impl SymbolicatedCrash {
    /// Debug ids that frames needed and no debug file answered: the "missing dSYMs".
    pub fn missing_debug_ids(&self) -> impl Iterator<Item = &ImageStatus> {
        self.images
            .iter()
            .filter(|i| i.referenced && !i.debug_file_found && i.debug_id.is_some())
    }

    /// The thread that crashed, if the report says.
    pub fn crashed_thread(&self) -> Option<&SymbolicatedThread> {
        self.threads.iter().find(|t| t.crashed)
    }
}

/// Per-image state during one symbolication.
struct ImageSlot {
    status: ImageStatus,
    /// `status.name` and `status.debug_id`, shared by all of the image's frames.
    name: Arc<str>,
    debug_id: Option<Arc<str>>,
    symcache: Option<Arc<LoadedSymCache>>,
    resolved: bool,
}

/// Symbolicates `report` with debug files from `source`.
pub fn symbolicate(report: &CrashReport, source: &dyn DebugFileSource) -> SymbolicatedCrash {
    let release = release_of(report);
    let mut slots: Vec<ImageSlot> = report
        .images
        .iter()
        .map(|image| ImageSlot {
            status: ImageStatus {
                name: image.name.clone(),
                path: image.path.clone(),
                debug_id: image.debug_id.clone(),
                load_address: image.load_address,
                size: image.size,
                arch: image.arch.clone().or_else(|| report.arch.clone()),
                in_app: is_in_app(image, report),
                referenced: false,
                debug_file_found: false,
            },
            name: Arc::from(image.name.as_str()),
            debug_id: image.debug_id.as_deref().map(Arc::from),
            symcache: None,
            resolved: false,
        })
        .collect();
    let index = ImageIndex::new(&report.images);
    let mut walk = |frames: &[RawFrame], first_is_pc: bool| -> Vec<Frame> {
        let mut out = Vec::with_capacity(frames.len());
        for (i, raw) in frames.iter().enumerate() {
            let exact = first_is_pc && i == 0;
            symbolicate_frame(
                raw,
                exact,
                &index,
                &mut slots,
                source,
                release.as_deref(),
                &mut out,
            );
        }
        out
    };
    let threads = report
        .threads
        .iter()
        .map(|thread| SymbolicatedThread {
            index: thread.index,
            name: thread.name.clone(),
            queue: thread.queue.clone(),
            crashed: thread.crashed,
            frames: walk(&thread.frames, true),
        })
        .collect();
    // Every address of an exception backtrace is a return address.
    let last_exception_backtrace = report
        .last_exception_backtrace
        .as_ref()
        .map(|frames| walk(frames, false));
    SymbolicatedCrash {
        threads,
        last_exception_backtrace,
        images: slots.into_iter().map(|s| s.status).collect(),
    }
}

/// `bundle version (build)`, the release a report belongs to, when the report says.
pub fn release_of(report: &CrashReport) -> Option<String> {
    let app = &report.app;
    let version = app.version.as_deref()?;
    let mut release = match &app.bundle_id {
        Some(bundle) => format!("{bundle} {version}"),
        None => version.to_owned(),
    };
    if let Some(build) = &app.build {
        release.push_str(&format!(" ({build})"));
    }
    Some(release)
}

fn symbolicate_frame(
    raw: &RawFrame,
    exact: bool,
    index: &ImageIndex,
    slots: &mut [ImageSlot],
    source: &dyn DebugFileSource,
    release: Option<&str>,
    out: &mut Vec<Frame>,
) {
    let addr = raw.instruction_addr;
    let mut frame = Frame {
        instruction_addr: addr,
        relative_addr: None,
        // Set below: the image slot's shared name, or the report's name for frames
        // outside every image (no per-frame copy when the image is known).
        image: None,
        debug_id: None,
        status: FrameStatus::UnknownImage,
        function: raw.symbol.as_deref().map(Arc::from),
        file: None,
        line: None,
        function_addr: None,
        in_app: false,
        inlined: false,
    };
    let Some(slot_index) = (addr != 0).then(|| index.find(addr)).flatten() else {
        // Outside every image: the name the report carried is all there is.
        frame.image = raw.image_name.as_deref().map(Arc::from);
        if addr == 0 {
            frame.status = FrameStatus::Malformed;
        } else if raw.symbol.is_some() {
            // callStackSymbols name system frames without any image address, as for
            // Apple's system frames.
            frame.status = FrameStatus::OsSymbol;
        }
        out.push(frame);
        return;
    };
    let slot = &mut slots[slot_index];
    let relative = addr - slot.status.load_address;
    frame.relative_addr = Some(relative);
    frame.image = Some(slot.name.clone());
    slot.status.referenced = true;
    if !slot.resolved {
        slot.resolved = true;
        slot.symcache = match &slot.status.debug_id {
            Some(id) => source.by_debug_id(id, slot.status.arch.as_deref()),
            None => source
                .by_name(&slot.status.name, release)
                .map(|(id, cache)| {
                    slot.debug_id = Some(Arc::from(id.as_str()));
                    slot.status.debug_id = Some(id);
                    cache
                }),
        };
        slot.status.debug_file_found = slot.symcache.is_some();
        // A report that names no image paths (MetricKit) cannot say which images are
        // the app's own; one whose debug file the team uploaded is.
        if slot.status.path.is_none() && slot.status.debug_file_found {
            slot.status.in_app = true;
        }
    }
    frame.in_app = slot.status.in_app;
    frame.debug_id = slot.debug_id.clone();
    let Some(symcache) = slot.symcache.clone() else {
        frame.status = if raw.symbol.is_some() {
            FrameStatus::OsSymbol
        } else {
            FrameStatus::MissingDebugFile
        };
        out.push(frame);
        return;
    };

    let lookup_addr = if exact {
        relative
    } else {
        relative.saturating_sub(1)
    };
    let start = out.len();
    for location in symcache.symcache().lookup(lookup_addr) {
        let function = location.function();
        let name = symcache.demangle(function.name(), function.language());
        let line = location.line();
        out.push(Frame {
            function: Some(name),
            file: location.file().map(|f| Arc::from(f.full_path())),
            line: (line != 0).then_some(line),
            function_addr: (function.entry_pc() != u32::MAX)
                .then_some(u64::from(function.entry_pc())),
            status: FrameStatus::Symbolicated,
            inlined: true,
            ..frame.clone()
        });
    }
    if out.len() > start {
        if let Some(outer) = out.last_mut() {
            outer.inlined = false;
        }
    } else {
        // The debug file does not cover the address. A name from the report still
        // beats nothing; otherwise the address is not a real code address.
        frame.status = if raw.symbol.is_some() {
            FrameStatus::OsSymbol
        } else {
            FrameStatus::Malformed
        };
        out.push(frame);
    }
}

/// Images sorted by load address, for binary search.
struct ImageIndex {
    /// (start, end exclusive, index into the report's images)
    ranges: Vec<(u64, u64, usize)>,
}

impl ImageIndex {
    fn new(images: &[Image]) -> Self {
        let mut ranges: Vec<(u64, u64, usize)> = images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let end = image
                    .size
                    .filter(|&s| s > 0)
                    .map_or(u64::MAX, |s| image.load_address.saturating_add(s));
                (image.load_address, end, i)
            })
            .collect();
        ranges.sort_by_key(|r| r.0);
        // An image without a size ends where the next one starts.
        for i in 0..ranges.len().saturating_sub(1) {
            let next = ranges[i + 1].0;
            if ranges[i].1 == u64::MAX {
                ranges[i].1 = next.max(ranges[i].0);
            }
        }
        ImageIndex { ranges }
    }

    fn find(&self, addr: u64) -> Option<usize> {
        let pos = self.ranges.partition_point(|r| r.0 <= addr);
        let (start, end, index) = *self.ranges.get(pos.checked_sub(1)?)?;
        (addr >= start && addr < end).then_some(index)
    }
}

/// The app's own code: its main binary and frameworks or extensions inside its bundle.
/// System libraries live outside any `.app`.
fn is_in_app(image: &Image, report: &CrashReport) -> bool {
    if let Some(path) = &image.path {
        let system = [
            "/System/",
            "/usr/lib/",
            "/usr/libexec/",
            "/Library/Apple/",
            "/Developer/",
        ]
        .iter()
        .any(|p| path.starts_with(p));
        if system {
            return false;
        }
        if path.contains(".app/")
            || path.contains(".appex/")
            || path.contains("/Bundle/Application/")
        {
            return true;
        }
    }
    report.app.name.as_deref() == Some(image.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, load: u64, size: Option<u64>) -> Image {
        Image {
            name: name.into(),
            load_address: load,
            size,
            ..Image::default()
        }
    }

    #[test]
    fn images_are_found_by_address() {
        let images = vec![
            image("b", 0x2000, Some(0x100)),
            image("a", 0x1000, None),
            image("c", 0x3000, Some(0x10)),
        ];
        let index = ImageIndex::new(&images);
        assert_eq!(index.find(0x1000), Some(1));
        assert_eq!(index.find(0x1fff), Some(1));
        assert_eq!(index.find(0x2000), Some(0));
        assert_eq!(index.find(0x2100), None);
        assert_eq!(index.find(0x300f), Some(2));
        assert_eq!(index.find(0x3010), None);
        assert_eq!(index.find(0xfff), None);
    }

    #[test]
    fn frames_outside_every_image_get_a_status_not_an_error() {
        use crate::report::{ReportFormat, Thread};
        let mut report = CrashReport::new(ReportFormat::Crashbox);
        report.images = vec![Image {
            debug_id: Some("54039061-a983-3323-a49d-837a894d667f".into()),
            ..image("App", 0x1000, Some(0x1000))
        }];
        let frame = |addr, symbol: Option<&str>| RawFrame {
            instruction_addr: addr,
            symbol: symbol.map(str::to_owned),
            image_name: None,
        };
        report.threads = vec![Thread {
            crashed: true,
            frames: vec![
                frame(0x1010, None),
                frame(0x9999_0000, None),
                frame(0x9999_0004, Some("objc_exception_throw")),
                frame(0, None),
            ],
            ..Thread::default()
        }];
        let crash = symbolicate(&report, &NoDebugFiles);
        let statuses: Vec<_> = crash.threads[0].frames.iter().map(|f| f.status).collect();
        assert_eq!(
            statuses,
            [
                FrameStatus::MissingDebugFile,
                FrameStatus::UnknownImage,
                FrameStatus::OsSymbol,
                FrameStatus::Malformed
            ]
        );
        assert_eq!(crash.missing_debug_ids().count(), 1);
    }
}
