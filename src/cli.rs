//! The command line: `crashbox serve`, `token create|list|revoke`, `upload-dsyms`, `send-crash`,
//! `symbolicate`, `backup`, `groups list|show|resolve|ignore|reopen|merge|unmerge`. Each command
//! parses its flags (with `CRASHBOX_*` environment twins) and calls into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::{Scope, TokenStore};
use crate::client::{Client, ClientError};
use crate::config::{
    parse_byte_size, parse_duration, Config, ConnectionLimits, SentryConfig, WebhookConfig,
};
use crate::debug_files::IngestLimits;
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "crashbox",
    version,
    about = "Self-hosted crash symbolication and triage for iOS and macOS apps"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: HTTP API, debug-file store and crash store.
    Serve(ServeArgs),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Upload debug files (dSYMs, zips, .xcarchive, Mach-O, ELF, Breakpad) to a server.
    UploadDsyms(UploadArgs),
    /// Send crash reports (.ips, .crash, MetricKit, Sentry or crashbox JSON) to a server.
    SendCrash(SendCrashArgs),
    /// Symbolicate a crash report offline, with local debug files: no server needed.
    Symbolicate(SymbolicateArgs),
    /// List, show and change crash groups on a server (for scripts; `--json` for the
    /// API's own answers).
    Groups {
        #[command(subcommand)]
        command: GroupsCommand,
    },
    /// Copy the store to one file, consistently, while a server may be running.
    Backup {
        #[arg(long, env = "CRASHBOX_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Where to write the copy (a SQLite database file).
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Debug, Args)]
struct SendCrashArgs {
    /// The server, e.g. http://127.0.0.1:8080
    #[arg(long, env = "CRASHBOX_URL")]
    url: String,
    /// A token of scope `ingest` (or `admin`).
    #[arg(long, env = "CRASHBOX_TOKEN", hide_env_values = true)]
    token: String,
    /// Print the server's JSON answers instead of a summary.
    #[arg(long)]
    json: bool,
    /// Report files, in any accepted format.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Where the server is and who asks.
#[derive(Debug, Args)]
struct ServerArgs {
    /// The server, e.g. http://127.0.0.1:8080
    #[arg(long, env = "CRASHBOX_URL")]
    url: String,
    /// A token: `read` to list and show, `triage` (or `admin`) to change groups.
    #[arg(long, env = "CRASHBOX_TOKEN", hide_env_values = true)]
    token: String,
    /// Print the server's JSON answer instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum GroupsCommand {
    /// Groups, one line each: id, status, crashes, devices, last seen, title.
    List {
        #[command(flatten)]
        server: ServerArgs,
        /// `unresolved`, `resolved`, `ignored`, `regressed`, or several comma-separated.
        #[arg(long)]
        status: Option<String>,
        /// Groups with crashes in this release (`bundle version (build)` or `version (build)`).
        #[arg(long)]
        release: Option<String>,
        /// Groups first seen in this release.
        #[arg(long)]
        new_in: Option<String>,
        /// `iOS` or `iOS 17.1`.
        #[arg(long)]
        os: Option<String>,
        #[arg(long)]
        device_model: Option<String>,
        /// Text in the title, culprit or signature.
        #[arg(long, short = 'q')]
        query: Option<String>,
        /// count, devices, last_seen, first_seen or trend.
        #[arg(long, default_value = "last_seen")]
        sort: String,
        /// Groups per page (at most 500).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Follow the cursor to the end instead of one page.
        #[arg(long)]
        all: bool,
    },
    /// One group: state, counts, releases, OS and device spread, call paths, activity.
    Show {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
    },
    /// Resolve a group: plainly, in a release (`--in "1.2.0 (42)"`), or `--in next`.
    Resolve {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
        #[arg(long = "in")]
        release: Option<String>,
    },
    /// Ignore a group: for good, until N more crashes, or until a time (RFC 3339).
    Ignore {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
        #[arg(long, conflicts_with = "until")]
        until_count: Option<i64>,
        #[arg(long)]
        until: Option<String>,
    },
    /// Set a group back to unresolved.
    Reopen {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
    },
    /// Merge groups into the first one: their crashes move, and later crashes of their
    /// signatures land in it.
    Merge {
        #[command(flatten)]
        server: ServerArgs,
        target: String,
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Give merged signatures their own groups back.
    Unmerge {
        #[command(flatten)]
        server: ServerArgs,
        id: String,
        #[arg(long = "signature", required = true)]
        signatures: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct SymbolicateArgs {
    /// Debug files: a directory (searched recursively), a zip, a .dSYM bundle or a file.
    /// Repeat for several.
    #[arg(long = "dsyms", value_name = "PATH")]
    dsyms: Vec<PathBuf>,
    /// Do not keep converted SymCaches in the cache dir between runs.
    #[arg(long)]
    no_cache: bool,
    /// Where converted SymCaches are kept between runs.
    #[arg(long, env = "CRASHBOX_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Output: the crash JSON, or Apple's text report.
    #[arg(long, value_enum, default_value = "json")]
    format: OutputFormat,
    /// The report: .ips, .crash, MetricKit JSON, Sentry event JSON or crashbox JSON;
    /// `-` reads standard input.
    report: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Json,
    Apple,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where the embedded store, tokens and the first admin token live.
    #[arg(long, env = "CRASHBOX_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Where debug files and SymCaches live.
    #[arg(long, env = "CRASHBOX_DSYMS_DIR", default_value = "./dsyms")]
    dsyms_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "CRASHBOX_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Log line format.
    #[arg(long, env = "CRASHBOX_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Largest debug-file upload body (e.g. 2GiB, 500MB).
    #[arg(long, env = "CRASHBOX_MAX_DSYM_UPLOAD_SIZE", default_value = "2GiB", value_parser = parse_byte_size)]
    max_dsym_upload_size: u64,
    /// Largest total a zip may expand to.
    #[arg(long, env = "CRASHBOX_MAX_ZIP_UNCOMPRESSED_SIZE", default_value = "8GiB", value_parser = parse_byte_size)]
    max_zip_uncompressed_size: u64,
    /// Largest expansion ratio of a whole zip and of one entry over 1 MiB (any zip may
    /// expand to 16 MiB).
    #[arg(long, env = "CRASHBOX_MAX_ZIP_RATIO", default_value_t = 200)]
    max_zip_ratio: u64,
    /// How many uploads convert debug files at once (default: number of cores).
    #[arg(long, env = "CRASHBOX_CONVERSION_WORKERS")]
    conversion_workers: Option<usize>,
    /// Largest crash report body (e.g. 10MB).
    #[arg(long, env = "CRASHBOX_MAX_CRASH_SIZE", default_value = "10MB", value_parser = parse_byte_size)]
    max_crash_size: u64,
    /// Threads kept per crash report; the rest are dropped and noted.
    #[arg(long, env = "CRASHBOX_MAX_CRASH_THREADS", default_value_t = 512)]
    max_crash_threads: usize,
    /// Frames kept per thread; the rest are dropped and noted.
    #[arg(long, env = "CRASHBOX_MAX_CRASH_FRAMES", default_value_t = 512)]
    max_crash_frames: usize,
    /// Delete crashes older than this many days (0 keeps them forever).
    #[arg(long, env = "CRASHBOX_RETENTION_DAYS", default_value_t = 90)]
    retention_days: u32,
    /// Memory for open SymCaches shared by all requests (e.g. 1GiB).
    #[arg(long, env = "CRASHBOX_SYMCACHE_CACHE_SIZE", default_value = "1GiB", value_parser = parse_byte_size)]
    symcache_cache_size: u64,
    /// Time a client has to send a request's headers (e.g. 10s, 500ms); it also bounds
    /// how long a connection may wait for its next request.
    #[arg(long, env = "CRASHBOX_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// A kept-alive connection with no new request this long after its last answer is
    /// closed.
    #[arg(long, env = "CRASHBOX_IDLE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Slowest request body accepted, in bytes per second after --body-grace (408
    /// below it); 0 turns the check off.
    #[arg(long, env = "CRASHBOX_MIN_BODY_RATE", default_value = "4KiB", value_parser = parse_byte_size)]
    min_body_rate: u64,
    /// Time a request body may take before --min-body-rate applies.
    #[arg(long, env = "CRASHBOX_BODY_GRACE", default_value = "10s", value_parser = parse_duration)]
    body_grace: Duration,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, env = "CRASHBOX_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Where people and devices reach this server (DSNs, links); default
    /// http://<listen address>.
    #[arg(long, env = "CRASHBOX_PUBLIC_URL")]
    public_url: Option<String>,
    /// Grouping rules added to the built-in ones (docs/grouping.md); default
    /// DATA_DIR/grouping.rules when it exists. A change re-signs stored crashes.
    #[arg(long, env = "CRASHBOX_GROUPING_RULES")]
    grouping_rules: Option<PathBuf>,
    /// Chunk size sentry-cli is told to upload in (a power of two, e.g. 8MiB).
    #[arg(long, env = "CRASHBOX_SENTRY_CHUNK_SIZE", default_value = "8MiB", value_parser = parse_chunk_size)]
    sentry_chunk_size: u64,
    /// Leave `debug_files` out of the upload options, so sentry-cli 2.x uses its legacy
    /// zip upload (3.x always uses chunks).
    #[arg(long, env = "CRASHBOX_SENTRY_LEGACY_UPLOAD", value_parser = clap::builder::BoolishValueParser::new())]
    sentry_legacy_upload: bool,
    /// Uploaded sentry-cli chunks no assemble claims are deleted once this old.
    #[arg(long, env = "CRASHBOX_SENTRY_CHUNK_EXPIRY", default_value = "1h", value_parser = parse_duration)]
    sentry_chunk_expiry: Duration,
    /// SDK envelopes per minute per ingest token (0: no limit).
    #[arg(
        long,
        env = "CRASHBOX_SENTRY_RATE_PER_TOKEN",
        default_value_t = 120_000
    )]
    sentry_rate_per_token: u32,
    /// SDK envelopes per minute per source address (0: no limit).
    #[arg(long, env = "CRASHBOX_SENTRY_RATE_PER_ADDRESS", default_value_t = 600)]
    sentry_rate_per_address: u32,
    /// Largest SDK envelope body as sent, compressed (e.g. 20MiB).
    #[arg(long, env = "CRASHBOX_MAX_ENVELOPE_SIZE", default_value = "20MiB", value_parser = parse_byte_size)]
    max_envelope_size: u64,
    /// Most an SDK envelope may decompress to (e.g. 200MiB).
    #[arg(long, env = "CRASHBOX_MAX_ENVELOPE_DECOMPRESSED_SIZE", default_value = "200MiB", value_parser = parse_byte_size)]
    max_envelope_decompressed_size: u64,
    /// Time one webhook delivery attempt may take.
    #[arg(long, env = "CRASHBOX_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    webhook_timeout: Duration,
    /// Webhook deliveries in flight at once.
    #[arg(long, env = "CRASHBOX_WEBHOOK_CONCURRENCY", default_value_t = 4)]
    webhook_concurrency: usize,
    /// A webhook delivery failing this long after its event is given up (e.g. 24h).
    #[arg(long, env = "CRASHBOX_WEBHOOK_RETRY_FOR", default_value = "24h", value_parser = parse_duration)]
    webhook_retry_for: Duration,
    /// Longest wait between two attempts of a delivery (backoff doubles from 1s).
    #[arg(long, env = "CRASHBOX_WEBHOOK_MAX_BACKOFF", default_value = "10m", value_parser = parse_duration)]
    webhook_max_backoff: Duration,
    /// Deliver webhooks to link-local and cloud metadata addresses (169.254.0.0/16,
    /// fe80::/10, fd00:ec2::254), refused by default (docs/webhooks.md, SSRF).
    #[arg(long, env = "CRASHBOX_WEBHOOK_ALLOW_LINK_LOCAL", value_parser = clap::builder::BoolishValueParser::new())]
    webhook_allow_link_local: bool,
    /// group.spike: at least this many crashes of a group in the last hour...
    #[arg(long, env = "CRASHBOX_WEBHOOK_SPIKE_MIN", default_value_t = 50)]
    webhook_spike_min: u64,
    /// ...and at least this multiple of its trailing 24-hour hourly average...
    #[arg(long, env = "CRASHBOX_WEBHOOK_SPIKE_FACTOR", default_value_t = 5.0)]
    webhook_spike_factor: f64,
    /// ...at most once per group in this window.
    #[arg(long, env = "CRASHBOX_WEBHOOK_SPIKE_WINDOW", default_value = "6h", value_parser = parse_duration)]
    webhook_spike_window: Duration,
}

/// A sentry-cli chunk size: a power of two (sentry-cli 2.x requires it), 4 KiB to 256 MiB.
fn parse_chunk_size(text: &str) -> Result<u64, String> {
    let size = parse_byte_size(text)?;
    if !size.is_power_of_two() || !(4 << 10..=256 << 20).contains(&size) {
        return Err(format!(
            "`{text}` is no power of two between 4KiB and 256MiB"
        ));
    }
    Ok(size)
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; its secret is printed once, as the last word on stdout.
    Create {
        #[arg(long, env = "CRASHBOX_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// ingest (send crashes; safe in an app), upload (debug files), read, triage
        /// (read and change groups), admin.
        #[arg(long)]
        scope: Scope,
        /// Who the token is for (e.g. "ios-ci"): shown by `token list` and in activity.
        #[arg(long)]
        name: Option<String>,
        /// Where devices reach the server: an ingest token's DSN is built from it.
        /// Default: http://<CRASHBOX_LISTEN, else 127.0.0.1:8080>.
        #[arg(long, env = "CRASHBOX_PUBLIC_URL")]
        public_url: Option<String>,
    },
    /// List tokens: short id, scope, name, creation time. Never the secrets.
    List {
        #[arg(long, env = "CRASHBOX_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Revoke a token by its short id (from `token list`) or its name. A running
    /// server refuses it from its next request on.
    Revoke {
        #[arg(long, env = "CRASHBOX_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// The token's short id or name.
        id: String,
    },
}

#[derive(Debug, Args)]
struct UploadArgs {
    /// The server, e.g. http://127.0.0.1:8080
    #[arg(long, env = "CRASHBOX_URL")]
    url: String,
    /// A token of scope `upload` or `admin`.
    #[arg(long, env = "CRASHBOX_TOKEN", hide_env_values = true)]
    token: String,
    /// The release these files belong to, e.g. "com.example.app 1.2.0 (42)".
    #[arg(long)]
    release: Option<String>,
    /// Print the server's JSON answers instead of a summary.
    #[arg(long)]
    json: bool,
    /// Files or directories: dSYMs.zip, Foo.dSYM, Foo.xcarchive, Mach-O, ELF, .sym.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token {
            command:
                TokenCommand::Create {
                    data_dir,
                    scope,
                    name,
                    public_url,
                },
        } => token_create(data_dir, scope, name.as_deref(), public_url),
        Command::Token {
            command: TokenCommand::List { data_dir },
        } => token_list(data_dir),
        Command::Token {
            command: TokenCommand::Revoke { data_dir, id },
        } => token_revoke(data_dir, &id),
        Command::UploadDsyms(args) => upload_dsyms(args),
        Command::SendCrash(args) => send_crash(args),
        Command::Symbolicate(args) => symbolicate(args),
        Command::Backup { data_dir, to } => backup(&data_dir, &to),
        Command::Groups { command } => groups(command),
    }
}

fn groups(command: GroupsCommand) -> ExitCode {
    use crate::client::encode;
    use serde_json::{json, Value};
    let group_path = |id: &str| format!("/api/v1/groups/{}", encode(id));
    // (server, method, path, body) of the one request a command makes, except `list`.
    let (server, method, path, body): (ServerArgs, &str, String, Option<Value>) = match command {
        GroupsCommand::List {
            server,
            status,
            release,
            new_in,
            os,
            device_model,
            query,
            sort,
            limit,
            all,
        } => {
            let mut params = vec![format!("sort={}", encode(&sort)), format!("limit={limit}")];
            for (name, value) in [
                ("status", status),
                ("release", release),
                ("new_in", new_in),
                ("os", os),
                ("device_model", device_model),
                ("q", query),
            ] {
                if let Some(value) = value {
                    params.push(format!("{name}={}", encode(&value)));
                }
            }
            return list_groups(&server, &params.join("&"), all);
        }
        GroupsCommand::Show { server, id } => (server, "GET", group_path(&id), None),
        GroupsCommand::Resolve {
            server,
            id,
            release,
        } => {
            let mut body = json!({"status": "resolved"});
            if let Some(release) = release {
                body["resolved_in"] = json!(release);
            }
            (server, "PATCH", group_path(&id), Some(body))
        }
        GroupsCommand::Ignore {
            server,
            id,
            until_count,
            until,
        } => {
            let mut body = json!({"status": "ignored"});
            if let Some(n) = until_count {
                body["until_count"] = json!(n);
            }
            if let Some(until) = until {
                body["until"] = json!(until);
            }
            (server, "PATCH", group_path(&id), Some(body))
        }
        GroupsCommand::Reopen { server, id } => (
            server,
            "PATCH",
            group_path(&id),
            Some(json!({"status": "unresolved"})),
        ),
        GroupsCommand::Merge {
            server,
            target,
            groups,
        } => (
            server,
            "POST",
            format!("{}/merge", group_path(&target)),
            Some(json!({ "groups": groups })),
        ),
        GroupsCommand::Unmerge {
            server,
            id,
            signatures,
        } => (
            server,
            "POST",
            format!("{}/unmerge", group_path(&id)),
            Some(json!({ "signatures": signatures })),
        ),
    };
    let client = Client::new(&server.url, &server.token);
    let answer = match &body {
        None => client.get_json(&path),
        Some(body) => client.send_json(method, &path, body),
    };
    match answer {
        Ok(answer) if server.json => {
            println!("{}", answer.body);
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            print_group(&answer.body);
            ExitCode::SUCCESS
        }
        Err(err) => client_failed(&server, err),
    }
}

fn client_failed(server: &ServerArgs, err: ClientError) -> ExitCode {
    eprintln!("crashbox: {err}");
    if let (true, ClientError::Rejected { body, .. }) = (server.json, &err) {
        println!("{body}");
    }
    match err {
        ClientError::Rejected { status, .. } if status < 500 => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

fn list_groups(server: &ServerArgs, query: &str, all: bool) -> ExitCode {
    let client = Client::new(&server.url, &server.token);
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/groups?{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", crate::client::encode(cursor)));
        }
        let page = match client.get_json(&path) {
            Ok(answer) => answer.body,
            Err(err) => return client_failed(server, err),
        };
        if server.json {
            println!("{page}");
        } else {
            for g in page["groups"].as_array().into_iter().flatten() {
                let text = |k: &str| g[k].as_str().unwrap_or("-").to_owned();
                println!(
                    "{}  {:<10}  {:>7}  {:>7}  {}  {}",
                    text("id"),
                    text("status"),
                    g["count"],
                    g["devices"],
                    text("last_seen"),
                    text("title")
                );
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) if all => cursor = Some(next.to_owned()),
            Some(next) => {
                eprintln!("(more: --all, or the cursor {next})");
                return ExitCode::SUCCESS;
            }
            None => return ExitCode::SUCCESS,
        }
    }
}

/// A group's answer as readable lines.
fn print_group(g: &serde_json::Value) {
    let text = |k: &str| g[k].as_str().unwrap_or("-").to_owned();
    println!("{}  {}", text("id"), text("title"));
    if let Some(culprit) = g["culprit"].as_str() {
        println!("  culprit:   {culprit}");
    }
    let mut status = text("status");
    if let Some(release) = g["resolved_in"].as_str() {
        status.push_str(&format!(" in {release}"));
    }
    println!("  status:    {status}");
    println!(
        "  crashes:   {} on {} devices, {} .. {}",
        g["count"],
        g["devices"],
        text("first_seen"),
        text("last_seen")
    );
    println!(
        "  releases:  first {}, last {}",
        text("first_release"),
        text("last_release")
    );
    for (key, label, field) in [
        ("releases", "release", "release"),
        ("os", "os", "os"),
        ("device_models", "model", "device_model"),
        ("variants", "call path", "variant"),
    ] {
        for item in g[key].as_array().into_iter().flatten() {
            println!(
                "  {label:<10} {:>6}  {}",
                item["count"],
                item[field].as_str().unwrap_or("-")
            );
        }
    }
    for a in g["activity"].as_array().into_iter().flatten() {
        println!(
            "  {}  {} {} {}",
            a["at"].as_str().unwrap_or(""),
            a["actor"].as_str().unwrap_or(""),
            a["action"].as_str().unwrap_or(""),
            a["to"].as_str().unwrap_or("")
        );
    }
}

fn backup(data_dir: &std::path::Path, to: &std::path::Path) -> ExitCode {
    if !data_dir.join(crate::store::DB_FILE).is_file() {
        eprintln!(
            "crashbox: no store in {} (expected {})",
            data_dir.display(),
            crate::store::DB_FILE
        );
        return ExitCode::from(2);
    }
    match crate::store::Store::backup(data_dir, to) {
        Ok(()) => {
            println!("backed up {} to {}", data_dir.display(), to.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("crashbox: backup failed: {err}");
            ExitCode::FAILURE
        }
    }
}

fn symbolicate(args: SymbolicateArgs) -> ExitCode {
    let bytes = if args.report.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(&args.report)
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(err) => {
            eprintln!("crashbox: {}: {err}", args.report.display());
            return ExitCode::FAILURE;
        }
    };
    // Offline, the file is the user's own: no cap on crashes per payload or JSON
    // values, which bound what one request may cost a server.
    let limits = crate::report::ParseLimits {
        max_reports: usize::MAX,
        max_json_values: usize::MAX,
        ..crate::report::ParseLimits::default()
    };
    let reports = match crate::report::parse(&bytes, &limits) {
        Ok(reports) => reports,
        Err(err) => {
            eprintln!("crashbox: {}: {err}", args.report.display());
            return ExitCode::FAILURE;
        }
    };
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.or_else(default_cache_dir)
    };
    let debug_files =
        match crate::debug_files::LocalDebugFiles::load(&args.dsyms, cache_dir.as_deref()) {
            Ok(files) => files,
            Err(err) => {
                eprintln!("crashbox: {err}");
                return ExitCode::FAILURE;
            }
        };
    for warning in &debug_files.warnings {
        eprintln!("crashbox: warning: {warning}");
    }
    let mut rendered = Vec::new();
    for report in &reports {
        let crash = crate::symbolicate::symbolicate(report, &debug_files);
        match args.format {
            OutputFormat::Json => rendered.push(crate::render::crash_json(
                report,
                &crash,
                &Default::default(),
            )),
            OutputFormat::Apple => print!("{}", crate::render::apple_text(report, &crash)),
        }
    }
    if let OutputFormat::Json = args.format {
        let out = match rendered.len() {
            1 => rendered.pop().unwrap_or_default(),
            _ => serde_json::Value::Array(rendered),
        };
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    ExitCode::SUCCESS
}

fn serve(args: ServeArgs) -> ExitCode {
    telemetry::init(args.log_format);
    let mut config = Config {
        data_dir: args.data_dir,
        dsyms_dir: args.dsyms_dir,
        listen: args.listen,
        max_dsym_upload_bytes: args.max_dsym_upload_size,
        ingest_limits: IngestLimits {
            max_uncompressed_bytes: args.max_zip_uncompressed_size,
            max_compression_ratio: args.max_zip_ratio,
            ..IngestLimits::default()
        },
        ..Config::default()
    };
    config.max_crash_bytes = args.max_crash_size;
    config.max_crash_threads = args.max_crash_threads.max(1);
    config.max_crash_frames = args.max_crash_frames.max(1);
    config.retention_days = args.retention_days;
    config.symcache_cache_bytes = usize::try_from(args.symcache_cache_size).unwrap_or(usize::MAX);
    config.connections = ConnectionLimits {
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        min_body_rate: args.min_body_rate,
        body_grace: args.body_grace,
        max_connections: args.max_connections.max(1),
    };
    config.public_url = args.public_url;
    config.grouping_rules = args.grouping_rules;
    config.sentry = SentryConfig {
        chunk_size: args.sentry_chunk_size,
        accept_debug_files: !args.sentry_legacy_upload,
        chunk_expiry: args.sentry_chunk_expiry,
        rate_per_token: args.sentry_rate_per_token,
        rate_per_address: args.sentry_rate_per_address,
        max_envelope_bytes: args.max_envelope_size,
        max_envelope_decompressed_bytes: args.max_envelope_decompressed_size,
    };
    config.webhooks = WebhookConfig {
        timeout: args.webhook_timeout,
        concurrency: args.webhook_concurrency.max(1),
        retry_for: args.webhook_retry_for,
        max_backoff: args.webhook_max_backoff.max(Duration::from_secs(1)),
        allow_link_local: args.webhook_allow_link_local,
        spike_min_count: args.webhook_spike_min,
        spike_factor: args.webhook_spike_factor,
        spike_window: args.webhook_spike_window,
    };
    if let Some(workers) = args.conversion_workers {
        config.conversion_workers = workers.max(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("crashbox: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::server::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("crashbox: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `$XDG_CACHE_HOME/crashbox`, else `~/.cache/crashbox`.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("crashbox"))
}

fn token_create(
    data_dir: PathBuf,
    scope: Scope,
    name: Option<&str>,
    public_url: Option<String>,
) -> ExitCode {
    let created = TokenStore::open(&data_dir).and_then(|tokens| tokens.create_named(scope, name));
    match created {
        Ok(token) => {
            println!("created {} token: {}", token.scope, token.token);
            if scope == Scope::Ingest {
                // stdout stays one line ending in the token; the DSN is for people.
                let public_url = public_url.unwrap_or_else(|| {
                    let listen = std::env::var("CRASHBOX_LISTEN")
                        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
                    format!("http://{listen}")
                });
                if public_url.contains("://0.0.0.0") || public_url.contains("://[::]") {
                    eprintln!("crashbox: devices cannot reach {public_url}; pass --public-url");
                }
                match crate::sentry::dsn(&public_url, &token.token) {
                    Some(dsn) => {
                        eprintln!("Sentry SDK DSN (SentrySDK.start {{ $0.dsn = \"…\" }}): {dsn}")
                    }
                    None => {
                        eprintln!("crashbox: no DSN: --public-url `{public_url}` is no http(s) URL")
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("crashbox: {err}");
            ExitCode::FAILURE
        }
    }
}

fn token_list(data_dir: PathBuf) -> ExitCode {
    match TokenStore::open(&data_dir).and_then(|tokens| tokens.list()) {
        Ok(tokens) => {
            println!("{:<8}  {:<6}  {:<30}  NAME", "ID", "SCOPE", "CREATED");
            for token in tokens {
                // `as_str`: Scope's Display ignores the column width.
                println!(
                    "{:<8}  {:<6}  {:<30}  {}",
                    token.id,
                    token.scope.as_str(),
                    token.created_at,
                    token.name.as_deref().unwrap_or("-")
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("crashbox: {err}");
            ExitCode::FAILURE
        }
    }
}

fn token_revoke(data_dir: PathBuf, which: &str) -> ExitCode {
    match TokenStore::open(&data_dir).and_then(|tokens| tokens.revoke(which)) {
        Ok(token) => {
            println!(
                "revoked {} token {}{}",
                token.scope,
                token.id,
                token.name.map(|n| format!(" ({n})")).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("crashbox: {err}");
            ExitCode::FAILURE
        }
    }
}

fn send_crash(args: SendCrashArgs) -> ExitCode {
    let client = Client::new(&args.url, &args.token);
    let mut failed = false;
    for path in &args.files {
        match client.send_crash(path) {
            Ok(answer) if args.json => println!("{}", answer.body),
            Ok(answer) => {
                let crashes = answer
                    .body
                    .get("crashes")
                    .and_then(|c| c.as_array())
                    .cloned()
                    .unwrap_or_default();
                for crash in crashes {
                    let field = |k: &str| crash.get(k).and_then(|v| v.as_str()).unwrap_or("");
                    let outcome = if crash.get("created").and_then(|v| v.as_bool()) == Some(false) {
                        "duplicate"
                    } else {
                        "stored"
                    };
                    println!(
                        "{}: {outcome} {} group {} {}",
                        path.display(),
                        field("id"),
                        field("group_id"),
                        field("signature")
                    );
                }
            }
            Err(err) => {
                failed = true;
                eprintln!("crashbox: {}: {err}", path.display());
                if let (true, ClientError::Rejected { body, .. }) = (args.json, &err) {
                    println!("{body}");
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn upload_dsyms(args: UploadArgs) -> ExitCode {
    let client = Client::new(&args.url, &args.token);
    let mut failed = false;
    for path in &args.paths {
        match client.upload_debug_files(path, args.release.as_deref()) {
            Ok(answer) if args.json => println!("{}", answer.body),
            Ok(answer) => print_upload_summary(path, &answer.body),
            Err(err) => {
                failed = true;
                eprintln!("crashbox: {}: {err}", path.display());
                if let ClientError::Rejected { body, .. } = &err {
                    if args.json {
                        println!("{body}");
                    } else {
                        print_upload_summary(path, body.get("error").unwrap_or(body));
                    }
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_upload_summary(path: &std::path::Path, body: &serde_json::Value) {
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    println!("{}:", path.display());
    for file in body
        .get("debug_files")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let features: Vec<&str> = [("has_debug_info", "debug info"), ("has_symbols", "symbols")]
            .iter()
            .filter(|(k, _)| file.get(*k).and_then(|v| v.as_bool()).unwrap_or(false))
            .map(|(_, label)| *label)
            .collect();
        println!(
            "  {:<16} {} {:<8} {:<8} {} ({})",
            text(file, "status"),
            text(file, "debug_id"),
            text(file, "arch"),
            text(file, "kind"),
            text(file, "name"),
            features.join(", ")
        );
    }
    for skipped in body
        .get("skipped")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        println!(
            "  skipped          {}: {}",
            text(skipped, "path"),
            text(skipped, "reason")
        );
    }
    for error in body
        .get("errors")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        println!(
            "  error            {}: {}",
            text(error, "path"),
            text(error, "message")
        );
    }
}
