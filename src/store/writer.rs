//! The one writer: a thread that owns the read-write connection and runs every write.
//!
//! SQLite takes one writer at a time anyway; funnelling writes through one thread turns
//! that into group commit. The thread takes the first job waiting, lingers
//! [`LINGER`] for more, runs them all in one transaction (each inside its own
//! savepoint, so a job that fails is rolled back alone and fails only its own caller),
//! commits, and only then answers each job: a 2xx built on an answer means `COMMIT`
//! returned, and with `synchronous=FULL` that means the WAL was fsynced.
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

/// What a job hands back after running: called once the batch's `COMMIT` has succeeded
/// (`Ok`) or failed (`Err` with the reason).
type Finish = Box<dyn FnOnce(Result<(), &str>) + Send>;

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
    /// Runs inside the batch's transaction, within a savepoint of its own.
    fn run(self: Box<Self>, conn: &Connection) -> Finish;
    /// The batch could not even start.
    fn fail(self: Box<Self>, reason: &str);
}

struct Typed<F, T> {
    work: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Job for Typed<F, T>
where
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Finish {
        let Typed { work, reply } = *self;
        match in_savepoint(conn, work) {
            Ok(value) => Box::new(move |committed: Result<(), &str>| {
                let _ = reply.send(
                    committed
                        .map(|()| value)
                        .map_err(|why| StoreError::Writer(format!("commit failed: {why}"))),
                );
            }),
            Err(err) => Box::new(move |_| {
                let _ = reply.send(Err(err));
            }),
        }
    }

    fn fail(self: Box<Self>, reason: &str) {
        let _ = self.reply.send(Err(StoreError::Writer(reason.to_owned())));
    }
}

/// Runs `work` in a savepoint: its writes are kept if it succeeds and undone if it fails
/// or panics, without touching the rest of the batch.
fn in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT job")?;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|_| Err(StoreError::Writer("a write panicked".into())));
    match result {
        Ok(value) => {
            conn.execute_batch("RELEASE job")?;
            Ok(value)
        }
        Err(err) => {
            if let Err(undo) = conn.execute_batch("ROLLBACK TO job; RELEASE job") {
                tracing::error!(error = %undo, "cannot roll back a failed write");
            }
            Err(err)
        }
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
                run(&conn, &queue);
                flag.store(false, Ordering::SeqCst);
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
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        // A send to a stopped thread drops the job and so its reply: the receiver then
        // reports the writer as gone.
        let _ = self.jobs.send((priority, Box::new(Typed { work, reply })));
        answer
    }

    /// [`Writer::submit`] and wait, from an async task.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(Priority::Now, work)
            .await
            .unwrap_or_else(|_| Err(gone()))
    }

    /// [`Writer::submit`] and wait, from a thread that may block (never the executor).
    pub(super) fn write_blocking<T, F>(&self, priority: Priority, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
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

/// How often the writer copies the WAL into the database, between two batches.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Copies the WAL into the database. Run by the writer between batches, after their
/// answers went out: a checkpoint on another connection races the writer and, under
/// steady load, never catches up with it, so the WAL never restarts and grows until
/// `wal_autocheckpoint` stalls a commit with a huge copy. Between batches it copies
/// everything, and the next transaction starts the WAL from its beginning.
fn checkpoint(conn: &Connection) {
    if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %err, "WAL checkpoint failed; retried later");
    }
}

fn run(conn: &Connection, queue: &mpsc::Receiver<(Priority, Box<dyn Job>)>) {
    let mut waiting = Waiting::default();
    let mut checkpointed = Instant::now();
    loop {
        if checkpointed.elapsed() >= CHECKPOINT_EVERY {
            checkpoint(conn);
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

fn commit_batch(conn: &Connection, batch: Vec<Box<dyn Job>>) {
    if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
        let reason = format!("cannot begin a transaction: {err}");
        tracing::error!(error = %err, "store write batch refused");
        for job in batch {
            job.fail(&reason);
        }
        return;
    }
    let finishes: Vec<Finish> = batch.into_iter().map(|job| job.run(conn)).collect();
    let committed = conn.execute_batch("COMMIT").map_err(|err| {
        // A failed COMMIT may leave the transaction open; nothing of it stays.
        let _ = conn.execute_batch("ROLLBACK");
        tracing::error!(error = %err, "store commit failed");
        err.to_string()
    });
    tracing::trace!(jobs = finishes.len(), "store batch committed");
    for finish in finishes {
        finish(committed.as_ref().map(|_| ()).map_err(String::as_str));
    }
}
