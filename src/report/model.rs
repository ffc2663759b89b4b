//! The one crash model every format parses into.
//!
//! Addresses are absolute (`instruction_addr`), as the crashed process saw them; a
//! format that writes image-relative offsets (`.ips`) is converted at parse time, so
//! symbolication needs only the image list. Everything optional is optional because
//! some format lacks it, not to defer validation: parsers fill what their format has.

use serde::{Deserialize, Serialize};

/// Which format a report arrived in, detected from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    /// Apple JSON `.ips` (`bug_type` 309): a header line plus a JSON body.
    Ips,
    /// Apple's legacy text `.crash`, also the body of an older `.ips`.
    AppleCrash,
    /// A MetricKit `MXDiagnosticPayload` (one diagnostic of it).
    MetricKit,
    /// A Sentry event as sentry-cocoa / KSCrash send it.
    SentryEvent,
    /// crashbox's own JSON for in-app reporters (`docs/crashbox-report.schema.json`).
    Crashbox,
}

impl ReportFormat {
    pub fn name(self) -> &'static str {
        match self {
            ReportFormat::Ips => "Apple .ips",
            ReportFormat::AppleCrash => "Apple .crash",
            ReportFormat::MetricKit => "MetricKit",
            ReportFormat::SentryEvent => "Sentry event",
            ReportFormat::Crashbox => "crashbox JSON",
        }
    }
}

/// The app that crashed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppInfo {
    /// `CFBundleIdentifier`, e.g. `com.outofbox.app`.
    pub bundle_id: Option<String>,
    /// Process or executable name, e.g. `OutOfBox`.
    pub name: Option<String>,
    /// `CFBundleShortVersionString`, e.g. `1.2.0`.
    pub version: Option<String>,
    /// `CFBundleVersion`, e.g. `42`.
    pub build: Option<String>,
}

/// The operating system the app ran on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OsInfo {
    /// `iOS`, `iPadOS`, `macOS`, or Apple's own `iPhone OS` as the report spells it.
    pub name: Option<String>,
    /// `17.1.2`
    pub version: Option<String>,
    /// `21B101`
    pub build: Option<String>,
}

/// Why the process died, as the kernel and runtime described it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExceptionInfo {
    /// Mach exception type: `EXC_BAD_ACCESS`, `EXC_CRASH`, … For an NSException with no
    /// Mach info, the exception's name (`NSInvalidArgumentException`).
    pub kind: Option<String>,
    /// `SIGSEGV`, `SIGABRT`, …
    pub signal: Option<String>,
    /// Exception codes as the report writes them (`0x0000000000000001, 0x…`).
    pub codes: Option<String>,
    /// `KERN_INVALID_ADDRESS at 0x…`
    pub subtype: Option<String>,
    /// The language-level exception's name, e.g. `NSInvalidArgumentException`.
    pub name: Option<String>,
    /// The language-level message: NSException reason, Swift fatal error text, `asi`.
    pub reason: Option<String>,
}

/// How the OS ended the process, when it says (`termination` in `.ips`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Termination {
    /// `SIGNAL`, `FRONTBOARD`, `RUNNINGBOARD`, …
    pub namespace: Option<String>,
    /// The code, as text: `0xdead10cc`, `11`.
    pub code: Option<String>,
    /// `Segmentation fault: 11`
    pub indicator: Option<String>,
    /// Free-text reasons the OS gave.
    pub reasons: Vec<String>,
    /// `exc handler`, `runningboardd`…
    pub by_process: Option<String>,
}

/// One frame as the report wrote it, before symbolication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RawFrame {
    /// Absolute instruction address (a return address for caller frames).
    pub instruction_addr: u64,
    /// A symbol the report already carried (system frames in `.ips`, `.crash`,
    /// `callStackSymbols`), kept as the OS wrote it.
    pub symbol: Option<String>,
    /// The image the report named for this frame, when it names one: used when the
    /// image list lacks addresses (`callStackSymbols`).
    pub image_name: Option<String>,
}

/// One thread's stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thread {
    /// The thread's number in the report.
    pub index: usize,
    pub name: Option<String>,
    /// The dispatch queue the thread was serving, e.g. `com.apple.main-thread`.
    pub queue: Option<String>,
    pub crashed: bool,
    /// Innermost frame first.
    pub frames: Vec<RawFrame>,
}

/// A binary loaded in the crashed process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Image {
    /// File name, e.g. `OutOfBox` or `libsystem_kernel.dylib`.
    pub name: String,
    /// Full path on the device, e.g. `/private/var/containers/Bundle/Application/<UUID>/X.app/X`.
    pub path: Option<String>,
    /// Lowercase hyphenated UUID; `None` when the report did not carry one.
    pub debug_id: Option<String>,
    /// Where the image's `__TEXT` started in the crashed process.
    pub load_address: u64,
    /// Size of the mapping, when known.
    pub size: Option<u64>,
    pub arch: Option<String>,
}

/// One crash report, parsed, in any format. Stored records decode with defaults for
/// fields they lack, so fields can be added without a migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CrashReport {
    pub format: ReportFormat,
    /// The report's own id (`incident_id`, Sentry `event_id`), used only to recognise
    /// a retried upload; the scrubber replaces it with a keyed hash before storage.
    pub incident_id: Option<String>,
    /// When the crash happened, as RFC 3339 when the report says.
    pub timestamp: Option<String>,
    pub app: AppInfo,
    pub os: OsInfo,
    /// Hardware model code, e.g. `iPhone18,2`.
    pub device_model: Option<String>,
    /// CPU architecture of the process, e.g. `arm64`.
    pub arch: Option<String>,
    pub exception: ExceptionInfo,
    pub termination: Option<Termination>,
    /// Index into `threads` of the thread that crashed, when known.
    pub crashed_thread: Option<usize>,
    pub threads: Vec<Thread>,
    /// The backtrace of the uncaught language exception (Apple's "Last Exception
    /// Backtrace"), innermost first: the real crash site of an NSException.
    pub last_exception_backtrace: Option<Vec<RawFrame>>,
    /// Binary images, in report order.
    pub images: Vec<Image>,
    /// A device identifier the report carried (IDFV, crashReporterKey), kept only so
    /// the scrubber can replace it with a salted hash for counting affected devices.
    pub device_id: Option<String>,
    /// Things the parser had to do to the report, e.g. "capped 100000 frames to 512".
    pub notes: Vec<String>,
}

impl Default for CrashReport {
    fn default() -> Self {
        CrashReport::new(ReportFormat::Crashbox)
    }
}

impl CrashReport {
    /// An empty report of `format`, for parsers to fill.
    pub fn new(format: ReportFormat) -> Self {
        CrashReport {
            format,
            incident_id: None,
            timestamp: None,
            app: AppInfo::default(),
            os: OsInfo::default(),
            device_model: None,
            arch: None,
            exception: ExceptionInfo::default(),
            termination: None,
            crashed_thread: None,
            threads: Vec::new(),
            last_exception_backtrace: None,
            images: Vec::new(),
            device_id: None,
            notes: Vec::new(),
        }
    }
}
