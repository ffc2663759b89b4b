//! End-to-end tests: the real server on a random port over a temp data dir, spoken to
//! over a real socket. One binary, so the crate is linked once.

mod cli;
mod crashes;
mod dsyms;
mod grouping;
mod hostile;
mod ops;
mod privacy;
mod sentry;
mod store;
mod support;
mod symbolication;
mod timeouts;
mod triage;
mod ui;
mod webhooks;
