//! Prometheus metrics, served as text on `/metrics`. Labels carry routes and outcomes,
//! never anything from a report or a token.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The process's metrics. Cloning shares the same counters.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by matched route, method and status.
    pub http_requests: IntCounterVec,
    /// Request latency by matched route.
    pub http_duration: HistogramVec,
    /// Objects found in debug-file uploads, by outcome (stored, already_present, …).
    pub debug_files: IntCounterVec,
    /// Debug-file uploads rejected as a whole, by error code.
    pub dsym_uploads_rejected: IntCounterVec,
    /// Bytes of debug-file upload bodies received.
    pub dsym_upload_bytes: IntCounter,
    /// Crash reports by outcome: stored, duplicate, or the error code.
    pub crashes: IntCounterVec,
    /// Sentry events by outcome: `crash` (handed to the intake), `not_crash` (handled
    /// errors and messages: counted, not stored), or the error code.
    pub sentry_events: IntCounterVec,
    /// Sentry session updates by status (`ok`, `exited`, `crashed`, `abnormal`,
    /// `errored`, or `invalid`). Release crash-free figures will read sessions once
    /// releases keep them; until then they are counted here.
    pub sentry_sessions: IntCounterVec,
    /// Sessions started (session updates with `init: true`, and each session of an
    /// aggregate): DESIGN.md's release `total`, until releases keep it.
    pub sentry_session_starts: IntCounter,
    /// Envelope items read past without being kept, by type (attachments, …).
    pub sentry_items_dropped: IntCounterVec,
    /// sentry-cli chunks by outcome: `stored`, or the error code.
    pub sentry_chunks: IntCounterVec,
    /// sentry-cli file assemblies by outcome: `ok` or `error`.
    pub sentry_assemblies: IntCounterVec,
    /// Requests refused over a rate limit, by limit (`token`, `address`).
    pub rate_limited: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new_custom(Some("crashbox".into()), None)
            .expect("static registry config is valid");
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency"),
            &["route"],
        )
        .expect("valid metric");
        let debug_files = IntCounterVec::new(
            Opts::new("debug_files_total", "Objects found in uploads, by outcome"),
            &["status"],
        )
        .expect("valid metric");
        let dsym_uploads_rejected = IntCounterVec::new(
            Opts::new("dsym_uploads_rejected_total", "Rejected debug-file uploads"),
            &["code"],
        )
        .expect("valid metric");
        let dsym_upload_bytes = IntCounter::new(
            "dsym_upload_bytes_total",
            "Debug-file upload bytes received",
        )
        .expect("valid metric");
        let crashes = IntCounterVec::new(
            Opts::new("crashes_total", "Crashes received, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        let sentry_events = counter("sentry_events_total", "Sentry events by outcome", "outcome");
        let sentry_sessions = counter(
            "sentry_sessions_total",
            "Sentry session updates by status",
            "status",
        );
        let sentry_session_starts = IntCounter::new(
            "sentry_session_starts_total",
            "Sentry sessions started (init), all releases",
        )
        .expect("valid metric");
        let sentry_items_dropped = counter(
            "sentry_items_dropped_total",
            "Envelope items skipped, by type",
            "type",
        );
        let sentry_chunks = counter(
            "sentry_chunks_total",
            "sentry-cli chunks by outcome",
            "outcome",
        );
        let sentry_assemblies = counter(
            "sentry_assemblies_total",
            "sentry-cli file assemblies by outcome",
            "outcome",
        );
        let rate_limited = counter("rate_limited_total", "Requests over a rate limit", "limit");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(debug_files.clone()),
            Box::new(dsym_uploads_rejected.clone()),
            Box::new(dsym_upload_bytes.clone()),
            Box::new(crashes.clone()),
            Box::new(sentry_events.clone()),
            Box::new(sentry_sessions.clone()),
            Box::new(sentry_session_starts.clone()),
            Box::new(sentry_items_dropped.clone()),
            Box::new(sentry_chunks.clone()),
            Box::new(sentry_assemblies.clone()),
            Box::new(rate_limited.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Metrics {
            registry,
            http_requests,
            http_duration,
            debug_files,
            dsym_uploads_rejected,
            dsym_upload_bytes,
            crashes,
            sentry_events,
            sentry_sessions,
            sentry_session_starts,
            sentry_items_dropped,
            sentry_chunks,
            sentry_assemblies,
            rate_limited,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
