//! Groups as engineers triage them and releases as they ship: reads with filters, sorts
//! and keyset paging; lifecycle changes (resolve, ignore, reopen), merges and the
//! aliases moves leave behind; activity; release metadata and sessions.
//!
//! The rules themselves are DESIGN.md's "Triage rules": a group resolved in release X
//! regresses on a crash from X or later (by `release::sort_key`), `"next"` on one after
//! the newest release seen when resolving, a bare resolve on any crash; an ignore ends
//! after N more crashes or at a date. The store applies them in the same transaction as
//! the crashes that trigger them (`after_new_crashes`, called by the counter flush).

use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::writer::Priority;
use super::{ms_to_rfc3339, MissingDebugFile, Page, Store, StoreError};

/// The actor of changes crashbox makes itself (regressions, an ignore running out).
pub const SYSTEM_ACTOR: &str = "crashbox";

/// A group as the triage API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub signature: String,
    /// Its own signature first, then those of groups merged or moved into it.
    pub signatures: Vec<String>,
    /// The bundle id of its app; "" when its crashes named none.
    pub app: String,
    pub title: String,
    pub culprit: Option<String>,
    /// `unresolved`, `resolved`, `ignored` or `regressed`; an ignore past its date
    /// reads `unresolved`.
    pub status: String,
    pub count: u64,
    /// Distinct device hashes among its crashes.
    pub devices: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub first_release: Option<String>,
    pub last_release: Option<String>,
    /// The release a resolution names (for `"next"`, the newest when resolving).
    pub resolved_in: Option<String>,
    pub resolved_next: bool,
    pub ignore_until: Option<String>,
    pub ignore_left: Option<i64>,
}

/// How a group listing is ordered; every order is descending, ties by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSort {
    /// Most crashes first.
    Count,
    /// Most affected devices first.
    Devices,
    /// Most recent crash first.
    LastSeen,
    /// Newest group first.
    FirstSeen,
    /// Crashes in the last 24 h minus the 24 h before, highest first.
    Trend,
}

/// Which groups a listing shows. Filters choose groups; they never change a group's
/// totals.
#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    /// Effective states to include; empty for all.
    pub statuses: Vec<String>,
    /// Groups with crashes in this release (a full name).
    pub release: Option<String>,
    /// Groups whose first release is this one.
    pub new_in: Option<String>,
    /// `iOS` (every version) or `iOS 17.1` (that version and its patches).
    pub os: Option<String>,
    pub device_model: Option<String>,
    /// Text in the title, culprit or signature, case-insensitive.
    pub text: Option<String>,
}

/// The spread of a group's crashes over one attribute, most crashes first.
pub type Spread = Vec<(String, u64)>;

/// One change of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// JSON: what else the change named.
    pub detail: Option<String>,
}

/// A group with everything its page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDetail {
    pub group: Group,
    /// Its own signature first, then those of groups merged or moved into it.
    pub signatures: Vec<String>,
    pub releases: Spread,
    pub os: Spread,
    pub device_models: Spread,
    pub variants: Spread,
    /// Oldest first, its own and those of the groups merged into it.
    pub activity: Vec<Activity>,
}

/// A lifecycle change asked for by a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// Resolved: in a release (full name or `version (build)` of the group's app),
    /// in the next release (`next`), or plainly (`release` `None`, `next` false).
    Resolve {
        release: Option<String>,
        next: bool,
    },
    /// Ignored: for good, until `count` more crashes, or until a time (ms).
    Ignore {
        until_ms: Option<i64>,
        count: Option<i64>,
    },
    Unresolve,
}

/// Why a triage change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriageRefusal {
    NoGroup(String),
    /// The request makes no sense for these groups (another app, the group itself).
    Invalid(String),
}

/// A release with its counters and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub name: String,
    pub app: String,
    pub version: Option<String>,
    pub build: Option<String>,
    pub crashes: u64,
    pub devices: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub channel: Option<String>,
    pub rollout: Option<f64>,
    pub released_at: Option<String>,
    pub sessions_total: u64,
    pub sessions_crashed: u64,
}

/// A release's page: the release, its groups and its missing debug files.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseDetail {
    pub release: Release,
    pub new_groups: Vec<Group>,
    pub regressed_groups: Vec<Group>,
    pub top_groups: Vec<Group>,
    pub missing_debug_files: Vec<MissingDebugFile>,
}

/// Release metadata a client sets; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReleaseUpdate {
    pub channel: Option<String>,
    pub rollout: Option<f64>,
    pub released_at_ms: Option<i64>,
}

/// A group's lifecycle columns, as the counter flush reads them back.
pub(super) struct LiveState {
    pub status: String,
    pub resolved_key: Option<String>,
    pub resolved_next: bool,
    pub ignore_left: Option<i64>,
    pub ignore_until: Option<i64>,
}

const GROUP_COLUMNS: &str = "g.id, g.signature, g.app, g.title, g.culprit, g.status, g.count,
    g.devices, g.first_seen, g.last_seen, g.first_release, g.last_release, g.resolved_in,
    g.resolved_next, g.ignore_until, g.ignore_left";

fn group_from_row(row: &Row, now_ms: i64) -> rusqlite::Result<Group> {
    let status: String = row.get(5)?;
    let ignore_until: Option<i64> = row.get(14)?;
    let expired = status == "ignored" && ignore_until.is_some_and(|t| t <= now_ms);
    Ok(Group {
        id: row.get(0)?,
        signature: row.get(1)?,
        signatures: Vec::new(),
        app: row.get(2)?,
        title: row.get(3)?,
        culprit: row.get(4)?,
        status: if expired {
            "unresolved".to_owned()
        } else {
            status
        },
        count: row.get::<_, i64>(6)?.max(0) as u64,
        devices: row.get::<_, i64>(7)?.max(0) as u64,
        first_seen: ms_to_rfc3339(row.get(8)?),
        last_seen: ms_to_rfc3339(row.get(9)?),
        first_release: row.get(10)?,
        last_release: row.get(11)?,
        resolved_in: row.get(12)?,
        resolved_next: row.get(13)?,
        ignore_until: if expired {
            None
        } else {
            ignore_until.map(ms_to_rfc3339)
        },
        ignore_left: if expired { None } else { row.get(15)? },
    })
}

fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(3_600_000)
}

/// What one crash in `hour` adds to its group's `trend` when the current hour is
/// `now_hour`: +1 in the last 24 hours, -1 in the 24 before, 0 otherwise.
pub(super) fn trend_weight(hour: i64, now_hour: i64) -> i64 {
    if hour > now_hour - 24 {
        1
    } else if hour > now_hour - 48 {
        -1
    } else {
        0
    }
}

/// A group `g`'s trend recounted from its hourly counts, the current hour bound as `?1`
/// (the weights of [`trend_weight`]).
pub(super) const TREND_OF_G: &str = "coalesce((
    SELECT sum(CASE WHEN h.hour > ?1 - 24 THEN h.crashes ELSE -h.crashes END)
    FROM group_hours h WHERE h.group_id = g.id AND h.hour > ?1 - 48), 0)";

/// Recomputes every group's `trend` from its hourly counts once the hour has turned
/// (the windows moved); the counter paths keep it within the hour. True when it ran.
pub(super) fn refresh_trends(conn: &Connection, now_ms: i64) -> Result<bool, StoreError> {
    let hour = hour_of(now_ms);
    let done: Option<i64> = conn
        .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'trend_hour'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    if done == Some(hour) {
        return Ok(false);
    }
    // Rewrites only the groups whose trend moved (most keep theirs within an hour).
    conn.prepare_cached(&format!(
        "UPDATE groups SET trend = t.trend
         FROM (SELECT g.id, {TREND_OF_G} AS trend FROM groups g) t
         WHERE t.id = groups.id AND groups.trend != t.trend"
    ))?
    .execute([hour])?;
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('trend_hour', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([hour.to_string()])?;
    // Hourly, the planner's statistics of `groups` too: without them
    // `status=unresolved` (three groups in four) went through the status index and
    // sorted 7,400 groups (107 ms p99 at 1M crashes); with them it walks the sort's
    // index. Sampled statistics misjudge the skew, so the whole (small) table: ~16 ms of
    // CPU for 10,000 groups.
    conn.execute_batch("ANALYZE groups;")?;
    Ok(true)
}

/// Writes one activity entry.
pub(super) fn record_activity(
    conn: &Connection,
    group_id: &str,
    at_ms: i64,
    actor: &str,
    action: &str,
    (from, to): (Option<&str>, Option<&str>),
    detail: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO activity (group_id, at, actor, action, from_state, to_state, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![group_id, at_ms, actor, action, from, to, detail])?;
    Ok(())
}

/// The lifecycle after `n` new crashes landed in `group_id`: a resolved group regresses
/// (DESIGN.md's rules; `newest` is the highest release, order key and name, among
/// them), an ignore by count counts down, an ignore past its date ends. True when the
/// group turned `regressed`.
pub(super) fn after_new_crashes(
    conn: &Connection,
    group_id: &str,
    state: &LiveState,
    n: i64,
    newest: Option<&(String, String)>,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let mut regressed = false;
    match state.status.as_str() {
        "resolved" => {
            let regress = match (&state.resolved_key, newest) {
                // A bare resolve: any later crash. "next" with no release known then:
                // any crash from a release.
                (None, _) if !state.resolved_next => true,
                (None, newest) => newest.is_some(),
                (Some(key), Some((high, _))) if state.resolved_next => high > key,
                (Some(key), Some((high, _))) => high >= key,
                // A crash without a release never regresses a release-based resolution.
                (Some(_), None) => false,
            };
            if regress {
                conn.prepare_cached(
                    "UPDATE groups SET status = 'regressed', resolved_in = NULL,
                         resolved_key = NULL, resolved_next = 0 WHERE id = ?1",
                )?
                .execute([group_id])?;
                let detail =
                    newest.map(|(_, name)| serde_json::json!({ "release": name }).to_string());
                record_activity(
                    conn,
                    group_id,
                    at_ms,
                    SYSTEM_ACTOR,
                    "regress",
                    (Some("resolved"), Some("regressed")),
                    detail.as_deref(),
                )?;
                if let Some((_, release)) = newest {
                    conn.prepare_cached(
                        "UPDATE activity SET release = ?1 WHERE seq = last_insert_rowid()",
                    )?
                    .execute([release])?;
                }
                regressed = true;
            }
        }
        "ignored" => {
            let over = match (state.ignore_left, state.ignore_until) {
                (Some(left), _) => {
                    if left - n > 0 {
                        conn.prepare_cached("UPDATE groups SET ignore_left = ?2 WHERE id = ?1")?
                            .execute(params![group_id, left - n])?;
                        false
                    } else {
                        true
                    }
                }
                (None, Some(until)) => until <= at_ms,
                (None, None) => false,
            };
            if over {
                conn.prepare_cached(
                    "UPDATE groups SET status = 'unresolved', ignore_left = NULL,
                         ignore_until = NULL WHERE id = ?1",
                )?
                .execute([group_id])?;
                record_activity(
                    conn,
                    group_id,
                    at_ms,
                    SYSTEM_ACTOR,
                    "unresolve",
                    (Some("ignored"), Some("unresolved")),
                    None,
                )?;
            }
        }
        _ => {}
    }
    Ok(regressed)
}

/// After a move left `from` without crashes, it becomes an alias of `to` (DESIGN.md,
/// "Moves"); `to` keeps the older state of the two.
pub(super) fn alias_if_empty(conn: &Connection, from: &str, to: &str) -> Result<(), StoreError> {
    if from == to {
        return Ok(());
    }
    let left: Option<(i64, Option<String>)> = conn
        .prepare_cached("SELECT count, alias_of FROM groups WHERE id = ?1")?
        .query_row([from], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if matches!(left, Some((0, None))) {
        make_alias(conn, from, to)?;
    }
    Ok(())
}

/// Points `from` (and every alias of it) at `to`, and gives `to` the state of `from`
/// when `from` is the older group. Age is creation order, the rowid: times cannot
/// tell, since a move creates its target with the moved crash's time. (A full
/// `VACUUM` could renumber rowids; the store only ever runs incremental vacuum.)
fn make_alias(conn: &Connection, from: &str, to: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE groups SET alias_of = ?2 WHERE id = ?1 OR alias_of = ?1")?
        .execute(params![from, to])?;
    conn.prepare_cached(
        "UPDATE groups SET (status, resolved_in, resolved_key, resolved_next, ignore_until,
                            ignore_left) =
             (SELECT f.status, f.resolved_in, f.resolved_key, f.resolved_next, f.ignore_until,
                     f.ignore_left FROM groups f WHERE f.id = ?1)
         WHERE id = ?2 AND rowid > (SELECT rowid FROM groups WHERE id = ?1)",
    )?
    .execute(params![from, to])?;
    // `group.new` fires for `to` only if neither group fired it before (DESIGN.md).
    super::webhooks::merge_markers(conn, from, to)
}

/// The live group an id names: itself, or the group it was merged or moved into.
pub(super) fn current_id(conn: &Connection, id: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT coalesce(alias_of, id) FROM groups WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?)
}

pub(super) fn group_row(
    conn: &Connection,
    id: &str,
    now_ms: i64,
) -> Result<Option<Group>, StoreError> {
    let mut group = conn
        .prepare_cached(&format!(
            "SELECT {GROUP_COLUMNS} FROM groups g WHERE g.id = ?1"
        ))?
        .query_row([id], |row| group_from_row(row, now_ms))
        .optional()?;
    if let Some(group) = &mut group {
        fill_signatures(conn, std::slice::from_mut(group))?;
    }
    Ok(group)
}

/// Sets each group's `signatures`: its own, then those of groups merged or moved into
/// it (one probe of the alias index per group).
fn fill_signatures(conn: &Connection, groups: &mut [Group]) -> Result<(), StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT signature FROM groups WHERE alias_of = ?1 ORDER BY rowid")?;
    for group in groups {
        group.signatures = vec![group.signature.clone()];
        for signature in stmt.query_map([&group.id], |row| row.get::<_, String>(0))? {
            let signature = signature?;
            if !group.signatures.contains(&signature) {
                group.signatures.push(signature);
            }
        }
    }
    Ok(())
}

fn spread(conn: &Connection, sql: &str, id: &str) -> Result<Spread, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map([id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The effective state of a live group, for activity's `from`.
fn effective_status(conn: &Connection, id: &str, now_ms: i64) -> Result<String, StoreError> {
    Ok(group_row(conn, id, now_ms)?
        .map(|g| g.status)
        .unwrap_or_else(|| "unresolved".to_owned()))
}

/// A release name as stored: a full name as given, or `version (build)` completed with
/// `app` when it has one.
fn full_release_name(name: &str, app: &str) -> String {
    match crate::release::parse(name) {
        Some(parsed) if parsed.app.is_none() && !app.is_empty() => format!("{app} {}", name.trim()),
        _ => name.trim().to_owned(),
    }
}

fn change_state(
    conn: &Connection,
    id: &str,
    change: &StateChange,
    actor: &str,
    now_ms: i64,
) -> Result<Result<String, TriageRefusal>, StoreError> {
    let Some(current) = current_id(conn, id)? else {
        return Ok(Err(TriageRefusal::NoGroup(id.to_owned())));
    };
    let from = effective_status(conn, &current, now_ms)?;
    let app: String = conn
        .prepare_cached("SELECT app FROM groups WHERE id = ?1")?
        .query_row([&current], |row| row.get(0))?;
    let (to, detail) = match change {
        StateChange::Resolve { release, next } => {
            let (name, key, next) = if *next {
                let newest: Option<(String, String)> = conn
                    .prepare_cached(
                        "SELECT name, sort_key FROM releases WHERE app = ?1 AND sort_key IS NOT NULL
                         AND last_seen IS NOT NULL ORDER BY sort_key DESC, name DESC LIMIT 1",
                    )?
                    .query_row([&app], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                match newest {
                    Some((name, key)) => (Some(name), Some(key), true),
                    None => (None, None, true),
                }
            } else if let Some(release) = release {
                let name = full_release_name(release, &app);
                let other_app = crate::release::parse(&name)
                    .and_then(|r| r.app)
                    .is_some_and(|named| !app.is_empty() && named != app);
                if other_app {
                    return Ok(Err(TriageRefusal::Invalid(format!(
                        "`{release}` is a release of another app than this group's ({app})"
                    ))));
                }
                let Some(key) = crate::release::sort_key_of(&name) else {
                    return Ok(Err(TriageRefusal::Invalid(format!(
                        "`{release}` is not a release name"
                    ))));
                };
                (Some(name), Some(key), false)
            } else {
                (None, None, false)
            };
            conn.prepare_cached(
                "UPDATE groups SET status = 'resolved', resolved_in = ?2, resolved_key = ?3,
                     resolved_next = ?4, ignore_until = NULL, ignore_left = NULL WHERE id = ?1",
            )?
            .execute(params![current, name, key, next])?;
            let detail = match (&name, next) {
                (_, true) => Some(serde_json::json!({ "release": "next", "after": name })),
                (Some(name), false) => Some(serde_json::json!({ "release": name })),
                (None, false) => None,
            };
            ("resolved", detail)
        }
        StateChange::Ignore { until_ms, count } => {
            conn.prepare_cached(
                "UPDATE groups SET status = 'ignored', ignore_until = ?2, ignore_left = ?3,
                     resolved_in = NULL, resolved_key = NULL, resolved_next = 0 WHERE id = ?1",
            )?
            .execute(params![current, until_ms, count])?;
            let detail = match (until_ms, count) {
                (Some(until), _) => Some(serde_json::json!({ "until": ms_to_rfc3339(*until) })),
                (None, Some(count)) => Some(serde_json::json!({ "until_count": count })),
                (None, None) => None,
            };
            ("ignored", detail)
        }
        StateChange::Unresolve => {
            conn.prepare_cached(
                "UPDATE groups SET status = 'unresolved', ignore_until = NULL, ignore_left = NULL,
                     resolved_in = NULL, resolved_key = NULL, resolved_next = 0 WHERE id = ?1",
            )?
            .execute([&current])?;
            ("unresolved", None)
        }
    };
    let action = match to {
        "resolved" => "resolve",
        "ignored" => "ignore",
        _ => "unresolve",
    };
    record_activity(
        conn,
        &current,
        now_ms,
        actor,
        action,
        (Some(&from), Some(to)),
        detail.map(|d| d.to_string()).as_deref(),
    )?;
    Ok(Ok(current))
}

/// Moves every crash now filed in `from` into `to`, counters and all.
fn move_crashes(
    conn: &Connection,
    from: &str,
    to: &str,
    home: Option<&str>,
) -> Result<(), StoreError> {
    let seqs: Vec<i64> = match home {
        Some(home) => conn
            .prepare_cached("SELECT seq FROM crashes WHERE home = ?1 AND group_id = ?2")?
            .query_map(params![home, from], |row| row.get(0))?
            .collect::<Result<_, _>>()?,
        None => conn
            .prepare_cached("SELECT seq FROM crashes WHERE group_id = ?1")?
            .query_map([from], |row| row.get(0))?
            .collect::<Result<_, _>>()?,
    };
    for seq in seqs {
        super::crashes::move_crash(conn, seq, to)?;
    }
    Ok(())
}

fn merge(
    conn: &Connection,
    target: &str,
    sources: &[String],
    actor: &str,
    now_ms: i64,
) -> Result<Result<String, TriageRefusal>, StoreError> {
    let Some(target) = current_id(conn, target)? else {
        return Ok(Err(TriageRefusal::NoGroup(target.to_owned())));
    };
    let app_of = |id: &str| -> Result<String, StoreError> {
        Ok(conn
            .prepare_cached("SELECT app FROM groups WHERE id = ?1")?
            .query_row([id], |row| row.get(0))?)
    };
    let target_app = app_of(&target)?;
    let mut merged = Vec::new();
    for source in sources {
        let Some(source) = current_id(conn, source)? else {
            return Ok(Err(TriageRefusal::NoGroup(source.clone())));
        };
        if source == target || merged.contains(&source) {
            continue;
        }
        if app_of(&source)? != target_app {
            return Ok(Err(TriageRefusal::Invalid(format!(
                "group {source} belongs to another app than {target}"
            ))));
        }
        move_crashes(conn, &source, &target, None)?;
        make_alias(conn, &source, &target)?;
        merged.push(source);
    }
    if !merged.is_empty() {
        record_activity(
            conn,
            &target,
            now_ms,
            actor,
            "merge",
            (None, None),
            Some(&serde_json::json!({ "groups": merged }).to_string()),
        )?;
    }
    Ok(Ok(target))
}

fn unmerge(
    conn: &Connection,
    target: &str,
    signatures: &[String],
    actor: &str,
    now_ms: i64,
) -> Result<Result<String, TriageRefusal>, StoreError> {
    let Some(target) = current_id(conn, target)? else {
        return Ok(Err(TriageRefusal::NoGroup(target.to_owned())));
    };
    let mut restored = Vec::new();
    for signature in signatures {
        let homes: Vec<String> = conn
            .prepare_cached("SELECT id FROM groups WHERE signature = ?1 AND alias_of = ?2")?
            .query_map(params![signature, target], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        if homes.is_empty() {
            return Ok(Err(TriageRefusal::Invalid(format!(
                "no signature merged into {target} is `{signature}`"
            ))));
        }
        for home in homes {
            // It gets its old id back, with the state it had when merged.
            conn.prepare_cached("UPDATE groups SET alias_of = NULL WHERE id = ?1")?
                .execute([&home])?;
            move_crashes(conn, &target, &home, Some(&home))?;
            restored.push(home);
        }
    }
    if !restored.is_empty() {
        record_activity(
            conn,
            &target,
            now_ms,
            actor,
            "unmerge",
            (None, None),
            Some(&serde_json::json!({ "groups": restored, "signatures": signatures }).to_string()),
        )?;
    }
    Ok(Ok(target))
}

const RELEASE_COLUMNS: &str = "name, app, version, build, crashes, devices, first_seen, last_seen,
    channel, rollout, released_at, sessions_total, sessions_crashed";

fn release_from_row(r: &Row) -> rusqlite::Result<Release> {
    Ok(Release {
        name: r.get(0)?,
        app: r.get(1)?,
        version: r.get(2)?,
        build: r.get(3)?,
        crashes: r.get::<_, i64>(4)?.max(0) as u64,
        devices: r.get::<_, i64>(5)?.max(0) as u64,
        first_seen: r.get::<_, Option<i64>>(6)?.map(ms_to_rfc3339),
        last_seen: r.get::<_, Option<i64>>(7)?.map(ms_to_rfc3339),
        channel: r.get(8)?,
        rollout: r.get(9)?,
        released_at: r.get::<_, Option<i64>>(10)?.map(ms_to_rfc3339),
        sessions_total: r.get::<_, i64>(11)?.max(0) as u64,
        sessions_crashed: r.get::<_, i64>(12)?.max(0) as u64,
    })
}

fn release_row(conn: &Connection, name: &str) -> Result<Option<Release>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE name = ?1"
        ))?
        .query_row([name], release_from_row)
        .optional()?)
}

/// Creates a release row unless it exists (a release is created on first sight).
pub(super) fn ensure_release(conn: &Connection, name: &str) -> Result<(), StoreError> {
    let (app, version, build, key) = crate::release::columns(name);
    conn.prepare_cached(
        "INSERT INTO releases (name, crashes, devices, app, version, build, sort_key)
         VALUES (?1, 0, 0, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
    )?
    .execute(params![name, app, version, build, key])?;
    Ok(())
}

/// Fills the app, version, build and order key of releases written before they were
/// kept (schema v2 and v3). Runs at open, before the writer starts.
pub(super) fn backfill_releases(conn: &Connection) -> Result<(), StoreError> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM releases WHERE sort_key IS NULL")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for name in names {
        let (app, version, build, key) = crate::release::columns(&name);
        if key.is_some() {
            conn.execute(
                "UPDATE releases SET app = ?2, version = ?3, build = ?4, sort_key = ?5
                 WHERE name = ?1",
                params![name, app, version, build, key],
            )?;
        }
    }
    Ok(())
}

impl Store {
    /// A group by id, as it is, alias or not; `None` when unknown.
    pub fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        let now = super::unix_ms(time::OffsetDateTime::now_utc());
        self.read(|conn| group_row(conn, id, now))
    }

    /// The live group an id names (itself, or the group it was merged or moved into)
    /// with everything its page shows; `None` when unknown.
    pub fn group_detail(&self, id: &str, now_ms: i64) -> Result<Option<GroupDetail>, StoreError> {
        self.read(|conn| {
            let Some(current) = current_id(conn, id)? else {
                return Ok(None);
            };
            let Some(group) = group_row(conn, &current, now_ms)? else {
                return Ok(None);
            };
            let signatures = group.signatures.clone();
            let releases = spread(
                conn,
                "SELECT gr.release, gr.crashes FROM group_releases gr
                 LEFT JOIN releases r ON r.name = gr.release
                 WHERE gr.group_id = ?1 ORDER BY r.sort_key DESC, gr.release DESC",
                &current,
            )?;
            let os = spread(
                conn,
                "SELECT os, crashes FROM group_os WHERE group_id = ?1 ORDER BY crashes DESC, os",
                &current,
            )?;
            let device_models = spread(
                conn,
                "SELECT device_model, crashes FROM group_device_models WHERE group_id = ?1
                 ORDER BY crashes DESC, device_model",
                &current,
            )?;
            let variants = spread(
                conn,
                "SELECT variant, crashes FROM group_variants WHERE group_id = ?1
                 ORDER BY crashes DESC, variant",
                &current,
            )?;
            let mut stmt = conn.prepare_cached(
                "SELECT at, actor, action, from_state, to_state, detail FROM activity
                 WHERE group_id = ?1 OR group_id IN (SELECT id FROM groups WHERE alias_of = ?1)
                 ORDER BY seq",
            )?;
            let activity = stmt
                .query_map([&current], |r| {
                    Ok(Activity {
                        at: ms_to_rfc3339(r.get(0)?),
                        actor: r.get(1)?,
                        action: r.get(2)?,
                        from: r.get(3)?,
                        to: r.get(4)?,
                        detail: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(Some(GroupDetail {
                group,
                signatures,
                releases,
                os,
                device_models,
                variants,
                activity,
            }))
        })
    }

    /// Groups matching `filter` in `sort` order, `limit` at a time; `cursor` is a
    /// page's `next`. Keyset paging on the sort value and the id, so a page costs the
    /// same however deep it is.
    pub fn groups(
        &self,
        filter: &GroupFilter,
        sort: GroupSort,
        cursor: Option<&str>,
        limit: usize,
        now_ms: i64,
    ) -> Result<Page<Group>, StoreError> {
        let mut conditions = vec!["g.alias_of IS NULL".to_owned()];
        let mut binds: Vec<(&str, Box<dyn ToSql>)> = vec![(":now", Box::new(now_ms))];
        if !filter.statuses.is_empty() {
            // Plain column tests (not the effective-state expression), so the planner
            // can use the status index: 444 resolved groups of 10,000 took 30 ms p99
            // walking the last-seen index, under 1 ms through it.
            let mut any = Vec::new();
            for status in &filter.statuses {
                any.push(match status.as_str() {
                    "resolved" => "g.status = 'resolved'",
                    "regressed" => "g.status = 'regressed'",
                    "ignored" => {
                        "(g.status = 'ignored' AND (g.ignore_until IS NULL OR g.ignore_until > :now))"
                    }
                    "unresolved" => {
                        "(g.status = 'unresolved' OR (g.status = 'ignored' AND g.ignore_until <= :now))"
                    }
                    // The caller accepts only the four states.
                    _ => "0",
                });
            }
            conditions.push(format!("({})", any.join(" OR ")));
        }
        // The per-group filters are EXISTS probes of their table's primary key, so the
        // listing walks the sort's index and stops after a page; as `g.id IN (…)` SQLite
        // looked up and sorted every group of the list (benches/README.md, issue 16).
        if let Some(release) = &filter.release {
            conditions.push(
                "EXISTS (SELECT 1 FROM group_releases r WHERE r.group_id = g.id
                         AND r.release = :release)"
                    .into(),
            );
            binds.push((":release", Box::new(release.clone())));
        }
        if let Some(new_in) = &filter.new_in {
            conditions.push("g.first_release = :new_in".into());
            binds.push((":new_in", Box::new(new_in.clone())));
        }
        if let Some(os) = &filter.os {
            conditions.push(
                "EXISTS (SELECT 1 FROM group_os o WHERE o.group_id = g.id AND (o.os = :os
                         OR substr(o.os, 1, length(:os) + 1) IN (:os || ' ', :os || '.')))"
                    .into(),
            );
            binds.push((":os", Box::new(os.clone())));
        }
        if let Some(model) = &filter.device_model {
            conditions.push(
                "EXISTS (SELECT 1 FROM group_device_models m WHERE m.group_id = g.id
                         AND m.device_model = :model)"
                    .into(),
            );
            binds.push((":model", Box::new(model.clone())));
        }
        if let Some(text) = &filter.text {
            conditions.push(
                "(instr(lower(g.title), :text) > 0 OR instr(lower(coalesce(g.culprit, '')), :text) > 0
                  OR instr(lower(g.signature), :text) > 0)"
                    .into(),
            );
            binds.push((":text", Box::new(text.to_lowercase())));
        }
        let (value, after_id) = match cursor.and_then(|c| c.split_once(':')) {
            Some((value, id)) => (value.parse::<i64>().unwrap_or(i64::MAX), id.to_owned()),
            None => (i64::MAX, String::new()),
        };
        binds.push((":value", Box::new(value)));
        binds.push((":after", Box::new(after_id)));
        binds.push((":limit", Box::new(limit as i64)));
        let (key, from) = match sort {
            GroupSort::Count => ("g.count", "groups g".to_owned()),
            GroupSort::Devices => ("g.devices", "groups g".to_owned()),
            GroupSort::LastSeen => ("g.last_seen", "groups g".to_owned()),
            GroupSort::FirstSeen => ("g.first_seen", "groups g".to_owned()),
            // Kept per group (see `trend_weight`): computing it per request read every
            // group's last 48 hours, 120 ms p99 at 1M crashes.
            GroupSort::Trend => ("g.trend", "groups g".to_owned()),
        };
        let sql = format!(
            "SELECT {GROUP_COLUMNS}, {key} AS sort_value FROM {from}
             WHERE {} AND ({key} < :value OR ({key} = :value AND g.id > :after))
             ORDER BY {key} DESC, g.id LIMIT :limit",
            conditions.join(" AND ")
        );
        // Named parameters that the SQL does not use would be an error.
        let binds: Vec<(&str, &dyn ToSql)> = binds
            .iter()
            .filter(|(name, _)| sql.contains(name))
            .map(|(name, value)| (*name, value.as_ref()))
            .collect();
        let items: Vec<(i64, Group)> = self.read(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows: Vec<(i64, Group)> = stmt
                .query_map(binds.as_slice(), |row| {
                    Ok((row.get::<_, i64>(16)?, group_from_row(row, now_ms)?))
                })?
                .collect::<Result<_, _>>()?;
            for (_, group) in &mut rows {
                fill_signatures(conn, std::slice::from_mut(group))?;
            }
            Ok(rows)
        })?;
        let next = (items.len() == limit)
            .then(|| items.last().map(|(key, g)| format!("{key}:{}", g.id)))
            .flatten();
        Ok(Page {
            items: items.into_iter().map(|(_, g)| g).collect(),
            next,
        })
    }

    /// Crashes per hour of each of `ids` since `since_hour` (hours since the epoch),
    /// oldest first: (hour, crashes). The web UI's sparklines and day charts, one read
    /// for a whole page of groups.
    pub fn hour_counts(
        &self,
        ids: &[String],
        since_hour: i64,
    ) -> Result<Vec<Vec<(i64, u64)>>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT hour, crashes FROM group_hours WHERE group_id = ?1 AND hour >= ?2
                 ORDER BY hour",
            )?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(
                    stmt.query_map(params![id, since_hour], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                    })?
                    .collect::<Result<Vec<_>, _>>()?,
                );
            }
            Ok(out)
        })
    }

    /// Crashes per hour of one group since `since`, oldest first: (hour start, crashes).
    pub fn group_hours(
        &self,
        group_id: &str,
        since: time::OffsetDateTime,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let since_hour = hour_of(super::unix_ms(since));
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT hour, crashes FROM group_hours WHERE group_id = ?1 AND hour >= ?2
                 ORDER BY hour",
            )?;
            let rows = stmt
                .query_map(params![group_id, since_hour], |r| {
                    Ok((
                        ms_to_rfc3339(r.get::<_, i64>(0)? * 3_600_000),
                        r.get::<_, i64>(1)?.max(0) as u64,
                    ))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Brings every group's `trend` up to the current hour; cheap when the hour has not
    /// turned since the last call. Blocking (a background write).
    pub fn refresh_trends(&self) -> Result<bool, StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Background, |conn| {
                refresh_trends(conn, super::unix_ms(time::OffsetDateTime::now_utc()))
            })
    }

    /// Changes a group's state and records who did; answers the live group's id.
    pub fn change_group_state(
        &self,
        id: String,
        change: StateChange,
        actor: String,
        now_ms: i64,
    ) -> Result<Result<String, TriageRefusal>, StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| {
                change_state(conn, &id, &change, &actor, now_ms)
            })
    }

    /// Merges `sources` into `target`: their crashes move, they become aliases, and
    /// later crashes of their signatures land in `target`.
    pub fn merge_groups(
        &self,
        target: String,
        sources: Vec<String>,
        actor: String,
        now_ms: i64,
    ) -> Result<Result<String, TriageRefusal>, StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| {
                merge(conn, &target, &sources, &actor, now_ms)
            })
    }

    /// Gives merged signatures their own groups (their old ids) back.
    pub fn unmerge_groups(
        &self,
        target: String,
        signatures: Vec<String>,
        actor: String,
        now_ms: i64,
    ) -> Result<Result<String, TriageRefusal>, StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| {
                unmerge(conn, &target, &signatures, &actor, now_ms)
            })
    }

    /// The live group an id names: itself, or the group it was merged or moved into;
    /// `None` when unknown.
    pub fn live_group_id(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.read(|conn| current_id(conn, id))
    }

    /// One release by its full name.
    pub fn release(&self, name: &str) -> Result<Option<Release>, StoreError> {
        self.read(|conn| release_row(conn, name))
    }

    /// Every release, newest first (by app, then release order).
    pub fn releases(&self) -> Result<Vec<Release>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases ORDER BY app, sort_key DESC, name"
            ))?;
            let rows = stmt
                .query_map([], release_from_row)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Full names of the releases a name means: itself when stored, else every release
    /// whose `version (build)` it is (one per app).
    pub fn releases_named(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let name = name.trim().to_owned();
        self.read(|conn| {
            let exact: Option<String> = conn
                .prepare_cached("SELECT name FROM releases WHERE name = ?1")?
                .query_row([&name], |row| row.get(0))
                .optional()?;
            if let Some(exact) = exact {
                return Ok(vec![exact]);
            }
            let Some(parsed) = crate::release::parse(&name).filter(|p| p.app.is_none()) else {
                return Ok(Vec::new());
            };
            // By order key, so `1.2 (42)` names `1.2.0 (42)` too; one per app.
            let key = crate::release::sort_key(parsed.version, parsed.build);
            let mut stmt = conn.prepare_cached(
                "SELECT name FROM releases WHERE sort_key = ?1 ORDER BY app, name",
            )?;
            let rows = stmt
                .query_map([key], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// One release with its new, regressed and top groups and its missing debug files.
    pub fn release_detail(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<Option<ReleaseDetail>, StoreError> {
        self.read(|conn| {
            let Some(release) = release_row(conn, name)? else {
                return Ok(None);
            };
            let groups = |sql: &str| -> Result<Vec<Group>, StoreError> {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows: Vec<Group> = stmt
                    .query_map([name], |row| group_from_row(row, now_ms))?
                    .collect::<Result<_, _>>()?;
                fill_signatures(conn, &mut rows)?;
                Ok(rows)
            };
            let new_groups = groups(&format!(
                "SELECT {GROUP_COLUMNS} FROM groups g WHERE g.first_release = ?1
                 AND g.alias_of IS NULL ORDER BY g.count DESC, g.id LIMIT 100"
            ))?;
            let regressed_groups = groups(&format!(
                "SELECT {GROUP_COLUMNS} FROM groups g WHERE g.alias_of IS NULL AND g.id IN (
                     SELECT coalesce(x.alias_of, x.id) FROM activity a JOIN groups x ON x.id = a.group_id
                     WHERE a.release = ?1 AND a.action = 'regress')
                 ORDER BY g.count DESC, g.id LIMIT 100"
            ))?;
            let top_groups = groups(&format!(
                "SELECT {GROUP_COLUMNS} FROM group_releases gr JOIN groups g ON g.id = gr.group_id
                 WHERE gr.release = ?1 AND g.alias_of IS NULL
                 ORDER BY gr.crashes DESC, g.id LIMIT 10"
            ))?;
            let mut stmt = conn.prepare_cached(
                "SELECT m.debug_id, m.name, r.crashes, m.last_seen FROM missing_releases r
                 JOIN missing_debug_files m ON m.debug_id = r.debug_id
                 WHERE r.release = ?1 ORDER BY r.crashes DESC, m.debug_id",
            )?;
            let missing_debug_files = stmt
                .query_map([name], |r| {
                    Ok(MissingDebugFile {
                        debug_id: r.get(0)?,
                        name: r.get(1)?,
                        crash_count: r.get::<_, i64>(2)?.max(0) as u64,
                        last_seen: ms_to_rfc3339(r.get(3)?),
                        releases: [name.to_owned()].into_iter().collect(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(Some(ReleaseDetail {
                release,
                new_groups,
                regressed_groups,
                top_groups,
                missing_debug_files,
            }))
        })
    }

    /// Creates a release unless it exists and sets the metadata given.
    pub fn update_release(&self, name: String, update: ReleaseUpdate) -> Result<(), StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| {
                ensure_release(conn, &name)?;
                conn.prepare_cached(
                    "UPDATE releases SET channel = coalesce(?2, channel),
                         rollout = coalesce(?3, rollout), released_at = coalesce(?4, released_at)
                     WHERE name = ?1",
                )?
                .execute(params![
                    name,
                    update.channel,
                    update.rollout,
                    update.released_at_ms
                ])?;
                Ok(())
            })
    }

    /// Adds session counts to releases (created when new): `(release, total, crashed)`.
    pub fn add_sessions(&self, counts: Vec<(String, u64, u64)>) -> Result<(), StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| {
                for (name, total, crashed) in &counts {
                    ensure_release(conn, name)?;
                    conn.prepare_cached(
                        "UPDATE releases SET sessions_total = sessions_total + ?2,
                             sessions_crashed = sessions_crashed + ?3 WHERE name = ?1",
                    )?
                    .execute(params![name, *total as i64, *crashed as i64])?;
                }
                Ok(())
            })
    }
}
