//! Server configuration: one [`Config`] with documented defaults. `cli` maps flags and
//! their `CRASHBOX_*` environment twins onto it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::debug_files::IngestLimits;

/// Everything `crashbox serve` needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SQLite store, tokens, the secret and the first admin token live here.
    pub data_dir: PathBuf,
    /// Debug files and their SymCaches live here; see `dsyms/README.md`.
    pub dsyms_dir: PathBuf,
    /// Address to bind; port 0 picks a free port (tests use it).
    pub listen: SocketAddr,
    /// Largest debug-file upload body, in bytes. Larger bodies get 413 before they are
    /// read to the end.
    pub max_dsym_upload_bytes: u64,
    /// Bounds on what a zip may expand to.
    pub ingest_limits: IngestLimits,
    /// How many uploads convert debug files at once; each converts one object at a time.
    /// Defaults to the number of cores: conversion is CPU-bound.
    pub conversion_workers: usize,
    /// Largest crash report body, in bytes (413 above it).
    pub max_crash_bytes: u64,
    /// Threads and frames kept per crash; the rest are dropped with a note.
    pub max_crash_threads: usize,
    pub max_crash_frames: usize,
    /// Crashes older than this many days are deleted in the background; 0 keeps all.
    pub retention_days: u32,
    /// Bytes of open SymCaches kept in memory across requests.
    pub symcache_cache_bytes: usize,
    /// What one connection may cost: see [`ConnectionLimits`].
    pub connections: ConnectionLimits,
    /// Where people and devices reach the server (DSNs are built from it); `None`
    /// means `http://<listen address>`.
    pub public_url: Option<String>,
    /// The Sentry-compatible routes: see [`SentryConfig`].
    pub sentry: SentryConfig,
    /// A grouping rules file added to the built-in rules (docs/grouping.md); `None`
    /// reads `DATA_DIR/grouping.rules` when it exists.
    pub grouping_rules: Option<PathBuf>,
    /// Webhook delivery and the spike rule: see [`WebhookConfig`].
    pub webhooks: WebhookConfig,
}

/// Webhook delivery (docs/webhooks.md).
#[derive(Debug, Clone, Copy)]
pub struct WebhookConfig {
    /// Time one delivery attempt may take, connect to last byte of the answer.
    pub timeout: Duration,
    /// Deliveries in flight at once, over every webhook.
    pub concurrency: usize,
    /// A delivery that has not succeeded this long after its event is given up
    /// (`failed`, with its last error).
    pub retry_for: Duration,
    /// Longest wait between two attempts (the backoff doubles from 1 s up to it).
    pub max_backoff: Duration,
    /// Deliver to link-local and cloud metadata addresses too (refused by default).
    pub allow_link_local: bool,
    /// `group.spike`: crashes in the last hour at least this many...
    pub spike_min_count: u64,
    /// ...and at least this multiple of the trailing 24 hours' hourly average...
    pub spike_factor: f64,
    /// ...at most once per group in this window.
    pub spike_window: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            timeout: Duration::from_secs(10),
            concurrency: 4,
            retry_for: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(600),
            allow_link_local: false,
            spike_min_count: 50,
            spike_factor: 5.0,
            spike_window: Duration::from_secs(6 * 3600),
        }
    }
}

impl WebhookConfig {
    /// The spike rule as the store applies it.
    pub fn spike_policy(&self) -> crate::store::SpikePolicy {
        crate::store::SpikePolicy {
            min_count: self.spike_min_count.max(1),
            factor: self.spike_factor.max(0.0),
            window_ms: i64::try_from(self.spike_window.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// Knobs of the Sentry-compatible routes (sentry-cli uploads, SDK envelopes).
#[derive(Debug, Clone, Copy)]
pub struct SentryConfig {
    /// Chunk size sentry-cli is told to use, a power of two. Small values let a test
    /// reach the multi-chunk path with a small file.
    pub chunk_size: u64,
    /// Whether the upload options list `debug_files` in `accept`. Without it,
    /// sentry-cli 2.x takes the legacy zip upload (`files/dsyms/`); 3.x has no legacy
    /// path and uses chunks either way.
    pub accept_debug_files: bool,
    /// Uploaded chunks that no assemble claims are deleted once this old.
    pub chunk_expiry: Duration,
    /// Envelopes (and `store` events) per minute per ingest token; 0 = no limit.
    pub rate_per_token: u32,
    /// Envelopes per minute per source address; 0 = no limit.
    pub rate_per_address: u32,
    /// Largest envelope body as sent (compressed), in bytes.
    pub max_envelope_bytes: u64,
    /// Most bytes an envelope may decompress to, items skipped included: bounds a
    /// compression bomb.
    pub max_envelope_decompressed_bytes: u64,
}

impl Default for SentryConfig {
    fn default() -> Self {
        SentryConfig {
            // Sentry's own: 8 MiB chunks, 32 MiB requests.
            chunk_size: 8 << 20,
            accept_debug_files: true,
            chunk_expiry: Duration::from_secs(3600),
            // One app's launch-day crash storm shares one token: 2,000 a second is
            // more than this server stores, so the limit only stops floods.
            rate_per_token: 120_000,
            // A device sends a crash and a session or two per launch; a crash loop
            // relaunches every few seconds. Ten a second per address leaves room for
            // many devices behind one NAT.
            rate_per_address: 600,
            max_envelope_bytes: 20 << 20,
            // Relay's default.
            max_envelope_decompressed_bytes: 200 << 20,
        }
    }
}

/// Bounds on connections, so slow or idle clients cannot hold the server's sockets,
/// tasks and temp files. docs/security.md lists them with the attacks they stop.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this time from when the server starts
    /// waiting for them (slowloris). hyper's timer: it also runs while a kept-alive
    /// connection waits for its next request, so it bounds idle time too.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request since its last answer is closed after
    /// this (at most `header_read_timeout`, whose timer runs meanwhile as well).
    pub idle_timeout: Duration,
    /// Request bodies must arrive at this many bytes per second on average, after
    /// `body_grace`; a slower body is answered 408. 0 turns the check off.
    pub min_body_rate: u64,
    /// Time a body may take before `min_body_rate` applies (a slow start, a stall).
    pub body_grace: Duration,
    /// Connections served at once; past it new ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            min_body_rate: 4 << 10,
            body_grace: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            dsyms_dir: PathBuf::from("./dsyms"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_dsym_upload_bytes: 2 << 30,
            ingest_limits: IngestLimits::default(),
            conversion_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            max_crash_bytes: 10 << 20,
            max_crash_threads: 512,
            max_crash_frames: 512,
            retention_days: 90,
            symcache_cache_bytes: 1 << 30,
            connections: ConnectionLimits::default(),
            public_url: None,
            grouping_rules: None,
            sentry: SentryConfig::default(),
            webhooks: WebhookConfig::default(),
        }
    }
}

impl Config {
    /// Where people and devices reach the server, without a trailing slash.
    /// The grouping rules file in effect, if any: the one named, else
    /// `DATA_DIR/grouping.rules` when it exists.
    pub fn grouping_rules_file(&self) -> Option<PathBuf> {
        match &self.grouping_rules {
            Some(path) => Some(path.clone()),
            None => {
                let default = self.data_dir.join("grouping.rules");
                default.is_file().then_some(default)
            }
        }
    }

    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// What one crash report may make the parser do.
    pub fn parse_limits(&self) -> crate::report::ParseLimits {
        crate::report::ParseLimits {
            max_bytes: usize::try_from(self.max_crash_bytes).unwrap_or(usize::MAX),
            max_threads: self.max_crash_threads,
            max_frames: self.max_crash_frames,
            ..crate::report::ParseLimits::default()
        }
    }
}

/// Parses a byte size: a plain number of bytes, or a number with a unit such as `10MB`,
/// `512KiB` or `2GiB` (decimal and binary units both mean powers of 1024, as operators
/// expect from disk tools).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text, "a size like 10MB or 2GiB")?;
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Splits `10MB` into 10 and `mb` (the unit trimmed and lowercased).
fn number_and_unit(text: &str, expected: &str) -> Result<(u64, String), String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = number
        .parse()
        .map_err(|_| format!("`{text}` is not {expected}"))?;
    Ok((number, unit.trim().to_ascii_lowercase()))
}

/// Parses a duration: a number of seconds, or a number with `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text, "a duration like 10s or 500ms")?;
    let millis = match unit.as_str() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("unknown duration unit `{other}` in `{text}`")),
    };
    number
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        for (text, want) in [
            ("10", Some(Duration::from_secs(10))),
            ("10s", Some(Duration::from_secs(10))),
            ("500ms", Some(Duration::from_millis(500))),
            ("2m", Some(Duration::from_secs(120))),
            ("x", None),
            ("1 week", None),
        ] {
            assert_eq!(parse_duration(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn byte_sizes_parse_with_and_without_units() {
        for (text, want) in [
            ("10", Some(10)),
            ("10MB", Some(10 << 20)),
            ("2GiB", Some(2 << 30)),
            ("512 kib", Some(512 << 10)),
            ("x", None),
            ("10 parsecs", None),
        ] {
            assert_eq!(parse_byte_size(text).ok(), want, "{text}");
        }
    }
}
