//! Webhooks as the store keeps them: subscriptions, the durable delivery outbox and the
//! per-group markers of which events fired.
//!
//! Outbox rows are written by [`after_new_crashes`], which the counter flush calls in
//! the transaction of the crashes that cause them: a committed crash that made a group
//! new, regressed or spiking has its deliveries committed with it, and a rolled-back one
//! has none. The delivery worker (`crate::webhooks`) reads due rows on the read pool
//! and reports each attempt back through a writer job ([`finish`]); it never holds a
//! transaction open across network I/O.

use rusqlite::{params, Connection, OptionalExtension};

use super::crashes::crash_id;
use super::{ms_to_rfc3339, StoreError};

/// The events a webhook may subscribe to.
pub const EVENTS: [&str; 3] = [EVENT_NEW, EVENT_REGRESSED, EVENT_SPIKE];
pub const EVENT_NEW: &str = "group.new";
pub const EVENT_REGRESSED: &str = "group.regressed";
pub const EVENT_SPIKE: &str = "group.spike";

/// When a group's crashes of the last hour make a spike (docs/webhooks.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikePolicy {
    /// At least this many crashes in the last hour...
    pub min_count: u64,
    /// ...and at least this multiple of the trailing 24 hours' hourly average.
    pub factor: f64,
    /// At most one `group.spike` per group in this many milliseconds.
    pub window_ms: i64,
}

impl Default for SpikePolicy {
    fn default() -> Self {
        SpikePolicy {
            min_count: 50,
            factor: 5.0,
            window_ms: 6 * 3_600_000,
        }
    }
}

/// A subscription as the API lists it (never with its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub has_secret: bool,
    pub created_at: String,
}

/// One outbox row as `GET /api/v1/webhooks/{id}/deliveries` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub delivery_id: String,
    pub event: String,
    pub group_id: String,
    pub crash_id: Option<String>,
    pub created_at: String,
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_error: Option<String>,
}

/// A pending delivery whose time has come, with what the worker needs to send it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery_id: String,
    pub webhook_id: String,
    pub url: String,
    pub secret: Option<String>,
    pub event: String,
    pub group_id: String,
    pub crash_id: Option<String>,
    pub release: Option<String>,
    pub detail: Option<String>,
    pub created_ms: i64,
    pub attempts: u32,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at `at_ms`.
    Retry {
        at_ms: i64,
        error: String,
    },
    /// Given up: a permanent refusal, or out of retry time.
    Failed {
        error: String,
    },
}

/// A group whose state the batch's new crashes changed, as the flush saw it.
pub(super) struct Touched<'a> {
    pub group: &'a str,
    /// Its first crash ever came in this batch, and no group merged or moved into it
    /// had one before (`new_fired` was 0).
    pub first: bool,
    /// It turned `regressed`; the release that did it.
    pub regressed: Option<Option<String>>,
    /// The newest crash time among the batch's crashes of the group.
    pub at_ms: i64,
}

fn events_of(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// `(webhook id, events)` of every subscription: one scan of a table of a handful of
/// rows, once per batch that has something to announce.
fn subscribers(conn: &Connection) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, events FROM webhooks")?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                events_of(&row.get::<_, String>(1)?),
            ))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The first (`oldest`) or latest crash of a group: its id and release.
fn crash_of(
    conn: &Connection,
    group: &str,
    oldest: bool,
) -> Result<Option<(String, Option<String>)>, StoreError> {
    let sql = if oldest {
        "SELECT seq, nonce, release FROM crashes WHERE group_id = ?1 ORDER BY seq LIMIT 1"
    } else {
        "SELECT seq, nonce, release FROM crashes WHERE group_id = ?1 ORDER BY seq DESC LIMIT 1"
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row([group], |row| {
            Ok((crash_id(row.get(0)?, row.get(1)?), row.get(2)?))
        })
        .optional()?)
}

fn enqueue(
    conn: &Connection,
    subscribers: &[(String, Vec<String>)],
    event: &str,
    group: &str,
    crash: Option<(String, Option<String>)>,
    detail: Option<&str>,
    at_ms: i64,
) -> Result<(), StoreError> {
    let (crash_id, release) = crash.unzip();
    for (webhook, events) in subscribers {
        if !events.iter().any(|e| e == event) {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO webhook_deliveries (delivery_id, webhook_id, event, group_id, crash_id,
                                             release, detail, created_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        )?
        .execute(params![
            crate::util::random_hex(16),
            webhook,
            event,
            group,
            crash_id,
            release.clone().flatten(),
            detail,
            at_ms,
        ])?;
    }
    Ok(())
}

/// The webhook side of a batch's new crashes, in its transaction: marks groups that got
/// their first crash (always, so a later move or merge knows), and writes an outbox row
/// per subscribed webhook for `group.new`, `group.regressed` and `group.spike`.
pub(super) fn after_new_crashes(
    conn: &Connection,
    touched: &[Touched<'_>],
    spike: Option<SpikePolicy>,
) -> Result<(), StoreError> {
    let mut subs: Option<Vec<(String, Vec<String>)>> = None;
    for t in touched {
        if t.first {
            conn.prepare_cached("UPDATE groups SET new_fired = 1 WHERE id = ?1")?
                .execute([t.group])?;
        }
        if !t.first && t.regressed.is_none() && spike.is_none() {
            continue;
        }
        if subs.is_none() {
            subs = Some(subscribers(conn)?);
        }
        let subs = subs.as_deref().unwrap_or_default();
        if subs.is_empty() {
            continue;
        }
        let wants = |event: &str| {
            subs.iter()
                .any(|(_, events)| events.iter().any(|e| e == event))
        };
        if t.first && wants(EVENT_NEW) {
            let crash = crash_of(conn, t.group, true)?;
            enqueue(conn, subs, EVENT_NEW, t.group, crash, None, t.at_ms)?;
        }
        if let Some(release) = &t.regressed {
            if wants(EVENT_REGRESSED) {
                let crash =
                    crash_of(conn, t.group, false)?.map(|(id, own)| (id, release.clone().or(own)));
                enqueue(conn, subs, EVENT_REGRESSED, t.group, crash, None, t.at_ms)?;
            }
        }
        if let Some(policy) = spike {
            if wants(EVENT_SPIKE) {
                if let Some(detail) = spiking(conn, t.group, t.at_ms, &policy)? {
                    conn.prepare_cached("UPDATE groups SET spike_fired_at = ?2 WHERE id = ?1")?
                        .execute(params![t.group, t.at_ms])?;
                    let crash = crash_of(conn, t.group, false)?;
                    enqueue(
                        conn,
                        subs,
                        EVENT_SPIKE,
                        t.group,
                        crash,
                        Some(&detail),
                        t.at_ms,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Whether `group` spikes at `now_ms`, and if so the spike's numbers as JSON. The last
/// hour is the current clock hour plus the part of the previous one still within 60
/// minutes (a sliding window over the hourly counters); the average is over the 24
/// whole hours before the current one.
fn spiking(
    conn: &Connection,
    group: &str,
    now_ms: i64,
    policy: &SpikePolicy,
) -> Result<Option<String>, StoreError> {
    let fired_at: Option<i64> = conn
        .prepare_cached("SELECT spike_fired_at FROM groups WHERE id = ?1")?
        .query_row([group], |row| row.get(0))?;
    if fired_at.is_some_and(|at| now_ms - at < policy.window_ms) {
        return Ok(None);
    }
    let hour = now_ms.div_euclid(3_600_000);
    let mut current = 0i64;
    let mut previous = 0i64;
    let mut trailing = 0i64;
    let mut stmt = conn.prepare_cached(
        "SELECT hour, crashes FROM group_hours WHERE group_id = ?1 AND hour BETWEEN ?2 AND ?3",
    )?;
    for row in stmt.query_map(params![group, hour - 24, hour], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
    })? {
        let (h, n) = row?;
        if h == hour {
            current = n;
        } else {
            trailing += n;
            if h == hour - 1 {
                previous = n;
            }
        }
    }
    let into_hour = (now_ms - hour * 3_600_000) as f64 / 3_600_000.0;
    let last_hour = current as f64 + previous as f64 * (1.0 - into_hour);
    let average = trailing as f64 / 24.0;
    if last_hour >= policy.min_count as f64 && last_hour >= policy.factor * average {
        let detail = serde_json::json!({
            "last_hour": last_hour.round() as i64,
            "hourly_average": (average * 10.0).round() / 10.0,
        });
        return Ok(Some(detail.to_string()));
    }
    Ok(None)
}

/// After a merge or move made `from` an alias of `to`: `to` has fired what either fired.
pub(super) fn merge_markers(conn: &Connection, from: &str, to: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE groups SET new_fired = max(new_fired, (SELECT new_fired FROM groups WHERE id = ?1)),
             spike_fired_at = max(coalesce(spike_fired_at, 0),
                                  coalesce((SELECT spike_fired_at FROM groups WHERE id = ?1), 0))
         WHERE id = ?2",
    )?
    .execute(params![from, to])?;
    conn.prepare_cached(
        "UPDATE groups SET spike_fired_at = NULL WHERE id = ?1 AND spike_fired_at = 0",
    )?
    .execute([to])?;
    Ok(())
}

pub(super) fn create(
    conn: &Connection,
    id: &str,
    url: &str,
    events: &[String],
    secret: Option<&str>,
    now_ms: i64,
) -> Result<Webhook, StoreError> {
    let events_json = serde_json::to_string(events).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT INTO webhooks (id, url, events, secret, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, url, events_json, secret, now_ms])?;
    Ok(Webhook {
        id: id.to_owned(),
        url: url.to_owned(),
        events: events.to_vec(),
        has_secret: secret.is_some(),
        created_at: ms_to_rfc3339(now_ms),
    })
}

pub(super) fn list(conn: &Connection) -> Result<Vec<Webhook>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, url, events, secret IS NOT NULL, created_at FROM webhooks ORDER BY created_at, id",
    )?;
    let rows = stmt
        .query_map([], |row| {
            Ok(Webhook {
                id: row.get(0)?,
                url: row.get(1)?,
                events: events_of(&row.get::<_, String>(2)?),
                has_secret: row.get(3)?,
                created_at: ms_to_rfc3339(row.get(4)?),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Deletes a subscription and its outbox rows; false when there was none.
pub(super) fn delete(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let gone = conn
        .prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
        .execute([id])?;
    conn.prepare_cached("DELETE FROM webhook_deliveries WHERE webhook_id = ?1")?
        .execute([id])?;
    Ok(gone > 0)
}

/// A webhook's deliveries, newest first; `None` when the webhook is unknown.
pub(super) fn deliveries(
    conn: &Connection,
    id: &str,
    limit: usize,
) -> Result<Option<Vec<Delivery>>, StoreError> {
    let known: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM webhooks WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?;
    if known.is_none() {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT delivery_id, event, group_id, crash_id, created_at, status, attempts,
                next_attempt_at, last_attempt_at, last_error
         FROM webhook_deliveries WHERE webhook_id = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![id, limit as i64], |row| {
            let status: String = row.get(5)?;
            let pending = status == "pending";
            Ok(Delivery {
                delivery_id: row.get(0)?,
                event: row.get(1)?,
                group_id: row.get(2)?,
                crash_id: row.get(3)?,
                created_at: ms_to_rfc3339(row.get(4)?),
                attempts: row.get::<_, i64>(6)?.max(0) as u32,
                next_attempt_at: if pending {
                    Some(ms_to_rfc3339(row.get(7)?))
                } else {
                    None
                },
                last_attempt_at: row.get::<_, Option<i64>>(8)?.map(ms_to_rfc3339),
                last_error: row.get(9)?,
                status,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(rows))
}

/// Pending deliveries due at `now_ms`, oldest first.
pub(super) fn due(
    conn: &Connection,
    now_ms: i64,
    limit: usize,
) -> Result<Vec<DueDelivery>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.delivery_id, d.webhook_id, w.url, w.secret, d.event, d.group_id, d.crash_id,
                d.release, d.detail, d.created_at, d.attempts
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.status = 'pending' AND d.next_attempt_at <= ?1
         ORDER BY d.next_attempt_at, d.seq LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![now_ms, limit as i64], |row| {
            Ok(DueDelivery {
                delivery_id: row.get(0)?,
                webhook_id: row.get(1)?,
                url: row.get(2)?,
                secret: row.get(3)?,
                event: row.get(4)?,
                group_id: row.get(5)?,
                crash_id: row.get(6)?,
                release: row.get(7)?,
                detail: row.get(8)?,
                created_ms: row.get(9)?,
                attempts: row.get::<_, i64>(10)?.max(0) as u32,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Records one attempt. Only a pending row changes: an attempt reported twice (or for
/// a deleted webhook) is a no-op.
pub(super) fn finish(
    conn: &Connection,
    delivery_id: &str,
    outcome: &AttemptOutcome,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (status, next, error) = match outcome {
        AttemptOutcome::Delivered => ("delivered", now_ms, None),
        AttemptOutcome::Retry { at_ms, error } => ("pending", *at_ms, Some(error.as_str())),
        AttemptOutcome::Failed { error } => ("failed", now_ms, Some(error.as_str())),
    };
    conn.prepare_cached(
        "UPDATE webhook_deliveries SET status = ?2, next_attempt_at = ?3, last_error = ?4,
             attempts = attempts + 1, last_attempt_at = ?5
         WHERE delivery_id = ?1 AND status = 'pending'",
    )?
    .execute(params![delivery_id, status, next, error, now_ms])?;
    Ok(())
}

/// Deletes delivered and failed rows created before `cutoff_ms`.
pub(super) fn prune(conn: &Connection, cutoff_ms: i64) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM webhook_deliveries WHERE status != 'pending' AND created_at < ?1",
        )?
        .execute([cutoff_ms])?)
}
