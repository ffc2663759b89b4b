//! Crash reports in every format Apple devices and SDKs produce, parsed into one
//! [`CrashReport`] model.
//!
//! The format is detected from the content alone ([`detect`]), never from a file name
//! or a Content-Type, because devices and SDKs label their uploads inconsistently. Each
//! format has its own module with one entry point; this module owns the shared rules:
//! input size and UTF-8 checks, JSON parsing with a bounded nesting depth (a hostile
//! MetricKit tree can nest 100,000 deep), and the caps on threads and frames, which are
//! applied and recorded in `notes` rather than failing the report.

mod apple;
mod apple_crash;
mod crashbox_json;
mod ips;
mod json;
mod metrickit;
mod model;
mod sentry;

pub use apple::uncaught_exception;
pub use model::*;

/// Bounds on what one report may make the parser do.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Largest report accepted, in bytes.
    pub max_bytes: usize,
    /// Threads kept per report; the rest are dropped with a note.
    pub max_threads: usize,
    /// Frames kept per thread (innermost first); the rest are dropped with a note.
    pub max_frames: usize,
    /// Deepest JSON nesting accepted (MetricKit call trees nest one level per frame).
    pub max_json_depth: usize,
    /// Frames kept per report across all threads (the crashed thread first): a
    /// report's rendered JSON and Apple text grow with it, about 100 bytes a frame.
    pub max_total_frames: usize,
    /// Binary images kept per report; images that kept frames point into go first.
    pub max_images: usize,
    /// Crashes one upload may hold (MetricKit payloads): more is refused with
    /// `TooLarge` before any is parsed. A daily payload holds a handful.
    pub max_reports: usize,
    /// JSON values one report may hold while parsed as `serde_json::Value`s (see
    /// `json::ValueBudget`); more is refused with `TooLarge`. `.ips` frames are read
    /// into compact structs and do not count.
    pub max_json_values: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_bytes: 16 << 20,
            max_threads: 512,
            max_frames: 512,
            max_json_depth: 2048,
            max_total_frames: 16_384,
            max_images: 2048,
            max_reports: 64,
            max_json_values: 250_000,
        }
    }
}

/// What went wrong, without the format (see [`ParseError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// No bytes, or only white space.
    Empty,
    /// The bytes are not UTF-8.
    InvalidUtf8,
    /// No known format matches the content.
    UnknownFormat,
    /// The content is cut off or not valid JSON / text for its format.
    Syntax,
    /// The content parses but breaks the format's rules (an `imageIndex` out of range).
    Invalid,
    /// Over a limit in [`ParseLimits`].
    TooLarge,
}

/// A report that could not be read: names the format (when detected) and the problem.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", .format.map(ReportFormat::name).unwrap_or("unrecognised report"))]
pub struct ParseError {
    pub format: Option<ReportFormat>,
    pub kind: ParseErrorKind,
    pub message: String,
}

impl ParseError {
    pub fn new(
        format: Option<ReportFormat>,
        kind: ParseErrorKind,
        message: impl Into<String>,
    ) -> Self {
        ParseError {
            format,
            kind,
            message: message.into(),
        }
    }
}

/// Detects the format of `bytes` from its content.
pub fn detect(bytes: &[u8]) -> Result<ReportFormat, ParseError> {
    let text = String::from_utf8_lossy(bytes);
    detect_text(&text)
}

fn detect_text(text: &str) -> Result<ReportFormat, ParseError> {
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if text.is_empty() {
        return Err(ParseError::new(
            None,
            ParseErrorKind::Empty,
            "the report is empty",
        ));
    }
    if text.starts_with('{') || text.starts_with('[') {
        // An `.ips` starts with a one-line JSON header that names its bug type.
        let first_line = text.lines().next().unwrap_or("");
        let rest = &text[first_line.len()..];
        if first_line.contains("\"bug_type\"") && !rest.trim().is_empty() {
            return Ok(if rest.trim_start().starts_with('{') {
                ReportFormat::Ips
            } else {
                ReportFormat::AppleCrash
            });
        }
        let head = &text[..floor_char_boundary(text, 1 << 16)];
        if head.contains("\"crashDiagnostics\"") || head.contains("\"callStackTree\"") {
            return Ok(ReportFormat::MetricKit);
        }
        if head.contains("\"crashbox\"") {
            return Ok(ReportFormat::Crashbox);
        }
        if head.contains("\"debug_meta\"")
            || head.contains("\"event_id\"")
            || head.contains("\"sdk\"")
            || head.contains("\"exception\"")
        {
            return Ok(ReportFormat::SentryEvent);
        }
        return Err(ParseError::new(
            None,
            ParseErrorKind::UnknownFormat,
            "JSON that is none of .ips, MetricKit, Sentry event or crashbox JSON",
        ));
    }
    let head = &text[..floor_char_boundary(text, 1 << 16)];
    if head.contains("Incident Identifier:")
        || head.contains("Exception Type:")
        || head.contains("Hardware Model:")
        || head.starts_with("Process:")
    {
        return Ok(ReportFormat::AppleCrash);
    }
    Err(ParseError::new(
        None,
        ParseErrorKind::UnknownFormat,
        "neither JSON nor an Apple crash report",
    ))
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

pub use sentry::EventHead as SentryEventHead;

/// A Sentry event's id and whether it is a crash (see [`SentryEventHead`]), read with
/// the size, UTF-8, depth and value bounds of a full parse.
pub fn sentry_event_head(
    bytes: &[u8],
    limits: &ParseLimits,
) -> Result<SentryEventHead, ParseError> {
    let format = Some(ReportFormat::SentryEvent);
    if bytes.len() > limits.max_bytes {
        return Err(ParseError::new(
            format,
            ParseErrorKind::TooLarge,
            format!(
                "the event is {} bytes, over the limit of {}",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|err| {
        ParseError::new(
            format,
            ParseErrorKind::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", err.valid_up_to()),
        )
    })?;
    sentry::head(text, limits)
}

/// Parses one upload into its crash reports: one for most formats, several for a
/// MetricKit payload. Caps are applied and noted in each report's `notes`.
pub fn parse(bytes: &[u8], limits: &ParseLimits) -> Result<Vec<CrashReport>, ParseError> {
    if bytes.len() > limits.max_bytes {
        let format = detect(&bytes[..bytes.len().min(1 << 16)]).ok();
        return Err(ParseError::new(
            format,
            ParseErrorKind::TooLarge,
            format!(
                "the report is {} bytes, over the limit of {}",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            return Err(ParseError::new(
                detect(bytes).ok(),
                ParseErrorKind::InvalidUtf8,
                format!("invalid UTF-8 at byte {}", err.valid_up_to()),
            ))
        }
    };
    let format = detect_text(text)?;
    let reports = parse_text_as(format, text, limits)?;
    finish(format, reports, limits)
}

/// Parses `bytes` as `format`, skipping detection: for fuzzing one parser at a time,
/// and for callers that already know the format.
pub fn parse_as(
    format: ReportFormat,
    bytes: &[u8],
    limits: &ParseLimits,
) -> Result<Vec<CrashReport>, ParseError> {
    if bytes.len() > limits.max_bytes {
        return Err(ParseError::new(
            Some(format),
            ParseErrorKind::TooLarge,
            format!(
                "the report is {} bytes, over the limit of {}",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|err| {
        ParseError::new(
            Some(format),
            ParseErrorKind::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", err.valid_up_to()),
        )
    })?;
    let reports = parse_text_as(format, text, limits)?;
    finish(format, reports, limits)
}

fn parse_text_as(
    format: ReportFormat,
    text: &str,
    limits: &ParseLimits,
) -> Result<Vec<CrashReport>, ParseError> {
    let text = text.trim_start_matches('\u{feff}').trim_start();
    Ok(match format {
        ReportFormat::Ips => vec![ips::parse(text, limits)?],
        ReportFormat::AppleCrash => vec![apple_crash::parse(text, limits)?],
        ReportFormat::MetricKit => metrickit::parse(text, limits)?,
        ReportFormat::SentryEvent => vec![sentry::parse(text, limits)?],
        ReportFormat::Crashbox => vec![crashbox_json::parse(text, limits)?],
    })
}

/// What every parsed report goes through: caps, control characters out, and the
/// refusal of reports with no frame at all (nothing to symbolicate or group by).
fn finish(
    format: ReportFormat,
    mut reports: Vec<CrashReport>,
    limits: &ParseLimits,
) -> Result<Vec<CrashReport>, ParseError> {
    if reports.len() > limits.max_reports {
        return Err(ParseError::new(
            Some(format),
            ParseErrorKind::TooLarge,
            format!(
                "the upload holds {} crashes, over the limit of {} per upload",
                reports.len(),
                limits.max_reports
            ),
        ));
    }
    // In a payload of several (MetricKit), a diagnostic with no frames is dropped and
    // the rest kept; a payload of nothing but such is refused like a single report.
    reports.retain(has_frames);
    if reports.is_empty() {
        return Err(ParseError::new(
            Some(format),
            ParseErrorKind::Invalid,
            "the report has no stack frames",
        ));
    }
    for report in &mut reports {
        apply_caps(report, limits);
        clean_report(report);
    }
    Ok(reports)
}

fn has_frames(report: &CrashReport) -> bool {
    report.threads.iter().any(|t| !t.frames.is_empty())
        || report
            .last_exception_backtrace
            .as_ref()
            .is_some_and(|f| !f.is_empty())
}

/// Replaces control characters in `text`: line breaks and tabs by a space (every
/// field is one line in Apple's text format, and a newline there could forge one),
/// the rest (NUL, ESC, DEL, C1) by U+FFFD. Allocates only when there is one.
pub fn clean_text(text: &mut String) {
    if !text.chars().any(char::is_control) {
        return;
    }
    *text = text
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect();
}

/// Longest identifier-like text kept from a report (bundle id, version, build, OS,
/// device model, names, exception kind…): these become release names, index keys and
/// listing entries, like the 256 MiB "release" that once made every debug-file
/// listing 335 MB.
pub const MAX_SHORT_TEXT: usize = 1024;

/// Longest free text kept from a report (exception reason, termination reasons,
/// symbols, paths): long C++ and Swift symbols run to a few KiB.
pub const MAX_LONG_TEXT: usize = 16 << 10;

/// [`clean_text`] over every text of a report, so that nothing rendered, stored or
/// hashed into a signature carries a control character from the device; and texts cut
/// to [`MAX_SHORT_TEXT`] or [`MAX_LONG_TEXT`], noted.
fn clean_report(report: &mut CrashReport) {
    let mut cut = 0usize;
    let mut fix = |text: &mut String, max: usize| {
        clean_text(text);
        if text.len() > max {
            let mut at = max;
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.truncate(at);
            text.push('…');
            cut += 1;
        }
    };
    let CrashReport {
        format: _,
        incident_id,
        timestamp,
        app,
        os,
        device_model,
        arch,
        exception,
        termination,
        crashed_thread: _,
        threads,
        last_exception_backtrace,
        images,
        device_id,
        notes,
    } = report;
    for text in [
        incident_id,
        timestamp,
        device_model,
        arch,
        device_id,
        &mut app.bundle_id,
        &mut app.name,
        &mut app.version,
        &mut app.build,
        &mut os.name,
        &mut os.version,
        &mut os.build,
        &mut exception.kind,
        &mut exception.signal,
        &mut exception.codes,
        &mut exception.subtype,
        &mut exception.name,
    ]
    .into_iter()
    .flatten()
    {
        fix(text, MAX_SHORT_TEXT);
    }
    if let Some(reason) = &mut exception.reason {
        fix(reason, MAX_LONG_TEXT);
    }
    if let Some(t) = termination {
        for text in [
            &mut t.namespace,
            &mut t.code,
            &mut t.indicator,
            &mut t.by_process,
        ]
        .into_iter()
        .flatten()
        {
            fix(text, MAX_SHORT_TEXT);
        }
        for reason in &mut t.reasons {
            fix(reason, MAX_LONG_TEXT);
        }
    }
    for thread in threads.iter_mut() {
        for text in [&mut thread.name, &mut thread.queue].into_iter().flatten() {
            fix(text, MAX_SHORT_TEXT);
        }
    }
    let frames = threads
        .iter_mut()
        .flat_map(|t| t.frames.iter_mut())
        .chain(last_exception_backtrace.iter_mut().flatten());
    for frame in frames {
        if let Some(symbol) = &mut frame.symbol {
            fix(symbol, MAX_LONG_TEXT);
        }
        if let Some(name) = &mut frame.image_name {
            fix(name, MAX_SHORT_TEXT);
        }
    }
    for image in images {
        fix(&mut image.name, MAX_SHORT_TEXT);
        if let Some(path) = &mut image.path {
            fix(path, MAX_LONG_TEXT);
        }
        for text in [&mut image.debug_id, &mut image.arch].into_iter().flatten() {
            fix(text, MAX_SHORT_TEXT);
        }
    }
    for note in notes.iter_mut() {
        clean_text(note);
    }
    if cut > 0 {
        notes.push(format!("cut {cut} overlong texts"));
    }
}

/// Drops threads and frames past the limits, saying so in the report.
fn apply_caps(report: &mut CrashReport, limits: &ParseLimits) {
    if report.threads.len() > limits.max_threads {
        let total = report.threads.len();
        // The crashed thread is kept even when it lies past the cap.
        let crashed_past_cap = report.crashed_thread.filter(|&c| c >= limits.max_threads);
        let take = limits.max_threads - usize::from(crashed_past_cap.is_some());
        report.threads = std::mem::take(&mut report.threads)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i < take || Some(*i) == crashed_past_cap)
            .map(|(_, thread)| thread)
            .collect();
        if crashed_past_cap.is_some() {
            report.crashed_thread = Some(take);
        }
        report
            .notes
            .push(format!("kept {} of {total} threads", report.threads.len()));
    }
    let mut capped = 0usize;
    for thread in &mut report.threads {
        if thread.frames.len() > limits.max_frames {
            capped += thread.frames.len() - limits.max_frames;
            thread.frames.truncate(limits.max_frames);
        }
    }
    if let Some(frames) = &mut report.last_exception_backtrace {
        if frames.len() > limits.max_frames {
            capped += frames.len() - limits.max_frames;
            frames.truncate(limits.max_frames);
        }
    }
    if capped > 0 {
        report.notes.push(format!(
            "dropped {capped} frames past {} per thread",
            limits.max_frames
        ));
    }
    cap_total_frames(report, limits.max_total_frames);
    cap_images(report, limits.max_images);
}

/// Keeps at most `budget` frames in the whole report: the exception backtrace and the
/// crashed thread first (they name the crash site), then the other threads in order.
fn cap_total_frames(report: &mut CrashReport, budget: usize) {
    let total: usize = report.threads.iter().map(|t| t.frames.len()).sum::<usize>()
        + report.last_exception_backtrace.as_ref().map_or(0, Vec::len);
    if total <= budget {
        return;
    }
    let mut left = budget;
    let mut take = |frames: &mut Vec<RawFrame>| {
        frames.truncate(left);
        left -= frames.len();
    };
    if let Some(frames) = &mut report.last_exception_backtrace {
        take(frames);
    }
    let crashed = report.crashed_thread;
    if let Some(thread) = crashed.and_then(|c| report.threads.get_mut(c)) {
        take(&mut thread.frames);
    }
    for (i, thread) in report.threads.iter_mut().enumerate() {
        if Some(i) != crashed {
            take(&mut thread.frames);
        }
    }
    report
        .notes
        .push(format!("kept {budget} of {total} frames in the report"));
}

/// Keeps at most `max` images: first those a kept frame's address falls in (they are
/// what symbolication needs), then the others in report order. Order is preserved.
fn cap_images(report: &mut CrashReport, max: usize) {
    let total = report.images.len();
    if total <= max {
        return;
    }
    // Images by load address; a frame belongs to the last one starting at or below it.
    let mut by_address: Vec<(u64, usize)> = report
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| (image.load_address, i))
        .collect();
    by_address.sort_unstable();
    let mut keep = vec![false; total];
    let mut kept = 0;
    let frames = report
        .threads
        .iter()
        .flat_map(|t| t.frames.iter())
        .chain(report.last_exception_backtrace.iter().flatten());
    for frame in frames {
        let at = by_address.partition_point(|(load, _)| *load <= frame.instruction_addr);
        if let Some(&(_, index)) = at.checked_sub(1).and_then(|at| by_address.get(at)) {
            if !keep[index] && kept < max {
                keep[index] = true;
                kept += 1;
            }
        }
    }
    for flag in keep.iter_mut() {
        if kept >= max {
            break;
        }
        if !*flag {
            *flag = true;
            kept += 1;
        }
    }
    let mut index = 0;
    report.images.retain(|_| {
        index += 1;
        keep[index - 1]
    });
    report
        .notes
        .push(format!("kept {max} of {total} binary images"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_from_content() {
        for (text, want) in [
            (
                "{\"bug_type\":\"309\"}\n{\"threads\":[]}",
                ReportFormat::Ips,
            ),
            (
                "{\"bug_type\":\"109\"}\nIncident Identifier: X\n",
                ReportFormat::AppleCrash,
            ),
            (
                "Incident Identifier: X\nHardware Model: iPhone\n",
                ReportFormat::AppleCrash,
            ),
            ("{\"crashDiagnostics\":[]}", ReportFormat::MetricKit),
            (
                "{\"event_id\":\"x\",\"debug_meta\":{}}",
                ReportFormat::SentryEvent,
            ),
            ("{\"crashbox\":1}", ReportFormat::Crashbox),
        ] {
            assert_eq!(detect(text.as_bytes()).unwrap(), want, "{text}");
        }
        assert_eq!(detect(b"  ").unwrap_err().kind, ParseErrorKind::Empty);
        assert_eq!(
            detect(b"hello").unwrap_err().kind,
            ParseErrorKind::UnknownFormat
        );
    }

    #[test]
    fn detection_cuts_its_look_ahead_at_a_char_boundary() {
        // Found by cargo fuzz (parse_any): a multi-byte character across byte 65536.
        let mut text = "{\"tags\":{},\"x\":\"".to_owned();
        text.push_str(&"a".repeat((1 << 16) - text.len() - 1));
        text.push_str("é\"}");
        assert!(!text.is_char_boundary(1 << 16));
        let err = detect(text.as_bytes()).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::UnknownFormat);
    }

    #[test]
    fn invalid_utf8_and_oversized_reports_are_clear_errors() {
        let err = parse(b"Incident Identifier: \xff\xfe", &ParseLimits::default()).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::InvalidUtf8);
        assert!(err.to_string().starts_with("Apple .crash"), "{err}");
        let limits = ParseLimits {
            max_bytes: 10,
            ..ParseLimits::default()
        };
        let err = parse(b"{\"crashbox\":1, \"x\": 1}", &limits).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::TooLarge);
    }

    #[test]
    fn caps_keep_the_crashed_thread_and_say_so() {
        let mut report = CrashReport::new(ReportFormat::Crashbox);
        for i in 0..10_000 {
            report.threads.push(Thread {
                index: i,
                crashed: i == 9_000,
                frames: vec![RawFrame::default(); if i == 9_000 { 100_000 } else { 1 }],
                ..Thread::default()
            });
        }
        report.crashed_thread = Some(9_000);
        apply_caps(&mut report, &ParseLimits::default());
        assert_eq!(report.threads.len(), 512);
        let crashed = report.crashed_thread.unwrap();
        assert_eq!(report.threads[crashed].index, 9_000);
        assert_eq!(report.threads[crashed].frames.len(), 512);
        assert_eq!(report.notes.len(), 2, "{:?}", report.notes);
    }
}

#[cfg(test)]
mod corpus_tests {
    use super::*;
    use std::path::Path;

    fn corpus(rel: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/corpus")
            .join(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn one(rel: &str) -> CrashReport {
        let mut reports =
            parse(&corpus(rel), &ParseLimits::default()).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(reports.len(), 1, "{rel}");
        reports.remove(0)
    }

    #[test]
    fn soloquest_ips_and_its_crash_rendering_are_the_same_crash() {
        let ips = one("apple-ips/soloquest_ios26.ips");
        let crash = one("apple-crash/soloquest_ios26_translated.crash");
        assert_eq!(ips.format, ReportFormat::Ips);
        assert_eq!(crash.format, ReportFormat::AppleCrash);
        let strip = |mut r: CrashReport| {
            r.format = ReportFormat::Ips;
            r
        };
        let (ips, crash) = (strip(ips), strip(crash));
        assert_eq!(ips.app, crash.app);
        assert_eq!(ips.os, crash.os);
        assert_eq!(ips.exception, crash.exception);
        assert_eq!(ips.termination, crash.termination);
        assert_eq!(ips.images, crash.images);
        for (a, b) in ips.threads.iter().zip(&crash.threads) {
            assert_eq!(a, b, "thread {}", a.index);
        }
        assert_eq!(ips, crash);
        assert_eq!(ips.app.version.as_deref(), Some("1.0.0"));
        assert_eq!(ips.app.build.as_deref(), Some("5"));
        assert_eq!(ips.crashed_thread, Some(10));
        assert_eq!(
            ips.threads[10].name.as_deref(),
            Some("com.facebook.react.runtime.JavaScript")
        );
    }

    #[test]
    fn icdab_legacy_crash_reads_the_old_version_order() {
        let report = one("apple-crash/icdab_planets.crash");
        assert_eq!(report.app.version.as_deref(), Some("1.0"));
        assert_eq!(report.app.build.as_deref(), Some("1"));
        assert_eq!(report.app.name.as_deref(), Some("icdab_planets"));
        assert_eq!(report.os.version.as_deref(), Some("13.5"));
        assert_eq!(report.device_model.as_deref(), Some("iPod9,1"));
        assert_eq!(report.exception.kind.as_deref(), Some("EXC_CRASH"));
        assert_eq!(report.exception.signal.as_deref(), Some("SIGABRT"));
        assert_eq!(report.crashed_thread, Some(0));
        let frame = &report.threads[0].frames[4];
        assert_eq!(frame.instruction_addr, 0x1045490f0);
        assert_eq!(frame.symbol, None);
        let app = &report.images[0];
        assert_eq!(
            app.debug_id.as_deref(),
            Some("b6356bad-2e31-3cba-9e4f-e12daca0d204")
        );
        assert_eq!((app.load_address, app.size), (0x104544000, Some(0xc000)));
    }

    #[test]
    fn slack_ips_reads_a_runningboard_termination() {
        let report = one("apple-ips/slack_shareext_ios17.ips");
        let termination = report.termination.unwrap();
        assert_eq!(termination.namespace.as_deref(), Some("RUNNINGBOARD"));
        assert_eq!(termination.code.as_deref(), Some("0xdead10cc"));
        assert_eq!(report.exception.signal.as_deref(), Some("SIGKILL"));
        assert_eq!(
            report.app.bundle_id.as_deref(),
            Some("com.tinyspeck.chatlyio.share")
        );
        assert_eq!(report.app.name.as_deref(), Some("ShareExtension"));
        assert!(report.incident_id.is_some() && report.device_id.is_some());
    }

    #[test]
    fn metrickit_payloads_become_one_crash_per_diagnostic() {
        let reports = parse(
            &corpus("metrickit/real_report_ios14.json"),
            &ParseLimits::default(),
        )
        .unwrap();
        assert_eq!(reports.len(), 2);
        let reports = parse(
            &corpus("metrickit/uncaught_exception_ios14.json"),
            &ParseLimits::default(),
        )
        .unwrap();
        let report = &reports[0];
        assert_eq!(report.exception.kind.as_deref(), Some("EXC_BAD_ACCESS"));
        assert_eq!(report.exception.signal.as_deref(), Some("SIGSEGV"));
        assert_eq!(report.threads.len(), 10);
        assert_eq!(report.crashed_thread, Some(0));
        // iOS 14: offsetIntoBinaryTextSegment was the load address.
        let app = report
            .images
            .iter()
            .find(|i| i.name == "MetricKitTest")
            .unwrap();
        assert_eq!(app.load_address, 4331307008);
        assert_eq!(report.threads[0].frames[0].instruction_addr, 4331327932);
        assert_eq!(report.app.version.as_deref(), Some("1.0"));
    }

    #[test]
    fn sentry_events_read_innermost_first() {
        for name in ["call_abort", "dereference_a_null_pointer", "swift"] {
            let report = one(&format!("sentry-events/crashprobe_{name}.json"));
            assert_eq!(report.images.len(), 327, "{name}");
            let crashed = &report.threads[report.crashed_thread.unwrap()];
            assert!(crashed.frames.len() > 3, "{name}");
            assert_eq!(report.os.version.as_deref(), Some("10.2"));
            assert_eq!(report.device_model.as_deref(), Some("iPhone9,4"));
        }
        // Sentry writes the outermost frame first; the model starts at the crash site.
        let report = one("sentry-events/crashprobe_call_abort.json");
        let crashed = &report.threads[report.crashed_thread.unwrap()];
        assert_eq!(crashed.frames[0].symbol.as_deref(), Some("__pthread_kill"));
        assert_eq!(crashed.frames[0].instruction_addr, 0x80643014);
        let report = one("sentry-events/crashprobe_dereference_a_null_pointer.json");
        assert_eq!(report.exception.kind.as_deref(), Some("EXC_BAD_ACCESS"));
        assert_eq!(report.exception.signal.as_deref(), Some("SIGBUS"));
    }

    fn ips_with(threads: usize, frames_per_thread: usize) -> String {
        let frames = vec![r#"{"imageIndex":0,"imageOffset":16}"#; frames_per_thread].join(",");
        let thread = format!(r#"{{"frames":[{frames}]}}"#);
        let threads = vec![thread.as_str(); threads].join(",");
        format!(
            "{{\"bug_type\":\"309\"}}\n{{\"usedImages\":[{{\"base\":4096,\"name\":\"App\"}}],\"faultingThread\":0,\"threads\":[{threads}]}}"
        )
    }

    #[test]
    fn ten_thousand_threads_and_a_hundred_thousand_frames_are_capped_and_noted() {
        let limits = ParseLimits::default();
        let report = parse(ips_with(10_000, 1).as_bytes(), &limits)
            .unwrap()
            .remove(0);
        assert_eq!(report.threads.len(), limits.max_threads);
        assert!(
            report.notes.iter().any(|n| n.contains("10000 threads")),
            "{:?}",
            report.notes
        );
        let report = parse(ips_with(1, 100_000).as_bytes(), &limits)
            .unwrap()
            .remove(0);
        assert_eq!(report.threads[0].frames.len(), limits.max_frames);
        assert!(
            report.notes.iter().any(|n| n.contains("99488 frames")),
            "{:?}",
            report.notes
        );
    }

    #[test]
    fn a_fifty_megabyte_report_is_refused_naming_its_format() {
        let mut big = ips_with(1, 1).into_bytes();
        big.resize(50 << 20, b' ');
        let err = parse(&big, &ParseLimits::default()).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::TooLarge);
        assert!(
            err.to_string()
                .starts_with("Apple .ips: the report is 52428800 bytes"),
            "{err}"
        );
    }
}
