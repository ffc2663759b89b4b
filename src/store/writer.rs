//! The one writer: a thread that owns the read-write connection and runs every write.
//!
//! SQLite takes one writer at a time anyway; funnelling writes through one thread turns
//! that into group commit. The thread takes the first job waiting, lingers
//! [`LINGER`] for more, runs them all in one transaction, commits, and only then answers
//! each job: a 2xx built on an answer means `COMMIT` returned, and with
//! `synchronous=FULL` that means the WAL was fsynced.
//!
//! A job that fails must fail only its own caller. Jobs run without savepoints first
//! (a savepoint per job cost a tenth of the writer's throughput); when one fails, the
//! whole transaction is rolled back and every job of the batch runs again, each in a
//! savepoint of its own, so the failing one is undone alone. Jobs are `Fn` for that.
//!
//! Background jobs (re-symbolication, retention, vacuum) wait behind every waiting
//! upload and run one per transaction, so they use the writer's idle time and delay an
//! upload by at most one of them.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;

/// After the first job of a batch arrives, the writer waits this long for more. Every
/// commit costs an fsync of the WAL, so under load this trades a millisecond of latency
/// for several times fewer of them.
const LINGER: Duration = Duration::from_millis(1);

/// Bounds one transaction, so a flood cannot make one commit (and its answers) wait long.
const MAX_BATCH: usize = 256;

/// Whether a job is answered before background work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
    /// A caller is waiting: uploads, reads of their outcome, index writes.
    Now,
    /// Re-symbolication, retention, vacuum: taken one job per transaction, only when no
    /// `Now` job waits, so a long backlog of them never delays an upload by more than
    /// one such job.
    Background,
}

/// One unit of work for the writer.
trait Job: Send {
    /// Runs inside the batch's transaction and keeps the outcome; false when it failed.
    /// May run again after the transaction was rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Runs within a savepoint of its own, so a failure undoes only this job's writes.
    fn run_alone(&mut self, conn: &Connection);
    /// Answers the caller once the batch's `COMMIT` succeeded (`Ok`) or failed.
    fn finish(self: Box<Self>, committed: Result<(), &str>);
    /// Whether it only adds crashes whose counter changes wait for the flush before
    /// `COMMIT`. Any other job runs after the waiting changes are applied, so it sees
    /// (and moves, and changes the state of) groups as the crashes before it left them.
    fn defers_counters(&self) -> bool;
}

struct Typed<F, T> {
    work: F,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    defers_counters: bool,
}

impl<F, T> Typed<F, T>
where
    F: Fn(&Connection) -> Result<T, StoreError> + Send,
{
    /// The job's work; a panic is an error of this job, not the end of the writer.
    fn attempt(&self, conn: &Connection) -> Result<T, StoreError> {
        std::panic::catch_unwind(AssertUnwindSafe(|| (self.work)(conn)))
            .unwrap_or_else(|_| Err(StoreError::Writer("a write panicked".into())))
    }
}

impl<F, T> Job for Typed<F, T>
where
    F: Fn(&Connection) -> Result<T, StoreError> + Send,
    T: Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let outcome = self.attempt(conn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn run_alone(&mut self, conn: &Connection) {
        let outcome = match conn.execute_batch("SAVEPOINT job") {
            Err(err) => Err(err.into()),
            Ok(()) => {
                let outcome = self.attempt(conn);
                let close = if outcome.is_ok() {
                    "RELEASE job"
                } else {
                    "ROLLBACK TO job; RELEASE job"
                };
                match conn.execute_batch(close) {
                    Ok(()) => outcome,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot close a job's savepoint");
                        Err(err.into())
                    }
                }
            }
        };
        self.outcome = Some(outcome);
    }

    fn finish(self: Box<Self>, committed: Result<(), &str>) {
        let answer = match (self.outcome, committed) {
            (Some(Err(err)), _) => Err(err),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)), Err(why)) => Err(StoreError::Writer(format!("commit failed: {why}"))),
            (None, Err(why)) => Err(StoreError::Writer(why.to_owned())),
            (None, Ok(())) => Err(StoreError::Writer("the job did not run".into())),
        };
        let _ = self.reply.send(answer);
    }

    fn defers_counters(&self) -> bool {
        self.defers_counters
    }
}

/// The handle the store keeps; the thread stops when every handle is gone.
pub(super) struct Writer {
    jobs: mpsc::Sender<(Priority, Box<dyn Job>)>,
    alive: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(super) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        std::thread::Builder::new()
            .name("crashbox-writer".into())
            .spawn(move || {
                // Cleared however the thread ends, a panic included: `/readyz` reads it.
                struct Alive(Arc<AtomicBool>);
                impl Drop for Alive {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::SeqCst);
                    }
                }
                let _alive = Alive(flag);
                run(&conn, &queue);
            })
            .map_err(|e| StoreError::io("starting the writer thread", e))?;
        Ok(Writer { jobs, alive })
    }

    /// Whether the writer thread still runs.
    pub(super) fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Queues `work`; the answer arrives after the batch holding it has committed.
    pub(super) fn submit<T, F>(
        &self,
        priority: Priority,
        work: F,
    ) -> oneshot::Receiver<Result<T, StoreError>>
    where
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.submit_job(priority, work, false)
    }

    pub(super) fn submit_job<T, F>(
        &self,
        priority: Priority,
        work: F,
        defers_counters: bool,
    ) -> oneshot::Receiver<Result<T, StoreError>>
    where
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        // A send to a stopped thread drops the job and so its reply: the receiver then
        // reports the writer as gone.
        let job = Typed {
            work,
            outcome: None,
            reply,
            defers_counters,
        };
        let _ = self.jobs.send((priority, Box::new(job)));
        answer
    }

    /// Stores crashes whose counter changes go to the batch's flush (`crashes::insert`),
    /// and waits, from an async task.
    pub(super) async fn write_crashes<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.submit_job(Priority::Now, work, true)
            .await
            .unwrap_or_else(|_| Err(gone()))
    }

    /// [`Writer::submit`] and wait, from an async task.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(Priority::Now, work)
            .await
            .unwrap_or_else(|_| Err(gone()))
    }

    /// [`Writer::submit`] and wait, from a thread that may block (never the executor).
    pub(super) fn write_blocking<T, F>(&self, priority: Priority, work: F) -> Result<T, StoreError>
    where
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(priority, work)
            .blocking_recv()
            .unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> StoreError {
    StoreError::Writer("the writer thread is gone".into())
}

/// Jobs taken off the channel, by priority.
#[derive(Default)]
struct Waiting {
    now: VecDeque<Box<dyn Job>>,
    background: VecDeque<Box<dyn Job>>,
}

impl Waiting {
    fn push(&mut self, (priority, job): (Priority, Box<dyn Job>)) {
        match priority {
            Priority::Now => self.now.push_back(job),
            Priority::Background => self.background.push_back(job),
        }
    }
}

/// The writer copies the WAL into the database, between two batches, this often...
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// ...or sooner once the WAL holds this many pages (4 MiB): a checkpoint holds up the
/// next batch for as long as it takes to copy and fsync them, so under a write load
/// that touches many pages (crashes spread over many groups) smaller and more frequent
/// checkpoints keep that pause short.
const CHECKPOINT_PAGES: i32 = 1000;

thread_local! {
    /// Pages in the WAL after the writer's last commit (SQLite's WAL hook sets it); the
    /// writer thread is the only one that commits on its connection.
    static WAL_PAGES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

fn count_wal_pages(_: &rusqlite::hooks::Wal, pages: std::os::raw::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|n| n.set(pages));
    Ok(())
}

/// Copies the WAL into the database. Run by the writer between batches, after their
/// answers went out: a checkpoint on another connection races the writer and, under
/// steady load, never catches up with it, so the WAL never restarts and grows until
/// `wal_autocheckpoint` stalls a commit with a huge copy. Between batches it copies
/// everything (unless a reader still holds an old snapshot), and the next transaction
/// starts the WAL from its beginning.
fn checkpoint(conn: &Connection) {
    if let Err(err) = super::checkpoint(conn, "PASSIVE") {
        tracing::warn!(error = %err, "WAL checkpoint failed; retried later");
    }
}

fn run(conn: &Connection, queue: &mpsc::Receiver<(Priority, Box<dyn Job>)>) {
    let mut waiting = Waiting::default();
    let mut checkpointed = Instant::now();
    // Replaces SQLite's own autocheckpoint (which would run inside a commit, before its
    // answers go out): the writer checkpoints itself, below.
    conn.wal_hook(Some(count_wal_pages));
    loop {
        let pages = WAL_PAGES.with(|n| n.get());
        if pages >= CHECKPOINT_PAGES || (pages > 0 && checkpointed.elapsed() >= CHECKPOINT_EVERY) {
            checkpoint(conn);
            WAL_PAGES.with(|n| n.set(0));
            checkpointed = Instant::now();
        }
        if waiting.now.is_empty() && waiting.background.is_empty() {
            let job = match queue.recv_timeout(CHECKPOINT_EVERY) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            waiting.push(job);
            // A first upload after a quiet spell waits a moment for company.
            if !waiting.now.is_empty() {
                let linger_until = Instant::now() + LINGER;
                while waiting.now.len() < MAX_BATCH {
                    let wait = linger_until.saturating_duration_since(Instant::now());
                    match queue.recv_timeout(wait) {
                        Ok(job) => waiting.push(job),
                        Err(_) => break,
                    }
                }
            }
        }
        while let Ok(job) = queue.try_recv() {
            waiting.push(job);
        }
        let batch: Vec<Box<dyn Job>> = if waiting.now.is_empty() {
            waiting.background.pop_front().into_iter().collect()
        } else {
            let n = waiting.now.len().min(MAX_BATCH);
            waiting.now.drain(..n).collect()
        };
        commit_batch(conn, batch);
    }
}

fn commit_batch(conn: &Connection, mut batch: Vec<Box<dyn Job>>) {
    let committed = run_batch(conn, &mut batch).map_err(|err| {
        // A failed COMMIT may leave the transaction open; nothing of it stays.
        let _ = conn.execute_batch("ROLLBACK");
        super::crashes::discard_pending();
        tracing::error!(error = %err, "store write batch failed");
        err.to_string()
    });
    tracing::trace!(
        jobs = batch.len(),
        ok = committed.is_ok(),
        "store batch done"
    );
    for job in batch {
        job.finish(committed.as_ref().map(|_| ()).map_err(String::as_str));
    }
}

/// One transaction over `batch`: every job without savepoints, and, if one fails, all
/// of them again each in its own savepoint.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
    super::crashes::discard_pending();
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut all_ok = true;
    for job in batch.iter_mut() {
        // A job that reads or moves counters sees those of the crashes before it.
        if !job.defers_counters() && super::crashes::flush_pending(conn).is_err() {
            all_ok = false;
            break;
        }
        if !job.run(conn) {
            all_ok = false;
            break;
        }
    }
    if !all_ok {
        super::crashes::discard_pending();
        // SQLite may have rolled the whole transaction back itself (a full disk, an
        // I/O error); then there is nothing left to roll back.
        if !conn.is_autocommit() {
            conn.execute_batch("ROLLBACK")?;
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for job in batch.iter_mut() {
            // Outside the job's savepoint: a failing job must not take the counters of
            // the crashes before it along.
            if !job.defers_counters() {
                super::crashes::flush_pending(conn)?;
            }
            job.run_alone(conn);
            if conn.is_autocommit() {
                // The job's failure took the transaction with it, and every earlier
                // job's writes too: without a transaction, later jobs would commit one
                // by one and the summed counters would apply to rows that are gone.
                super::crashes::discard_pending();
                return Err(StoreError::Writer(
                    "SQLite rolled the batch back after a failed write".into(),
                ));
            }
        }
    }
    // The counters the batch's inserts summed commit with them.
    super::crashes::flush_pending(conn)?;
    conn.execute_batch("COMMIT")?;
    Ok(())
}
