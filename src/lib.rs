//! crashbox: a self-hosted crash symbolication and triage service for iOS and macOS apps.
//!
//! The binary in `main.rs` only parses flags and calls into this crate. The layout:
//!
//! - [`cli`]: the clap command tree (`serve`, `symbolicate`, `token`, `upload-dsyms`,
//!   `send-crash`) and what each command runs.
//! - [`config`]: one [`config::Config`] for the server, with its limits; flags and env
//!   twins map onto it in `cli`.
//! - [`telemetry`]: tracing setup, once per process.
//! - [`auth`]: API tokens and scopes. Tokens live as hashed files in the data dir so that
//!   `crashbox token create` works beside a running server.
//! - [`store`]: the only module that names SQLite: schema, migrations, the writer thread
//!   and the read pool.
//! - [`debug_files`]: the debug-file store. It walks uploads without trusting them
//!   (zips, fat Mach-O, ELF, Breakpad), indexes each object by debug id and arch, and
//!   converts it once to a SymCache under the dsyms dir.
//! - [`grouping`]: signatures (the crash site that names a group) and the rules
//!   behind them; pure.
//! - [`sentry`]: the Sentry protocols without HTTP: sentry-cli's chunks and assembled
//!   files, SDK envelopes, rate limits.
//! - [`app`]: the façade the HTTP handlers call; `Clone` over `Arc`s.
//! - [`http`]: the router, thin handlers and the one error-to-status map.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`release`]: checks release names clients send before anything keeps them.
//! - [`client`]: the HTTP client behind `upload-dsyms` and `send-crash`.
//! - [`server`]: binds, serves and shuts down gracefully.
//! - [`webhooks`]: webhook subscriptions and the delivery worker (the events themselves
//!   are queued by the store, in the transaction of the crashes that cause them).

pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod debug_files;
pub mod grouping;
pub mod http;
pub mod intake;
pub mod metrics;
pub mod release;
pub mod render;
pub mod report;
pub mod scrub;
pub mod sentry;
pub mod server;
pub mod store;
pub mod symbolicate;
pub mod telemetry;
pub mod triage;
mod util;
pub mod web;
pub mod webhooks;
